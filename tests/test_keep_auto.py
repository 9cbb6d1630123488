"""TrainConfig.keep_auto: stage 1's keep ratio estimated while training from the share of masks that look wrong
(crl_napari.keep_estimate), by the rule the advice uses after training; a resumed run goes on with the estimate."""

import csv
import json

import numpy as np
import pytest
import torch
from _scores import raise_suspicions

from crl_napari import cascade, cli, noise, scoring
from crl_napari.cascade import TrainConfig
from crl_napari.cli.run_commands import say_keep_advice
from crl_napari.keep_estimate import KeepEstimate, batch_suspicion, nets_can_tell
from crl_napari.phantoms import write_sample_set
from crl_napari.runs import HISTORY_FIELDS, RunFolder, epoch_line


def noisy_disks(n: int = 48, size: int = 32, ratio: float = 0.75, seed: int = 0):
    """Bright disks on noise; ``ratio`` of the given masks eroded or dilated as the benchmark's noise does
    (noise.simulate): the nets soon agree with the right ones."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.stack([(yy - rng.uniform(0.35, 0.65) * size) ** 2 + (xx - rng.uniform(0.35, 0.65) * size) ** 2
                      < (rng.uniform(0.18, 0.28) * size) ** 2 for _ in range(n)]).astype(np.uint8)
    images = truth + rng.normal(0, 0.3, truth.shape)
    images = ((images - images.mean((1, 2), keepdims=True)) / images.std((1, 2), keepdims=True))[:, None]
    given, _ = noise.simulate(truth, [str(i) for i in range(n)], ratio, seed=seed)
    return images.astype(np.float32), given, truth


def squares(n: int = 32, size: int = 16, seed: int = 0):
    """Bright squares on noise; three in four given masks are one small square in the middle: nets this small
    learn nothing they could tell right from wrong with in a few epochs."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        a = int(rng.integers(2, 6))
        truth[i, a : size - a, a : size - a] = 1
    images = (rng.normal(0, 0.2, (n, 1, size, size)) + 2 * truth[:, None]).astype(np.float32)
    given = truth.copy()
    for i in range(n):
        if i % 4:
            given[i] = 0
            given[i, 6:10, 6:10] = 1
    return images, given, truth


# ramp 0.3 of 6 epochs: the selection drops its full share from epoch 1 on, whose end estimates first
TINY = dict(epochs=6, batch_size=8, width=8, depth=2, lr=0.05, device="cpu", ramp=0.3, augment=False)


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


@pytest.mark.parametrize(("ramp", "epochs"), [(0.1, 20), (0.1, 100), (0.102, 20), (0.1, 30), (0.0, 20), (1.0, 3)])
def test_the_estimate_starts_at_the_first_epoch_whose_selection_drops_its_full_share(ramp, epochs):
    """One reading of the ramp: at a fractional ramp * epochs (2.04) rounding would start the estimate an epoch
    before the selection reached its full strength."""
    from crl_napari.strategies import drop_fraction

    cfg = TrainConfig(epochs=epochs, ramp=ramp)
    first = KeepEstimate(cfg, 10).first
    assert drop_fraction(cfg, first) == pytest.approx(1 - cfg.keep_ratio)
    assert first == 0 or drop_fraction(cfg, first - 1) < 1 - cfg.keep_ratio - 1e-9


def train(cfg, images, given, **kw):
    return list(cascade.train(images, given, cfg, **kw))


def test_most_masks_wrong_lowers_the_keep_ratio_during_training_and_stage_1_keeps_less(tmp_path):
    images, given, _ = noisy_disks()
    events = train(TrainConfig(strategy="crl", keep_auto=1, **TINY), images, given, run_dir=tmp_path)
    ends = [e for e in events if isinstance(e, cascade.EpochEnd)]
    assert ends[0].keep is None  # the ramp's first epoch: no estimate yet
    assert ends[2].keep is not None and ends[2].keep < 0.45  # three in four masks wrong: the paper's half lowered
    assert all(e.keep == ends[2].keep for e in ends[3:])  # stage 2 (from epoch 3) keeps the last estimate
    stage1 = [e for e in ends if e.stage == 1]
    assert stage1[-1].selected == pytest.approx(stage1[-1 - 1].keep, abs=0.13)  # it kept about the estimate
    paper = [e for e in train(TrainConfig(strategy="crl", keep_auto=0, **TINY), images, given)
             if isinstance(e, cascade.EpochEnd)]
    assert all(e.keep is None for e in paper) and paper[2].selected == pytest.approx(0.5)
    assert stage1[-1].selected < paper[2].selected - 0.1
    # history.csv's line of each epoch says the keep ratio its end estimated (and a resume reads it back)
    assert "keep" in HISTORY_FIELDS and [epoch_line(e).get("keep") for e in ends] == [e.keep for e in ends]
    assert epoch_line(paper[0])["keep"] is None


def test_nets_that_cannot_tell_yet_leave_the_papers_keep_ratio():
    """Tiny nets that have learnt nothing useful find nearly every mask wrong: that share must not take the keep
    ratio to its floor (keep_estimate.nets_can_tell)."""
    images, given, _ = squares()
    ends = [e for e in train(TrainConfig(strategy="crl", keep_auto=1, **{**TINY, "width": 4}), images, given)
            if isinstance(e, cascade.EpochEnd)]
    assert all(e.keep is None for e in ends) and ends[2].selected == pytest.approx(0.5)
    assert not nets_can_tell(np.r_[np.full(30, 0.9), np.full(10, 0.4)])  # the "right" ones are 40 % off
    assert nets_can_tell(np.r_[np.full(30, 0.3), np.full(10, 0.04)])
    assert not nets_can_tell(np.array([]))


def test_a_stopped_run_resumes_with_the_estimate_it_had_reached(tmp_path):
    images, given, _ = noisy_disks()
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
    assert keeps[2] is not None  # epoch 4 trains with the estimate epoch 3 made
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
    keep ratio 0.22 comes only when the run's own estimate was not already about that (the second pass is offered
    whatever the estimate)."""
    data = write_sample_set(tmp_path / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", "0.5", "--size", "32", "--width", "4",
                     "--depth", "2", "--epochs", "4", "--batch-size", "4", "--keep-auto", "1", "--second-pass", "0",
                     "--quiet"]) == 0  # one pass: a run the advice can still offer the second pass to
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
        err = capsys.readouterr().err  # the second pass is offered either way: the run has no round yet
        assert err.startswith("advice: 78% of the given masks look wrong") and "--second-pass 2" in err, last
        assert ("--keep-ratio 0.22" in err) == advised, last


def test_a_checkpoint_whose_estimate_is_not_a_keep_ratio_is_refused_naming_it(tmp_path):
    images, given, _ = noisy_disks()
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


@pytest.mark.parametrize("from_scratch", [False, True])
def test_a_review_round_goes_on_with_the_estimate_warm_and_estimates_afresh_from_scratch(tmp_path, from_scratch):
    """A warm crl round is all stage 2 (no stage 1 to estimate in): it selects with the keep ratio the nets were
    trained with, the run's estimate. A round from scratch starts from the setting and estimates again."""
    from crl_napari import rounds, runs
    from crl_napari.review import ReviewSession

    data = write_sample_set(tmp_path / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", "0.5", "--size", "32", "--width", "4",
                     "--depth", "2", "--epochs", "4", "--batch-size", "4", "--second-pass", "0", "--quiet"]) == 0
    assert RunFolder(run).train_config.keep_auto == 1  # the default
    _set_last_keep(run, "0.3")  # as a training that found most masks wrong leaves its history
    session = ReviewSession.open(run, reviewer="ana")
    session.accept(session.ids[0])
    list(rounds.next_round(run, from_scratch=from_scratch, warm_epochs=None if from_scratch else 2))
    assert [r.keep_ratio for r in runs.read_rounds(run)][0] == 0.3  # round 1 trained with the estimate
    second = RunFolder(run).train_config
    assert second.keep_auto == 1 and second.keep_ratio == (0.5 if from_scratch else 0.3)


def test_after_the_estimate_lowered_the_keep_ratio_the_advice_still_offers_the_second_pass(tmp_path, capsys):
    """A run whose training kept 0.25 of each batch and whose scores say 7 of 9 masks look wrong: no lower keep
    ratio to suggest, but the second pass on the corrections is still offered (CLI, `info`); once the run has a
    round, there is nothing to advise."""
    from crl_napari import rounds
    from crl_napari.review import ReviewSession

    data = write_sample_set(tmp_path / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", "0.5", "--size", "32", "--width", "4",
                     "--depth", "2", "--epochs", "4", "--batch-size", "4", "--second-pass", "0", "--quiet"]) == 0
    raise_suspicions(run, 7)
    _set_last_keep(run, "0.25")
    capsys.readouterr()
    say_keep_advice(run)
    err = capsys.readouterr().err.strip()
    assert err == (f"advice: 78% of the given masks look wrong (training learnt from 0.25 of each batch): a second "
                   f"pass on the corrections may correct them better (crl-napari next-round {run} --second-pass 2)")
    assert cli.main(["info", str(run)]) == 0
    queue = json.loads(capsys.readouterr().out)["queue"]
    assert queue["suggested_keep_ratio"] is None and queue["second_pass_offered"] is True
    assert queue["trained_keep_ratio"] == 0.25
    session = ReviewSession.open(run, reviewer="ana")
    session.accept(session.ids[0])
    list(rounds.next_round(run, warm_epochs=1))
    raise_suspicions(run, 7)
    capsys.readouterr()
    say_keep_advice(run)
    assert capsys.readouterr().err == ""  # a round was trained: no second pass now, and no lower ratio to suggest


def test_the_command_line_says_when_training_lowered_the_keep_ratio(tmp_path, capsys):
    """`crl-napari train`'s epoch lines name the keep ratio the estimate set, on the epochs it set one."""
    from crl_napari.cli.training import _consume

    images, given, _ = noisy_disks()
    events = cascade.train(images, given, TrainConfig(strategy="crl", **TINY))  # keep_auto: the default
    _consume(events)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 6 and "keep ratio" not in lines[0]
    assert ", keep ratio 0." in lines[2] and lines[2].endswith("from now on (most masks look wrong)")
