"""The command line says what it does: misspelt options are refused (never taken as another option),
evaluate names the masks it compares against and refuses the imperfect masks a run trained on, simulated
noise takes the footprint asked for, and the demo's report separates what it knows from what it assumes."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from crl_napari import cli, noise
from crl_napari.data import load_dataset
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import RunFolder

TINY = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "3", "--batch-size", "4", "--lr", "0.05",
        "--quiet"]


def _corrupted(data) -> set[str]:
    return {r["id"] for r in csv.DictReader(open(data / "noise.csv")) if r["corrupted"] == "1"}


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """A data folder with a train/test split, and a run on it trained with square-footprint simulated noise."""
    root = tmp_path_factory.mktemp("split")
    data = write_sample_set(root / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    assert cli.main(["train", str(data), "--out", str(root / "run"), "--strategy", "vanilla", "--simulate-noise",
                     "0.5", "--noise-footprint", "square", *TINY]) == 0
    return data, root / "run"


@pytest.fixture(scope="module")
def nosplit_run(tmp_path_factory):
    """A data folder without split.csv (so the run trains on every case) whose masks/ carry noise."""
    root = tmp_path_factory.mktemp("nosplit")
    data = write_sample_set(root / "set", n=12, size=32, noise_ratio=1.0, seed=4)
    (data / "split.csv").unlink()
    # a net that learns something (width 8, 6 epochs): its Dice tells the two kinds of masks apart
    assert cli.main(["train", str(data), "--out", str(root / "run"), "--strategy", "vanilla", *TINY, "--width", "8",
                     "--epochs", "6"]) == 0
    return data, root / "run"


@pytest.mark.parametrize("argv", [
    ["train", "DATA", "--out", "OUT", "--epoch", "2"],
    ["train", "DATA", "--out", "OUT", "--simulate", "0.5"],
    ["evaluate", "OUT", "--clean", "DATA"],
    ["export", "OUT", "--to", "OUT/x", "--thresh", "0.1"],
    ["demo", "--out", "OUT", "--epoch", "1"],
])
def test_a_misspelt_option_is_refused_not_taken_for_another(argv, tmp_path, capsys):
    argv = [a.replace("DATA", str(tmp_path / "data")).replace("OUT", str(tmp_path / "out")) for a in argv]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and argv[-2] in err
    assert not (tmp_path / "out").exists()
    # the full spelling is what a user meant: it parses
    assert cli.build_parser().parse_args(["train", "d", "--out", "o", "--epochs", "2"]).epochs == 2


def test_evaluate_refuses_the_masks_a_run_trained_on(nosplit_run, capsys):
    data, run = nosplit_run
    assert cli.main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{data}: 12 of the 12 cases (the data has no 'test' split in split.csv) were trained on" in err
    assert "--clean-masks DIR" in err and "--masks-are-clean" in err
    assert not (run / "evaluation.json").exists()


def test_evaluate_against_clean_masks_or_on_the_users_word(nosplit_run, capsys):
    data, run = nosplit_run
    assert cli.main(["evaluate", str(run), "--clean-masks", str(data / "clean_masks")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Dice on all (12 images) against the clean masks in {data / 'clean_masks'}: ")
    clean = json.loads((run / "evaluation.json").read_text())
    assert clean["masks"] == f"the clean masks in {data / 'clean_masks'}" and clean["n"] == 12

    assert cli.main(["evaluate", str(run), "--masks-are-clean"]) == 0
    out = capsys.readouterr().out
    assert f"against the masks in {data / 'masks'} (--masks-are-clean): " in out
    given = json.loads((run / "evaluation.json").read_text())
    # the same prediction scored against other masks: the per-image Dice moves exactly where the masks differ
    differ = {i for i in given["per_image"] if given["per_image"][i] != clean["per_image"][i]}
    assert differ == _corrupted(data) and len(differ) == 9


def test_evaluate_names_a_missing_clean_mask(nosplit_run, tmp_path, capsys):
    data, run = nosplit_run
    partial = shutil.copytree(data / "clean_masks", tmp_path / "clean")
    (partial / "phantom_004.png").unlink()
    assert cli.main(["evaluate", str(run), "--clean-masks", str(partial)]) == 2
    err = capsys.readouterr().err
    assert f"{partial}: no clean mask for 1 of the 12 cases evaluated (e.g. phantom_004)" in err
    assert err.count("\n") == 1


def test_evaluate_on_a_held_out_split_says_so(split_run, capsys):
    data, run = split_run
    assert cli.main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Dice on test (3 images) against the masks in {data / 'masks'} "
                          "(held out from training, taken as clean): ")
    assert cli.main(["evaluate", str(run), "--split", "train"]) == 2
    assert "9 of the 9 cases of the train split were trained on" in capsys.readouterr().err


def test_simulated_noise_uses_the_footprint_asked_for(split_run, capsys):
    data, run = split_run
    folder = RunFolder(run)
    assert folder.config["data"]["noise_footprint"] == "square"
    train = load_dataset(data, size=32).subset("train")
    ids = [c["id"] for c in folder.cases()]
    assert ids == train.ids
    given = np.stack([folder.given(i) for i in ids])
    square, records = noise.simulate(train.masks(), ids, 0.5, seed=0, reference_size=256, footprint="square")
    cross, _ = noise.simulate(train.masks(), ids, 0.5, seed=0, reference_size=256)
    np.testing.assert_array_equal(given, square.astype(bool))
    assert not np.array_equal(given, cross.astype(bool))
    assert [int(c["corrupted"]) for c in folder.cases()] == [int(r.corrupted) for r in records]
    with pytest.raises(SystemExit):
        cli.main(["train", str(data), "--out", str(run.parent / "other"), "--simulate-noise", "0.5",
                  "--noise-footprint", "disk"])
    assert "invalid choice: 'disk'" in capsys.readouterr().err


def test_demo_reports_what_it_measured_and_what_it_assumed(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--epochs", "1", "--size", "32", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "synthetic phantoms, not radiographs" in captured.err and "(the paper: 256 px" in captured.err
    # the product's default path (second_pass 4): one epoch of training cannot tell right masks from wrong ones yet
    assert "no second pass: " in captured.err and not (out / "run" / "rounds").exists()
    text = captured.out
    data = Path(RunFolder(out / "run").config["data"]["root"])
    against = json.loads((out / "run" / "evaluation.json").read_text())["masks"]
    assert against.startswith("the clean masks in ") and Path(against.split(" in ", 1)[1]).resolve() == \
        (data / "clean_masks").resolve()
    assert f"held-out phantoms, against {against}" in text
    assert "at the training size; at the original size, as the export writes them: " in text
    from crl_napari.scoring import recommended_threshold  # the demo's default, as the Review widget's

    t = recommended_threshold(np.array([r.suspicion for r in RunFolder(out / "run").score_rows()]))
    assert f"with no review, corrections accepted where suspicion >= {t:.3f}" in text
    rows = list(csv.DictReader(open(out / "cleaned" / "manifest.csv")))
    accepted = [r["id"] for r in rows if r["mask_source"] == "corrected_by_policy"]
    bad = len(set(accepted) & _corrupted(data))
    assert f"of the {len(accepted)} accepted, {bad} replaced a corrupted mask and {len(accepted) - bad} a correct" \
        in text


def test_a_size_the_unet_cannot_take_is_refused_before_any_folder_is_made(tmp_path, capsys):
    """--size 100 with depth 4 used to fail with a traceback after the run folder was created."""
    data = tmp_path / "data"
    write_sample_set(data, n=4, size=32)
    out = tmp_path / "run"
    code = cli.main(["train", str(data), "--out", str(out), "--size", "100", "--epochs", "1", "--width", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "image size 100 is not a multiple of 2**depth = 16" in err and "Traceback" not in err
    assert not out.exists()


def test_the_cli_says_how_long_the_run_takes(tmp_path, capsys):
    data = tmp_path / "data"
    write_sample_set(data, n=8, size=32)
    code = cli.main(["train", str(data), "--out", str(tmp_path / "run"), "--size", "32", "--epochs", "2",
                     "--width", "4", "--depth", "2", "--batch-size", "2", "--strategy", "vanilla", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert re.search(r"measured \d+\.\d+ s/step · about \d+ s left: the whole run takes about \d+ s", err), err
