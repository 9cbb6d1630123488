"""Second pass mode 3 (second_pass.KEEP): after the first pass is scored, fresh nets train again on the GIVEN masks
with the keep ratio its scores suggest, or there is no second pass when they suggest none. Real run folders of tiny
phantoms (the project's noise protocol at 75 % gives a suggestion, clean masks none), trained by the engine and
the command line; a process ended between the first pass's scores and the second pass's start is resumed."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from crl_napari import cascade, cli, rounds, runs, second_pass
from crl_napari.checkpoint import read_checkpoint
from crl_napari.events import Finished, Started, Step
from crl_napari.phantoms import write_sample_set
from crl_napari.pipeline import ScoresReady
from crl_napari.review import ReviewSession
from crl_napari.rounds import RoundStarted
from crl_napari.run_data import training_source
from crl_napari.runs import RunFolder
from crl_napari.scoring import suggested_keep_ratio
from crl_napari.second_pass import KEEP, NoSecondPass, train_passes
from crl_napari.settings import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 9 training images in batches of 3 and nothing augmented; 6 epochs at lr 0.1 learn enough for the scores to split:
# at 75 % simulated noise 7 of 9 masks score at or above the recommended threshold (keep ratio 0.22 suggested), with
# clean masks 3 of 9 (none suggested)
TINY = dict(width=4, depth=2, epochs=6, batch_size=3, lr=0.1, augment=False, threads=1)
HEAVY, CLEAN = 0.75, 0.0
KEPT = ("config.json", "history.csv", "checkpoint.pt", "scores.csv")


class Kill(Exception):
    """The process ends (as a kill would, between two events of the stream)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("keep") / "set", n=12, size=32, noise_ratio=0.0, seed=3)


@pytest.fixture(scope="module")
def keep_run(data, tmp_path_factory):
    """A mode 3 run trained through both passes at 75 % noise: (run folder, its events)."""
    run = tmp_path_factory.mktemp("keep_run") / "run"
    events = list(train_passes(data, run, TrainConfig(**TINY, second_pass=KEEP), size=32, simulate_noise=HEAVY))
    return run, events


def _nets(checkpoint) -> list[dict]:
    return [{k: v.numpy() for k, v in sd.items()} for sd in read_checkpoint(checkpoint)["models"]]


def _same_nets(a: list[dict], b: list[dict]) -> bool:
    return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


def test_the_second_pass_trains_fresh_nets_on_the_given_masks_with_the_suggested_keep_ratio(keep_run):
    run, events = keep_run
    scored = [e for e in events if isinstance(e, ScoresReady)]
    started = [e for e in events if isinstance(e, RoundStarted)]
    assert len(scored) == 2 and scored[1].metrics["round"] == 2 and not any(isinstance(e, NoSecondPass)
                                                                           for e in events)
    keep = scored[0].metrics["suggested_keep_ratio"]  # what the first pass's metrics (and `info`) suggested
    first = RunFolder(runs.round_dir(run, 1))
    assert keep == 0.22 and keep == suggested_keep_ratio([r.suspicion for r in first.score_rows()], 0.5)
    assert len(started) == 1 and started[0].second_pass and started[0].from_scratch
    assert (started[0].keep_ratio, started[0].corrected, started[0].trusted) == (keep, 0, 0)

    # rounds.json records each round's keep ratio; the second pass had no correction as a label
    listed = runs.read_rounds(run)
    assert [(r.number, r.second_pass, r.keep_ratio, r.decisions) for r in listed] == \
        [(1, False, 0.5, {}), (2, True, keep, {})]
    assert runs.read_round_decisions(runs.round_dir(run, 2)) == {}
    assert [r["keep_ratio"] for r in rounds.describe(run)] == [0.5, keep]
    # the run's other settings unchanged; the second pass's nets, settings and scores are the run's
    assert first.train_config.keep_ratio == 0.5
    assert RunFolder(run).train_config == replace(first.train_config, keep_ratio=keep)
    assert all((runs.round_dir(run, 2) / n).read_bytes() == (run / n).read_bytes() for n in KEPT)
    assert not RunFolder(run).scores_stale and not second_pass.stopped(run)

    # what the benchmark's crl+keep-est cell trains: a fresh cascade on the run's images and given masks, the first
    # pass's settings and seed with the suggested keep ratio (here from the run's cache, as the engine reads them)
    top = RunFolder(run)
    rows = top.case_rows()
    given = np.stack([top.given(r.id) > 0 for r in rows]).astype(np.uint8)
    finished = [e for e in cascade.train_from(training_source(top, rows, 32, given),
                                              replace(first.train_config, keep_ratio=keep))
                if isinstance(e, Finished)]
    alone = [{k: v.numpy() for k, v in m.state_dict().items()} for m in finished[0].models]
    assert _same_nets(alone, _nets(run / runs.CHECKPOINT))
    assert not _same_nets(alone, _nets(runs.round_dir(run, 1) / runs.CHECKPOINT))  # not the first pass's


def test_nothing_suggested_no_second_pass_and_the_run_stands_as_the_first_pass_made_it(data, tmp_path):
    run = tmp_path / "run"
    events = list(train_passes(data, run, TrainConfig(**TINY, second_pass=KEEP), size=32, simulate_noise=CLEAN))
    assert not any(isinstance(e, RoundStarted) for e in events)
    assert [type(e) for e in events[-2:]] == [ScoresReady, NoSecondPass]
    scored, none = events[-2:]
    assert scored.metrics["suggested_keep_ratio"] is None and scored.metrics["noise_share"] == pytest.approx(3 / 9)
    assert none.reason.startswith("no second pass: 33% of the given masks look wrong") and "\n" not in none.reason
    assert none.metrics == {**scored.metrics, "no_second_pass": none.reason}  # the run's last metrics say it
    assert not (run / runs.ROUNDS).exists() and not (run / "rounds").exists()
    assert RunFolder(run).train_config.second_pass == KEEP and RunFolder(run).has_scores
    assert not second_pass.stopped(run) and not RunFolder.can_resume(run)  # nothing for Resume to do


def test_a_kill_between_the_first_pass_scores_and_the_second_pass_resumes_into_the_second_pass(data, tmp_path,
                                                                                              keep_run, capsys,
                                                                                              monkeypatch):
    run = tmp_path / "run"
    with pytest.raises(Kill):
        for ev in train_passes(data, run, TrainConfig(**TINY, second_pass=KEEP), size=32, simulate_noise=HEAVY):
            if isinstance(ev, ScoresReady):
                raise Kill  # scores.csv is written; the second pass has not started
    assert RunFolder(run).has_scores and not (run / runs.ROUNDS).exists()
    assert not RunFolder.can_resume(run) and second_pass.stopped(run)  # Resume is offered for it
    first = {n: (run / n).read_bytes() for n in KEPT}
    first_scores_ns = (run / runs.SCORES).stat().st_mtime_ns

    # resumed from the command line: straight into the second pass, the first pass neither trained nor rescored
    seen = []
    real = second_pass.run_second_pass

    def watch(*args, **kwargs):
        seen.append("second pass")
        yield from real(*args, **kwargs)

    monkeypatch.setattr(second_pass, "run_second_pass", watch)
    assert cli.main(["train", str(data), "--out", str(run), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert seen == ["second pass"]
    assert err.count("training crl on 9 images") == 1  # the second pass's only
    assert "starting the second pass (round 2, fresh nets): trained on the given masks with keep ratio 0.22" in err
    keep = runs.read_rounds(run)[1].keep_ratio
    assert keep == 0.22 and all(r.finished for r in runs.read_rounds(run))
    assert {n: (runs.round_dir(run, 1) / n).read_bytes() for n in KEPT} == first
    assert (runs.round_dir(run, 1) / runs.SCORES).stat().st_mtime_ns == first_scores_ns  # kept by link, not rescored
    # the same nets as the run that was never killed
    assert _same_nets(_nets(run / runs.CHECKPOINT), _nets(keep_run[0] / runs.CHECKPOINT))


def test_a_stopped_keep_pass_resumes_with_its_keep_ratio_and_ends_with_the_same_nets(data, tmp_path, keep_run,
                                                                                    capsys):
    run = tmp_path / "run"
    state = {"second": False, "steps": 0}
    events = []
    for ev in train_passes(data, run, TrainConfig(**TINY, second_pass=KEEP), size=32, simulate_noise=HEAVY,
                           should_stop=lambda: state["second"] and state["steps"] >= 6):  # its first two epochs
        events.append(ev)
        state["second"] = state["second"] or isinstance(ev, RoundStarted)
        state["steps"] += state["second"] and isinstance(ev, Step)
    assert isinstance(events[-1], Finished) and events[-1].stopped
    assert runs.read_rounds(run)[1].keep_ratio == 0.22 and second_pass.stopped(run)

    # the engine's resume: the round's own plan follows RoundStarted, with the epochs it trained before the stop
    resumed = list(train_passes(data, run, None, resume=True))
    start = next(i for i, e in enumerate(resumed) if isinstance(e, RoundStarted))
    assert resumed[start].resumed and resumed[start].keep_ratio == 0.22
    plan = resumed[start + 1]
    assert isinstance(plan, runs.Resume) and [h.epoch for h in plan.history] == [0, 1]
    assert plan.config.keep_ratio == 0.22 and plan.run.path == runs.round_dir(run, 2)
    assert [e.start_epoch for e in resumed if isinstance(e, Started)] == [2]
    assert read_checkpoint(run / runs.CHECKPOINT)["config"]["keep_ratio"] == 0.22
    assert [r.keep_ratio for r in runs.read_rounds(run)] == [0.5, 0.22]
    assert _same_nets(_nets(run / runs.CHECKPOINT), _nets(keep_run[0] / runs.CHECKPOINT))


def test_the_command_line_trains_mode_3_through_its_generic_option_and_says_when_there_is_none(data, tmp_path,
                                                                                              capsys):
    import json

    base = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "6", "--batch-size", "3", "--lr", "0.1",
            "--no-augment", "--threads", "1", "--second-pass", "3", "--quiet"]
    heavy, clean = tmp_path / "heavy", tmp_path / "clean"
    assert cli.main(["train", str(data), "--out", str(heavy), "--simulate-noise", "0.75", *base]) == 0
    out, err = capsys.readouterr()
    assert "starting the second pass (round 2, fresh nets): trained on the given masks with keep ratio 0.22" in err
    assert json.loads(out[:out.rindex("}") + 1])["round"] == 2
    assert [r.keep_ratio for r in runs.read_rounds(heavy)] == [0.5, 0.22]

    assert cli.main(["train", str(data), "--out", str(clean), *base]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "second pass" in line]
    assert lines == [line for line in err.splitlines() if line.startswith("no second pass: 33% of the given masks")]
    assert len(lines) == 1 and "Traceback" not in err
    assert json.loads(out[:out.rindex("}") + 1])["no_second_pass"] == lines[0]
    assert not (clean / runs.ROUNDS).exists()


@pytest.mark.parametrize("from_scratch", [True, False])
def test_a_review_round_after_the_keep_pass_trains_with_its_keep_ratio(keep_run, tmp_path, from_scratch):
    """The keep ratio a mode 3 second pass settled on carries into the reviewer's rounds, warm or from scratch."""
    run = tmp_path / "run"
    shutil.copytree(keep_run[0], run)
    session = ReviewSession.open(run, reviewer="ana")
    session.accept(session.ids[0])
    session.keep(session.ids[1])
    events = list(rounds.next_round(run, from_scratch=from_scratch, warm_epochs=None if from_scratch else 2))
    assert [e.metrics["round"] for e in events if isinstance(e, ScoresReady)] == [3]
    assert [r.keep_ratio for r in runs.read_rounds(run)] == [0.5, 0.22, 0.22]
    assert RunFolder(run).train_config.keep_ratio == 0.22
