"""Folder -> run folder -> scores -> export, through the command line the way a server user runs it."""

import csv
import json
import shutil
from dataclasses import fields
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from crl_napari import cascade, cli, pipeline, scoring
from crl_napari.cascade import TrainConfig
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunError, RunFolder

TINY = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "2", "--batch-size", "4", "--lr", "0.05",
        "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("data") / "set", n=12, size=64, noise_ratio=0.5, seed=3)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", str(dataset), "--out", str(out), "--strategy", "crl", "--k", "1",
                     "--simulate-noise", "0.5", *TINY]) == 0
    return out


def test_train_writes_a_complete_run_folder(trained, dataset):
    run = RunFolder(trained)
    split = {r["id"]: r["split"] for r in csv.DictReader(open(dataset / "split.csv"))}
    cases = run.cases()
    assert sorted(c["id"] for c in cases) == sorted(i for i, s in split.items() if s == "train")
    assert sum(int(c["corrupted"]) for c in cases) == round(0.5 * len(cases))
    hist = run.history()
    assert [int(h["epoch"]) for h in hist] == [0, 1] and [h["stage"] for h in hist] == ["1", "2"]
    scores = run.scores()
    assert [r["rank"] for r in scores] == list(range(1, len(cases) + 1))
    assert_review_queue(scores)
    one = scores[0]["id"]
    assert run.image(one).shape == (32, 32) and run.corrected(one).dtype == bool
    assert 0 <= run.prob(one).min() and run.prob(one).max() <= 1
    # the probability is kept in 16 bits (native-size corrections are resampled from it), the 8-bit map agrees
    p16, p8 = run.prob(one), iio.imread(run.path / "corrected" / f"{one}_prob.png").astype(np.float32) / 255
    assert (run.path / "corrected" / f"{one}_prob16.png").is_file() and np.abs(p16 - p8).max() <= 0.5 / 255 + 1e-4
    assert (run.prob(one) > 0.5).sum() == run.corrected(one).sum()
    # the suspicion is 1 - Dice(given, corrected), recomputable from the saved masks
    g, c = run.given(one), run.corrected(one)
    d = 2 * (g & c).sum() / max(g.sum() + c.sum(), 1) if (g.sum() + c.sum()) else 1.0
    assert scores[0]["suspicion"] == pytest.approx(1 - d, abs=1e-4)
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["train"]["strategy"] == "crl" and cfg["data"]["simulate_noise"] == 0.5 and "torch" in cfg["versions"]


def test_score_again_gives_the_same_scores(trained):
    before = (trained / "scores.csv").read_text()
    metrics = pipeline.score_run(trained)
    assert (trained / "scores.csv").read_text() == before
    assert 0 <= metrics["flag_auroc"] <= 1 and "corrected_dice_corrupted" in metrics


def test_evaluate_and_info(trained, capsys):
    assert cli.main(["evaluate", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "Dice on test" in out
    ev = json.loads((trained / "evaluation.json").read_text())
    assert ev["split"] == "test" and ev["n"] == 3 and 0 <= ev["dice_mean"] <= 1
    assert cli.main(["info", str(trained)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["epochs_done"] == 2 and info["scored"]


def test_export_through_the_cli(trained, tmp_path):
    dest = tmp_path / "cleaned"
    assert cli.main(["export", str(trained), "--to", str(dest), "--unreviewed", "accept_above",
                     "--threshold", "0.0"]) == 0
    rows = list(csv.DictReader(open(dest / "manifest.csv")))
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(r["mask_source"] == "corrected_by_policy" for r in train_rows)
    some = train_rows[0]["id"]
    exported = iio.imread(dest / "masks" / f"{some}.png")
    assert exported.shape == (64, 64)  # back at the original size
    up = np.kron(RunFolder(trained).corrected(some), np.ones((2, 2), dtype=bool))
    assert np.array_equal(exported > 127, up)


def test_export_workers_from_the_cli_write_the_same_files_and_a_bad_count_is_one_line(trained, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["export", str(trained), "--to", str(one), "--workers", "1"]) == 0
    assert cli.main(["export", str(trained), "--to", str(two), "--workers", "2"]) == 0
    assert "exported" in capsys.readouterr().out
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert files and files == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    assert cli.main(["export", str(trained), "--to", str(tmp_path / "three"), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: workers must be" in err[0] and "Traceback" not in "".join(err)
    assert not (tmp_path / "three").exists()


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err and err.count("\n") <= 3


def test_train_refuses_a_non_empty_out(dataset, trained, capsys):
    assert cli.main(["train", str(dataset), "--out", str(trained), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err


def test_stop_then_resume_finishes_the_run(dataset, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(strategy="ss", epochs=3, batch_size=4, width=4, depth=2, lr=0.05)
    saved = []
    for ev in pipeline.train_run(dataset, out, cfg, size=32, should_stop=lambda: len(saved) >= 2):
        if isinstance(ev, cascade.CheckpointSaved):
            saved.append(ev.epoch)
    assert saved == [0, 1] and not (out / "scores.csv").exists()
    assert len(RunFolder(out).history()) == 2
    with pytest.raises(RunError, match="nothing to resume"):
        list(pipeline.train_run(dataset, tmp_path / "fresh", cfg, size=32, resume=True))
    assert cli.main(["train", str(dataset), "--out", str(out), "--resume", "--quiet"]) == 0
    run = RunFolder(out)
    assert [int(h["epoch"]) for h in run.history()] == [0, 1, 2]
    assert run.has_scores


SHENZHEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "shenzhen"


def assert_review_queue(scores: list[dict]) -> None:
    """scores.csv (rows in rank order) is the queue scoring.rank makes for the recommended policy: where more than
    40 % of the masks look wrong (scoring.many_look_wrong), the images closest to its threshold first; else the
    images under it first, most suspicious first, then those above it, the most uncertain first. (Nets trained
    this briefly score on one side of the threshold; tests/test_cleaning_curve.py checks both sides.)"""
    s = np.array([float(r["suspicion"]) for r in scores])
    u = np.array([float(r["uncertainty"]) for r in scores])
    t = scoring.recommended_threshold(s)
    if scoring.many_look_wrong(scoring.noise_share(s)):
        assert (np.diff(np.abs(np.log(np.maximum(s, 1e-9) / t))) >= -1e-4).all()  # scores.csv rounds to 1e-6
        return
    below = s < t
    n = int(below.sum())
    assert below[:n].all() and not below[n:].any()
    assert (np.diff(s[:n]) <= 1e-6).all() and (np.diff(u[n:]) <= 1e-6).all()


@pytest.mark.data
def test_cli_on_the_real_shenzhen_set(tmp_path, capsys):
    """train / evaluate / score / export on ../shared/data/shenzhen (read in place, never copied)."""
    if not SHENZHEN.is_dir():
        pytest.skip(f"the Shenzhen data set is not at {SHENZHEN.resolve()} (see ../shared/data/README.md)")
    run = tmp_path / "run"
    assert cli.main(["train", str(SHENZHEN), "--out", str(run), "--strategy", "crl", "--k", "0", "--simulate-noise",
                     "0.5", "--size", "32", "--width", "4", "--depth", "2", "--epochs", "1", "--batch-size", "32",
                     "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out.split("run folder:")[0])
    assert metrics["n_images"] == 385 and metrics["n_corrupted"] == 192
    suspicion = np.array([r.suspicion for r in RunFolder(run).score_rows()])  # the advice is the table's
    assert metrics["noise_share"] == pytest.approx(scoring.noise_share(suspicion))
    assert metrics["suggested_keep_ratio"] == scoring.suggested_keep_ratio(suspicion, 0.5)
    assert cli.main(["evaluate", str(run)]) == 0
    assert "Dice on test (165 images" in capsys.readouterr().out
    assert cli.main(["score", str(run)]) == 0
    assert_review_queue(RunFolder(run).scores())  # the queue on real scores
    dest = tmp_path / "cleaned"
    capsys.readouterr()
    assert cli.main(["export", str(run), "--to", str(dest)]) == 0
    assert capsys.readouterr().err.rstrip().endswith(  # one epoch at 32 px: nothing is replaced by default
        "unreviewed images: keep (the default where the nets cannot yet tell right masks from wrong ones); "
        "--unreviewed accept_above for the other")
    rows = list(csv.DictReader(open(dest / "manifest.csv")))
    assert len(rows) == 385 + 165 and {r["mask_source"] for r in rows} == {"original"}
    assert sum(r["split"] == "test" for r in rows) == 165 and not any(r["status"] for r in rows if r["split"] == "test")
    # unreviewed masks are kept: byte-for-byte the same pixels as the originals
    some = rows[0]["id"]
    assert np.array_equal(iio.imread(dest / "masks" / f"{some}.png") > 127,
                          iio.imread(SHENZHEN / "masks" / f"{some}.png") > 127)


def test_case_cache_reads_the_run_ahead_within_its_budget(trained, tmp_path):
    """The Review widget's read-ahead: the same arrays as the run folder, worst first, never past its memory
    budget, and a case it could not read gives the run's own message naming the file."""
    from crl_napari.case_cache import CaseCache

    run = RunFolder(trained)
    ids = [r["id"] for r in run.scores()]
    cache = CaseCache(run, ids)
    assert cache.wait(30)
    assert cache.cached == len(ids)
    for id_ in ids:
        case = cache.get(id_)
        np.testing.assert_array_equal(case.image, run.image(id_))
        np.testing.assert_array_equal(case.given, run.given(id_))
        np.testing.assert_array_equal(case.corrected, run.corrected(id_))
        assert case.given.dtype == case.corrected.dtype == np.uint8
    cache.close()
    assert cache.cached == 0

    one = sum(a.nbytes for a in CaseCache(run, [], read_ahead=False).get(ids[0]))
    small = CaseCache(run, ids, max_bytes=2 * one)
    assert small.wait(30) and small.cached == 2  # the two worst, then it stops
    small.get(ids[-1])  # beyond the budget: read, shown, not kept
    assert small.cached == 2

    copy = Path(shutil.copytree(trained, tmp_path / "run"))
    (copy / "corrected" / f"{ids[0]}.png").unlink()
    broken = CaseCache(RunFolder(copy), ids)
    assert broken.wait(30) and broken.cached == len(ids) - 1  # the read-ahead skips the bad case, quietly
    with pytest.raises(RunError, match=rf"corrected/{ids[0]}\.png: missing"):
        broken.get(ids[0])
    np.testing.assert_array_equal(broken.get(ids[1]).image, run.image(ids[1]))  # the others still show


def test_train_help_explains_every_setting_and_refuses_an_unknown_joint_mode(capsys):
    assert set(cascade.SETTING_HELP) == {f.name for f in fields(TrainConfig)}  # one text per setting, no stale ones
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--joint {unselected,all} stage 2: joint loss on the unselected samples only" in out
    assert "--k K crl: first epoch of stage 2; default epochs // 2" in out
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "data", "--out", "run", "--joint", "some"])
    assert exc.value.code == 2 and "invalid choice: 'some'" in capsys.readouterr().err
