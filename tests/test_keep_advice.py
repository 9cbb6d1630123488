"""The keep_ratio advice after a run: the scores' estimate of how many given masks are wrong (the share at or
above the recommended threshold) and the keep_ratio to train again with when that is most of them."""

import json

import numpy as np
import pytest
from _scores import raise_suspicions

from crl_napari import cli, runs
from crl_napari.cli.run_commands import say_keep_advice
from crl_napari.phantoms import write_sample_set
from crl_napari.scoring import noise_share, recommended_threshold, suggested_keep_ratio


def _bimodal(wrong: int, right: int, seed: int = 0) -> np.ndarray:
    """Suspicions as a run scores them: a correction's own error (a few per cent) for masks the nets agree with,
    tens of per cent for damaged ones."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.concatenate([rng.uniform(0.2, 0.5, wrong), rng.uniform(0.01, 0.04, right)]))


def test_the_share_of_wrong_masks_is_read_from_the_scores():
    s = _bimodal(70, 30)
    assert noise_share(s) == pytest.approx(0.70)
    assert noise_share(s) == pytest.approx(float((s >= recommended_threshold(s)).mean()))
    assert noise_share(_bimodal(25, 75)) == pytest.approx(0.25)


def test_keep_ratio_is_suggested_only_when_most_masks_look_wrong():
    assert suggested_keep_ratio(_bimodal(70, 30), keep_ratio=0.5) == 0.3
    assert suggested_keep_ratio(_bimodal(50, 50), keep_ratio=0.5) is None  # the paper's half already
    assert suggested_keep_ratio(_bimodal(25, 75), keep_ratio=0.5) is None  # raising it is not suggested
    assert suggested_keep_ratio(_bimodal(70, 30), keep_ratio=0.3) is None  # the run already keeps that share
    assert suggested_keep_ratio(_bimodal(97, 3), keep_ratio=0.5) == 0.1  # never below the floor


def test_no_scores_no_advice():
    assert np.isnan(noise_share(np.array([np.nan, np.nan])))
    assert suggested_keep_ratio(np.array([])) is None
    assert suggested_keep_ratio(np.array([0.01, np.nan, 0.01])) is None  # one distinct score, under the floor


def test_info_and_the_command_line_give_the_advice_of_a_run_where_most_masks_look_wrong(tmp_path, capsys):
    """A real run's scores.csv with 7 of its 9 suspicions raised (as nets that find most masks wrong score them):
    `info` lists the share and the suggestion, and the advice line names the --keep-ratio to train with."""
    data = write_sample_set(tmp_path / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", "0.5", "--size", "32", "--width", "4",
                     "--depth", "2", "--epochs", "1", "--batch-size", "4", "--quiet"]) == 0
    assert len(runs.read_score_rows(run)) == 9
    raise_suspicions(run, 7)
    capsys.readouterr()
    assert cli.main(["info", str(run)]) == 0
    queue = json.loads(capsys.readouterr().out)["queue"]
    assert queue["noise_share"] == pytest.approx(7 / 9, abs=1e-4) and queue["suggested_keep_ratio"] == 0.22
    say_keep_advice(run)
    err = capsys.readouterr().err
    assert err.startswith("advice: 78% of the given masks look wrong") and err.rstrip().endswith("--keep-ratio 0.22)")
