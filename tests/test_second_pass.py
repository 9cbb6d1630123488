"""The second pass (TrainConfig.second_pass, crl_napari.second_pass) on real run folders: tiny phantoms trained by
the command line; what the second pass's stepper receives, what the run folder keeps, a stopped second pass
resumed, and the setting off giving exactly the one-pass run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _scores import raise_suspicions

from crl_napari import cascade, cli, runs, second_pass
from crl_napari.checkpoint import read_checkpoint
from crl_napari.cli.run_commands import say_keep_advice
from crl_napari.events import Finished, Step
from crl_napari.phantoms import write_sample_set
from crl_napari.pipeline import ScoresReady, train_run
from crl_napari.rounds import RoundStarted
from crl_napari.runs import RunFolder
from crl_napari.scoring import recommended_threshold
from crl_napari.second_pass import EVERY, RECOMMENDED, takes_correction, train_passes, training_labels
from crl_napari.settings import TrainConfig, TrainingError

# 9 training images in 3 batches of 3 (none dropped) and nothing augmented: what the stepper receives in an epoch
# is exactly the training labels, in a shuffled order
TINY = dict(width=4, depth=2, epochs=6, batch_size=3, lr=0.1, augment=False, threads=1)  # learns enough to split
STEPS = 3  # per epoch
KEPT = ("config.json", "history.csv", "checkpoint.pt", "scores.csv")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("second") / "set", n=12, size=32, noise_ratio=0.0, seed=3)


class _Spy:
    """The real stepper, recording the labels of every step it is given."""

    def __init__(self, stepper, seen: list) -> None:
        self._stepper, self._seen = stepper, seen

    def __call__(self, x, y, *args, **kwargs):
        self._seen.append(y.detach().cpu().numpy().copy())
        return self._stepper(x, y, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._stepper, name)


def _epochs(steps: list) -> list[np.ndarray]:
    """The labels of each epoch's steps, together."""
    assert len(steps) % STEPS == 0
    return [np.concatenate(steps[i:i + STEPS]) for i in range(0, len(steps), STEPS)]


def _rows(masks: np.ndarray) -> list[bytes]:
    return sorted((np.asarray(m) > 0.5).astype(np.uint8).tobytes() for m in masks)


def test_labels_rule():
    s = np.array([0.01, 0.02, 0.03, 0.02, 0.4, 0.5, 0.45, np.nan])
    t = recommended_threshold(s)
    assert list(takes_correction(s, RECOMMENDED)) == [bool(v >= t) for v in s] == [False] * 4 + [True] * 3 + [False]
    assert takes_correction(s, EVERY).all()
    with pytest.raises(ValueError):
        takes_correction(s, 0)
    given = np.zeros((8, 4, 4), np.uint8)
    corrected = np.ones((8, 4, 4), bool)
    labels = training_labels(given, corrected, s, RECOMMENDED)
    assert labels.dtype == np.uint8 and [int(m.max()) for m in labels] == [0] * 4 + [1] * 3 + [0]


def test_second_pass_trains_fresh_nets_on_the_first_pass_corrections(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen: list = []
    first_pass: dict = {}
    real = cascade.make_stepper

    def spy(config, *args, **kwargs):
        return _Spy(real(config, *args, **kwargs), seen)

    monkeypatch.setattr(cascade, "make_stepper", spy)
    events = []
    for ev in train_passes(data, run, TrainConfig(**TINY, second_pass=RECOMMENDED), size=32, simulate_noise=0.5):
        if isinstance(ev, RoundStarted):  # the first pass is trained and scored: what the second pass should get
            folder = RunFolder(run)
            rows = folder.score_rows()
            take = takes_correction(np.array([r.suspicion for r in rows]), RECOMMENDED)
            first_pass.update(steps=len(seen), take=dict(zip([r.id for r in rows], take, strict=True)),
                              corrected={r.id: folder.corrected(r.id) for r in rows},
                              given={r.id: folder.given(r.id) for r in rows})
        events.append(ev)
    started = [e for e in events if isinstance(e, RoundStarted)]
    assert len(started) == 1 and started[0].second_pass and started[0].from_scratch and started[0].trusted == 0
    assert sum(isinstance(e, ScoresReady) for e in events) == 2 and events[-1].metrics["round"] == 2

    # the second pass's stepper received, every epoch, each image's correction where the recommended threshold
    # takes it and its given mask elsewhere; the first pass's, the given masks
    ids = list(first_pass["given"])
    take = first_pass["take"]
    expected = [first_pass["corrected"][i] if take[i] else first_pass["given"][i] for i in ids]
    given = [first_pass["given"][i] for i in ids]
    assert 0 < sum(take.values()) < len(ids)
    assert any(not np.array_equal(first_pass["corrected"][i] > 0, first_pass["given"][i] > 0) for i in ids if take[i])
    assert _rows(expected) != _rows(given)  # so the assertions below can tell the two apart
    first, second = _epochs(seen[:first_pass["steps"]]), _epochs(seen[first_pass["steps"]:])
    assert len(first) == len(second) == TINY["epochs"]
    assert all(_rows(y) == _rows(given) for y in first)
    assert all(_rows(y) == _rows(expected) for y in second)

    # round 1 (the first pass) kept in rounds/1; the second pass's nets, config and scores are the run's
    assert all((run / "rounds" / "1" / name).is_file() for name in KEPT)
    assert all((run / "rounds" / "2" / name).read_bytes() == (run / name).read_bytes() for name in KEPT)
    assert (run / "rounds" / "1" / "checkpoint.pt").read_bytes() != (run / "checkpoint.pt").read_bytes()
    rounds = runs.read_rounds(run)
    assert [(r.number, r.from_scratch, r.second_pass, r.warm_epochs) for r in rounds] == \
        [(1, False, False, None), (2, True, True, None)]
    assert all(r.finished for r in rounds) and rounds[1].decisions == {"corrected": sum(take.values())}
    assert runs.read_round_decisions(run / "rounds" / "2") == {i: "corrected" for i in ids if take[i]}
    assert RunFolder(run).train_config == RunFolder(run / "rounds" / "1").train_config  # the same settings
    assert not RunFolder(run).scores_stale
    # scored against the masks the user gave, not against the second pass's labels
    assert all(np.array_equal(RunFolder(run).given(i), first_pass["given"][i]) for i in ids)


def test_off_is_exactly_the_one_pass_run(data, tmp_path):
    one = list(train_run(data, tmp_path / "one", TrainConfig(**TINY), size=32, simulate_noise=0.5))
    off = list(train_passes(data, tmp_path / "off", TrainConfig(**TINY, second_pass=second_pass.OFF), size=32,
                            simulate_noise=0.5))
    assert [type(e) for e in one] == [type(e) for e in off]
    assert not any(isinstance(e, RoundStarted) for e in off)
    assert not (tmp_path / "off" / runs.ROUNDS).exists() and not (tmp_path / "off" / "rounds").exists()
    assert (tmp_path / "off" / "scores.csv").read_text() == (tmp_path / "one" / "scores.csv").read_text()
    assert _history(tmp_path / "off") == _history(tmp_path / "one")
    a = cascade.load_models(tmp_path / "one")[0]
    b = cascade.load_models(tmp_path / "off")[0]
    for ma, mb in zip(a, b, strict=True):
        for (ka, ta), (kb, tb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
            assert ka == kb and np.array_equal(ta.numpy(), tb.numpy())


def _history(run) -> list[dict]:
    """history.csv without the seconds each epoch took."""
    with open(run / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_a_stopped_second_pass_resumes_from_the_command_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    state = {"second": False, "steps": 0}

    def stop() -> bool:
        return state["second"] and state["steps"] >= STEPS  # the second pass's first epoch only

    events = []
    for ev in train_passes(data, run, TrainConfig(**TINY, second_pass=EVERY), size=32, simulate_noise=0.5,
                           should_stop=stop):
        events.append(ev)
        state["second"] = state["second"] or isinstance(ev, RoundStarted)
        if state["second"] and isinstance(ev, Step):
            state["steps"] += 1
    assert isinstance(events[-1], Finished) and events[-1].stopped
    rounds = runs.read_rounds(run)
    assert [r.finished is None for r in rounds] == [False, True] and rounds[1].second_pass
    kept = {n: (run / "rounds" / "1" / n).read_bytes() for n in KEPT}
    assert {n: (run / n).read_bytes() for n in KEPT} == kept  # the top level is still the first pass's

    args = ["train", str(data), "--out", str(run), "--resume", "--quiet"]
    assert cli.main(args) == 0
    assert "resuming the second pass (round 2" in capsys.readouterr().err
    rounds = runs.read_rounds(run)
    assert all(r.finished for r in rounds) and rounds[1].decisions == {"corrected": 9}  # every image (EVERY)
    assert {n: (run / "rounds" / "1" / n).read_bytes() for n in KEPT} == kept
    assert (run / "checkpoint.pt").read_bytes() == (run / "rounds" / "2" / "checkpoint.pt").read_bytes()
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == TINY["epochs"] - 1

    # done: a further resume says so in one line, and writes nothing
    before = {n: (run / n).read_bytes() for n in KEPT}
    assert cli.main(args) != 0
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {n: (run / n).read_bytes() for n in KEPT} == before


def test_the_command_line_offers_it_and_refuses_a_bad_value(data, tmp_path, capsys):
    assert cli.main(["train", str(data), "--out", str(tmp_path / "run"), "--second-pass", "5", "--quiet"]) != 0
    assert "second_pass" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainingError):
        TrainConfig(second_pass=-1)


def test_a_trained_run_takes_the_advised_second_pass_from_next_round(data, tmp_path, capsys):
    """The user's path after the advice: a run trained without a second pass, whose scores say most masks look
    wrong, names `next-round RUN --second-pass 2`; that trains it (fresh nets on every correction, round 2, the
    first pass kept in rounds/1/) and rescores; after it the advice no longer offers one, and asking again is
    refused in one line with nothing written."""
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), "--simulate-noise", "0.5", "--size", "32", "--width", "4",
                     "--depth", "2", "--epochs", "2", "--batch-size", "3", "--no-augment", "--second-pass", "0",
                     "--quiet"]) == 0  # without (a release before the default, or the setting off)
    assert RunFolder(run).train_config.second_pass == 0 and second_pass.offered(run)
    capsys.readouterr()
    assert cli.main(["info", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["queue"]["second_pass_offered"] is True
    err = _advice(run, capsys)
    assert "a second pass on the corrections, or training again with keep ratio 0.22, may correct them" in err
    assert f"(crl-napari next-round {run} --second-pass 2, or crl-napari train ... --keep-ratio 0.22)" in err
    first = {n: (run / n).read_bytes() for n in KEPT}

    assert cli.main(["next-round", str(run), "--second-pass", "2", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "starting the second pass (round 2, fresh nets)" in out.err and "re-ranked" in out.out
    rounds = runs.read_rounds(run)
    assert [(r.number, r.second_pass, r.from_scratch) for r in rounds] == [(1, False, False), (2, True, True)]
    assert rounds[1].finished and rounds[1].decisions == {"corrected": 9}  # every image's correction (EVERY)
    assert {n: (run / "rounds" / "1" / n).read_bytes() for n in KEPT} == first  # the first pass, kept
    assert (run / "checkpoint.pt").read_bytes() != first["checkpoint.pt"] and not RunFolder(run).scores_stale
    assert not second_pass.offered(run)
    assert cli.main(["info", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["queue"]["second_pass_offered"] is False

    err = _advice(run, capsys)
    assert "training again with keep ratio 0.22 may correct them" in err and "second pass" not in err
    before = {n: (run / n).read_bytes() for n in KEPT}
    assert cli.main(["next-round", str(run), "--second-pass", "2", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "already has rounds" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {n: (run / n).read_bytes() for n in KEPT} == before
    with pytest.raises(SystemExit):  # not a mode: argparse's usage line
        cli.main(["next-round", str(run), "--second-pass", "4"])
    assert "--second-pass: invalid choice: 4" in capsys.readouterr().err


def _advice(run, capsys) -> str:
    """The advice line after scoring, on the run's real scores with 7 of its 9 suspicions raised."""
    raise_suspicions(run, 7)
    capsys.readouterr()
    say_keep_advice(run)
    return capsys.readouterr().err
