"""The run-folder gateway: it alone spells the run's file names, checks what it reads line by line, and
gives every face one resume path and one settings diff."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_review import make_run

from crl_napari import ids, review
from crl_napari.data import DataError, load_dataset
from crl_napari.runs import (
    CASES,
    CONFIG,
    SCORES,
    RunError,
    RunFolder,
    data_diff,
    inside,
    open_for_resume,
    settings_diff,
)
from crl_napari.settings import TrainConfig, TrainingError

ROOT = Path(__file__).resolve().parents[1]



def _run_file_names() -> list[str]:
    """Every file name runs/names.py spells (a name with a dot: folders are plain words that other text uses
    too); of a pattern, its literal start."""
    from crl_napari.runs import names

    spelled = [getattr(names, n) for n in names.__all__ if isinstance(getattr(names, n), str)]
    spelled += [v for n in names.__all__ if isinstance(getattr(names, n), tuple) for v in getattr(names, n)]
    return sorted({v.split("{")[0].split("*")[0] for v in spelled if "." in v})


RUN_FILES = _run_file_names()


def _strings(tree: ast.AST):
    """String constants of a module that are code, not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_only_the_gateway_spells_the_run_file_names():
    """Every module of crl_napari outside runs/ (the engine and the napari layer alike) asks crl_napari.runs."""
    assert {"cases.csv", "checkpoint.pt", "summary.png", ".undo", "_prob16.png", "index.json",
            ".score-part-"} <= set(RUN_FILES), RUN_FILES
    offences = []
    for py in sorted((ROOT / "crl_napari").rglob("*.py")):
        rel = py.relative_to(ROOT / "crl_napari")
        if rel.parts[0] == "runs":
            continue
        for node in _strings(ast.parse(py.read_text(), str(py))):
            offences += [f"{rel}:{node.lineno}: {name}" for name in RUN_FILES if name in node.value]
    assert offences == []


def test_one_id_rule_everywhere(tmp_path):
    for good in ("CHNCXR_0001_0", "a.b-c_d", "0"):
        assert ids.check_id(good, "x") == good
    for bad in ("../x", "a/b", ".hidden", "a..b", "", "a b", "x" * 201, None, 5):
        with pytest.raises(ids.UnsafeIdError, match="cases.csv: line 3: unsafe image id"):
            ids.check_id(bad, "cases.csv: line 3")
    with pytest.raises(review.ReviewError, match="unsafe image id"):  # the review's name for it still works
        review.check_id("../x")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a..b", "ok"):
        from crl_napari.atomic import atomic_write_png

        atomic_write_png(tmp_path / "images" / f"{name}.png", np.zeros((8, 8), np.uint8))
        atomic_write_png(tmp_path / "masks" / f"{name}.png", np.eye(8, dtype=bool))
    with pytest.raises(DataError, match="unsafe id 'a..b'"):
        load_dataset(tmp_path, size=8)


def test_case_lines_are_checked_and_named(tmp_path):
    rf = make_run(tmp_path)
    path = rf.run / CASES
    text = path.read_text()
    for old, new, why in [(",64,64,", ",abc,64,", "line 2: orig_h is not an integer"),
                          (",64,64,", ",50000,50000,", "claims 50000x50000 pixels"),
                          (",train,", ",sideways,", "split 'sideways'")]:
        lines = text.splitlines()
        lines[1] = lines[1].replace(old, new, 1)
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(RunError, match=why) as err:
            RunFolder(rf.run).case_rows()
        assert str(path) in str(err.value)
    path.write_text(text)
    assert [r.id for r in RunFolder(rf.run).case_rows(held_out=True)][:2] == ["case00", "case01"]


def test_training_never_creates_a_run_it_could_not_open_again(tmp_path):
    cfg = TrainConfig(epochs=1)
    cfg.width = 512  # TrainConfig refuses it when built; set afterwards, the gateway must still refuse it
    with pytest.raises(RunError, match=r"config\.json: invalid run configuration \(width must be in"):
        RunFolder.create(tmp_path / "run", cfg, {"root": None, "size": 32, "simulate_noise": 0.0, "noise_seed": 0})
    assert not (tmp_path / "run" / CONFIG).exists()


def test_one_settings_diff_and_one_resume_path(tmp_path):
    rf = make_run(tmp_path)
    saved = RunFolder(rf.run).train_config
    asked = replace(saved, lr=0.1)
    assert settings_diff(saved, asked) == {"lr": (saved.lr, 0.1)} == settings_diff(saved, {"lr": 0.1})
    assert settings_diff(saved, {"lr": saved.lr}) == {}
    assert data_diff({"size": 32}, {"size": 64, "noise_seed": None}) == {"size": (32, 64)}
    plan = open_for_resume(rf.run)  # no checkpoint: training starts over in the same folder
    assert plan.start_epoch == 0 and plan.history == [] and plan.config == saved
    with pytest.raises(TrainingError, match=r"resumed run keeps its own \(saved, asked\): \{'lr'"):
        open_for_resume(rf.run, {"lr": 0.1})
    with pytest.raises(RunError, match="other data settings"):
        open_for_resume(rf.run, None, {"size": 64})
    with pytest.raises(RunError, match="nothing to resume"):
        open_for_resume(tmp_path / "nowhere")


def test_what_a_face_asks_of_a_bare_path(tmp_path):
    rf = make_run(tmp_path)
    assert RunFolder.is_run(rf.run) and RunFolder.is_scored(rf.run) and not RunFolder.can_resume(rf.run)
    assert not RunFolder.is_run(rf.src) and not RunFolder.is_scored(tmp_path)
    (rf.run / "link").symlink_to(rf.src)
    with pytest.raises(RunError, match="is a symbolic link"):
        inside(rf.run, "link", "x.png")
    assert inside(rf.run, "corrected", "x.png") == rf.run / "corrected" / "x.png"
    for parts in (("..", "x.png"), ("corrected/../..", "x.png"), ("corrected", "..", "..", "x.png")):
        with pytest.raises(RunError, match="resolves outside the run folder"):  # no fast path for these
            inside(rf.run, *parts)
    assert inside(rf.run, "corrected", "..", "x.png") == rf.run / "corrected" / ".." / "x.png"  # still inside
    cfg = json.loads((rf.run / CONFIG).read_text())
    cfg["train"]["batch_size"] = True
    (rf.run / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="batch_size must be an integer"):
        RunFolder(rf.run)


def test_scores_count_the_extra_pieces_of_each_correction(tmp_path):
    """Issue 11: scoring records, per image, how many pieces the cleaned correction has beyond two lungs (the
    review marks those); a scores.csv written before the column existed reads as 0; a bad count is refused."""
    from crl_napari.scoring import score_probs

    rf = make_run(tmp_path)
    run = RunFolder(rf.run)
    ids_ = [r.id for r in run.case_rows()]
    n, size = len(ids_), run.image(ids_[0]).shape[0]
    prob = np.full((3, n, size, size), 0.02, np.float32)
    prob[:, :, 8:24, 4:14] = prob[:, :, 8:24, 18:28] = 0.98  # two lungs
    prob[:, 0, 1:5, 1:5] = 0.98  # a third piece, 16 px: above 1 % of the mask, so clean-up keeps it
    given = (prob[0] > 0.5).astype(np.uint8)
    run.write_scores(ids_, score_probs(prob, given))
    rows = {r.id: r.extra_pieces for r in run.score_rows()}
    assert rows[ids_[0]] == 1 and all(rows[i] == 0 for i in ids_[1:])
    text = (rf.run / SCORES).read_text().splitlines()
    assert text[0].endswith(",extra_pieces")
    (rf.run / SCORES).write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")  # an older file
    assert [r.extra_pieces for r in RunFolder(rf.run).score_rows()] == [0] * n
    lines = (rf.run / SCORES).read_text().splitlines()
    (rf.run / SCORES).write_text(lines[0] + ",extra_pieces\n" + "\n".join(x + ",-3" for x in lines[1:]) + "\n")
    with pytest.raises(RunError, match=r"scores\.csv: line 2.*extra_pieces"):
        RunFolder(rf.run).score_rows()
