"""TrainConfig.keep_auto: stage 1's keep ratio estimated while training from the share of masks that look wrong
(crl_napari.keep_estimate), by the rule the advice uses after training; a resumed run goes on with the estimate."""

import csv
import json

import numpy as np
import pytest
import torch
from _scores import raise_suspicions

from crl_napari import cascade, cli, scoring
from crl_napari.cascade import TrainConfig
from crl_napari.cli.run_commands import say_keep_advice
from crl_napari.keep_estimate import KeepEstimate, batch_suspicion
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import HISTORY_FIELDS, RunFolder, epoch_line


def squares(n: int = 32, size: int = 16, wrong_every: int = 4, seed: int = 0):
    """Bright squares on noise; every given mask but each ``wrong_every``-th is a small square in the middle
    (wrong), the rest are the squares (right)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        a = int(rng.integers(2, 6))
        truth[i, a : size - a, a : size - a] = 1
    images = (rng.normal(0, 0.2, (n, 1, size, size)) + 2 * truth[:, None]).astype(np.float32)
    given = truth.copy()
    for i in range(n):
        if i % wrong_every:
            given[i] = 0
            given[i, 6:10, 6:10] = 1
    return images, given, truth


TINY = dict(epochs=6, batch_size=8, width=4, depth=2, lr=0.05, device="cpu", ramp=0.25, augment=False)


def test_the_batch_suspicion_is_the_one_scoring_gives_the_finished_nets():
    rng = np.random.default_rng(1)
    fg = rng.uniform(0, 1, (3, 5, 12, 12)).astype(np.float32)
    given = (rng.uniform(0, 1, (5, 12, 12)) > 0.5).astype(np.uint8)
    probs = [torch.as_tensor(np.stack([1 - f, f], axis=1)) for f in fg]
    got = batch_suspicion(probs, torch.as_tensor(given).long(), 0.5).numpy()
    np.testing.assert_allclose(got, scoring.score_probs(fg, given, 0.5).suspicion, atol=1e-6)


def test_the_estimate_follows_the_advice_rule_from_the_end_of_the_ramp_and_stage_2_keeps_it():
    cfg = TrainConfig(epochs=20, ramp=0.1)  # the ramp ends with epoch 2: the first estimate at the end of epoch 1
    est = KeepEstimate(cfg, 400)
    rng = np.random.default_rng(0)
    wrong = np.r_[rng.uniform(0.2, 0.5, 300), rng.uniform(0.01, 0.03, 100)]  # three in four look wrong
    for epoch, stage, want in ((0, 1, None), (1, 1, scoring.keep_from_share(scoring.noise_share(wrong), 0.5))):
        est.record(torch.arange(400), torch.as_tensor(wrong))
        assert est.epoch_end(epoch, stage) == want
    assert 0.2 <= est.current < 0.3 and est.config().keep_ratio == est.current and cfg.keep_ratio == 0.5
    est.record(torch.arange(400), torch.full((400,), 0.02))
    assert est.epoch_end(10, 2) == est.current  # stage 2: no new estimate
    few = np.r_[rng.uniform(0.2, 0.5, 120), rng.uniform(0.01, 0.03, 280)]  # three in ten: the paper's ratio again
    est.record(torch.arange(400), torch.as_tensor(few))
    assert est.epoch_end(2, 1) is None and est.config() is cfg


def train(cfg, images, given, **kw):
    return list(cascade.train(images, given, cfg, **kw))


def test_most_masks_wrong_lowers_the_keep_ratio_during_training_and_stage_1_keeps_less(tmp_path):
    images, given, _ = squares()
    events = train(TrainConfig(strategy="crl", keep_auto=1, **TINY), images, given, run_dir=tmp_path)
    ends = [e for e in events if isinstance(e, cascade.EpochEnd)]
    assert ends[0].keep is None  # the ramp's first epoch: no estimate yet
    assert all(e.keep is not None and e.keep < 0.45 for e in ends[1:])
    stage1 = [e for e in ends if e.stage == 1]
    assert stage1[-1].selected == pytest.approx(stage1[-1 - 1].keep, abs=0.13)  # it kept about the estimate
    paper = [e for e in train(TrainConfig(strategy="crl", **TINY), images, given) if isinstance(e, cascade.EpochEnd)]
    assert all(e.keep is None for e in paper) and paper[2].selected == pytest.approx(0.5)
    assert stage1[-1].selected < paper[2].selected - 0.1
    # history.csv's line of each epoch says the keep ratio its end estimated (and a resume reads it back)
    assert "keep" in HISTORY_FIELDS and [epoch_line(e).get("keep") for e in ends] == [e.keep for e in ends]
    assert "keep" not in epoch_line(paper[0])


def test_a_stopped_run_resumes_with_the_estimate_it_had_reached(tmp_path):
    images, given, _ = squares()
    cfg = TrainConfig(strategy="crl", keep_auto=1, **TINY)
    full = train(cfg, images, given, run_dir=tmp_path / "a")
    seen = []  # stop after epoch 3's checkpoint: the estimate of epoch 3 decides epoch 4
    for ev in cascade.train(images, given, cfg, run_dir=tmp_path / "b", should_stop=lambda: len(seen) == 3):
        if isinstance(ev, cascade.CheckpointSaved):
            seen.append(ev.epoch)
    assert seen == [0, 1, 2]
    resumed = train(cfg, images, given, run_dir=tmp_path / "b", resume=True)
    assert resumed[0].start_epoch == 3
    keeps = [e.keep for e in full if isinstance(e, cascade.EpochEnd)]
    assert [e.keep for e in resumed if isinstance(e, cascade.EpochEnd)] == keeps[3:]
    for a, b in zip(full[-1].models, resumed[-1].models, strict=True):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.allclose(va.float(), vb.float(), atol=1e-5), ka


def _set_last_keep(run, value: str) -> None:
    """Rewrite the last line of the run's real history.csv as if its training had estimated ``value``."""
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[-1]["keep"] = value
    with open(run / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_advice_weighs_its_suggestion_against_the_keep_ratio_the_run_estimated(tmp_path, capsys):
    """A run trained with --keep-auto 1 whose scores say 7 of 9 masks look wrong: the advice to train again with
    keep ratio 0.22 comes only when the run's own estimate was not already about that."""
    data = write_sample_set(tmp_path / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", "0.5", "--size", "32", "--width", "4",
                     "--depth", "2", "--epochs", "4", "--batch-size", "4", "--keep-auto", "1", "--quiet"]) == 0
    assert RunFolder(run).train_config.keep_auto == 1
    assert open(run / "history.csv").readline().rstrip().split(",")[-1] == "keep"
    raise_suspicions(run, 7)
    for last, keep_ratio, advised in (("0.25", 0.25, False), ("0.4", 0.4, True), ("", 0.5, True),
                                      ("0.9", 0.5, True), ("abc", 0.5, True)):
        _set_last_keep(run, last)
        assert RunFolder(run).keep_ratio == keep_ratio
        capsys.readouterr()
        assert cli.main(["info", str(run)]) == 0
        queue = json.loads(capsys.readouterr().out)["queue"]
        assert queue["suggested_keep_ratio"] == (0.22 if advised else None), last
        assert queue["trained_keep_ratio"] == keep_ratio
        say_keep_advice(run)
        assert capsys.readouterr().err.startswith("advice: 78% of the given masks look wrong") == advised, last


def test_a_checkpoint_whose_estimate_is_not_a_keep_ratio_is_refused_naming_it(tmp_path):
    images, given, _ = squares()
    cfg = TrainConfig(strategy="crl", keep_auto=1, **TINY)
    seen = []
    for ev in cascade.train(images, given, cfg, run_dir=tmp_path, should_stop=lambda: len(seen) == 2):
        if isinstance(ev, cascade.CheckpointSaved):
            seen.append(ev.epoch)
    path = tmp_path / cascade.CHECKPOINT
    ckpt = torch.load(path, weights_only=False)
    for bad in (0.9, 0.0, float("nan"), True):
        ckpt["history_line"]["keep"] = bad
        torch.save(ckpt, path)
        with pytest.raises(cascade.TrainingError, match="estimated keep ratio") as err:
            train(cfg, images, given, run_dir=tmp_path, resume=True)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
