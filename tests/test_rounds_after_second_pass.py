"""A review round after the second pass (crl_napari.rounds.pending_labels): after a second pass on every correction,
the images nobody decided on train on the labels that pass trained on (kept in rounds/2/labels.u8), not on their
given masks; after one on the recommended corrections they keep their given masks; a damaged labels file is refused
in one line before the round is written. Tiny phantoms trained for real; the stepper's labels are what is checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from crl_napari import cascade, cli, runs
from crl_napari.cache import Slots
from crl_napari.phantoms import write_sample_set
from crl_napari.pipeline import ScoresReady
from crl_napari.review import ReviewSession
from crl_napari.rounds import RoundStarted, next_round
from crl_napari.runs import RunError, RunFolder
from crl_napari.second_pass import EVERY, RECOMMENDED, train_passes
from crl_napari.settings import TrainConfig

TINY = dict(width=4, depth=2, epochs=6, batch_size=3, lr=0.1, augment=False, threads=1)
SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("after") / "set", n=12, size=SIZE, noise_ratio=0.0, seed=3)


def _two_passes(data, out, mode: int) -> dict:
    """A run trained with a second pass of ``mode``; returns the first pass's corrections, as the second pass
    trained on them ({id: bool mask})."""
    first: dict = {}
    for ev in train_passes(data, out, TrainConfig(**TINY, second_pass=mode), size=SIZE, simulate_noise=0.5):
        if isinstance(ev, RoundStarted):  # the first pass is scored: its corrections are on disk
            folder = RunFolder(out)
            first.update({r.id: folder.corrected(r.id) > 0 for r in folder.score_rows()})
    assert [r.number for r in runs.read_rounds(out)] == [1, 2]
    return first


@pytest.fixture(scope="module")
def every(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("every") / "run"
    return out, _two_passes(data, out, EVERY)


def _review(run):
    """Three decisions in queue order: one accepted, one kept, one excluded; the rest nobody decided on."""
    s = ReviewSession.open(run, reviewer="ana")
    a, k, x = s.ids[:3]
    s.accept(a)
    s.keep(k)
    s.exclude(x)
    return a, k, x


def _round_masks(run, monkeypatch) -> tuple[list, dict]:
    """Train the next warm round for real; the events and {id: the mask training was handed}."""
    seen: dict = {}
    real = cascade.train_from

    def spy(source, config, **kw):
        every_slot = range(len(source))
        seen["masks"] = source.labels(every_slot) > 0
        return real(source, config, **kw)

    monkeypatch.setattr(cascade, "train_from", spy)
    review = ReviewSession.open(run)
    excluded = {i for i in review.ids if review.status(i) == "excluded"}
    events = list(next_round(run, warm_epochs=1))
    order = [r.id for r in RunFolder(run).case_rows() if r.id not in excluded]
    return events, dict(zip(order, seen["masks"], strict=True))


def test_after_a_second_pass_on_every_correction_the_undecided_train_on_its_labels(every, tmp_path, monkeypatch,
                                                                                   capsys):
    trained, first = every
    # the second pass kept what it trained on: every case's first-pass correction, in cases.csv order
    ids = [r.id for r in RunFolder(trained).case_rows()]
    kept = Slots(trained / "rounds" / "2" / runs.ROUND_LABELS, len(ids), SIZE)
    assert all(np.array_equal(kept[n] > 0, first[i]) for n, i in enumerate(ids))
    kept.close()
    assert not (trained / "rounds" / "2" / runs.ROUND_MASKS).exists()

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    accepted, kept_id, excluded = _review(run)
    second = {i: RunFolder(run).corrected(i) > 0 for i in ids}  # the second pass's corrections, shown in review
    given = {i: RunFolder(run).given(i) > 0 for i in ids}
    rest = [i for i in ids if i not in (accepted, kept_id, excluded)]
    # so the assertions below can tell the three kinds of label apart
    assert any(not np.array_equal(first[i], given[i]) for i in rest)
    assert not np.array_equal(second[accepted], first[accepted])

    events, masks = _round_masks(run, monkeypatch)
    started = next(e for e in events if isinstance(e, RoundStarted))
    assert (started.round, started.warm_from, started.pending_from, started.trusted) == (3, 2, 2, 2)
    assert "the rest on round 2's labels" in started.text()
    assert isinstance(events[-1], ScoresReady) and events[-1].metrics["round"] == 3
    assert excluded not in masks
    assert np.array_equal(masks[accepted], second[accepted])  # the correction the reviewer saw and accepted
    assert np.array_equal(masks[kept_id], given[kept_id])  # kept: the given mask, trusted
    assert all(np.array_equal(masks[i], first[i]) for i in rest)  # nobody decided: the second pass's labels
    # the labels stay for the rounds after; a review round keeps no masks of its own
    assert (run / "rounds" / "2" / runs.ROUND_LABELS).is_file()
    assert not any((run / "rounds" / "3" / n).exists() for n in (runs.ROUND_MASKS, runs.ROUND_LABELS))

    # from the command line the next round says so
    s = ReviewSession.open(run)
    s.keep(rest[0])
    capsys.readouterr()
    assert cli.main(["next-round", str(run), "--warm-epochs", "1", "--quiet"]) == 0
    assert "starting review round 4 (warm start from round 2, 1 epoch(s); 3 trusted; 1 left out; the rest on round " \
           "2's labels)" in capsys.readouterr().err


def test_a_round_from_scratch_and_a_recommended_second_pass_keep_the_given_masks(every, data, tmp_path, monkeypatch):
    """Only a warm round on a second pass of every correction takes its labels: from scratch a round is the first
    round again with the decisions; after a second pass on the recommended corrections the given masks stay."""
    run = tmp_path / "rec"
    _two_passes(data, run, RECOMMENDED)
    assert not (run / "rounds" / "2" / runs.ROUND_LABELS).exists()
    accepted, kept_id, excluded = _review(run)
    events, masks = _round_masks(run, monkeypatch)
    assert next(e for e in events if isinstance(e, RoundStarted)).pending_from is None
    folder = RunFolder(run)
    assert all(np.array_equal(m, folder.given(i) > 0) for i, m in masks.items() if i not in (accepted, kept_id))

    scratch = tmp_path / "scratch"
    shutil.copytree(every[0], scratch)
    _review(scratch)
    events = list(next_round(scratch, from_scratch=True))
    assert next(e for e in events if isinstance(e, RoundStarted)).pending_from is None


@pytest.mark.parametrize("damage", ["short", "link"])
def test_a_damaged_labels_file_is_refused_in_one_line_before_the_round_starts(every, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(every[0], run)
    _review(run)
    labels = run / "rounds" / "2" / runs.ROUND_LABELS
    if damage == "short":
        labels.write_bytes(labels.read_bytes()[:-5])
    else:
        outside = tmp_path / "elsewhere.u8"
        outside.write_bytes(labels.read_bytes())
        labels.unlink()
        labels.symlink_to(outside)
    rounds_before = (run / "rounds.json").read_text()
    with pytest.raises(RunError, match="labels.u8"):
        list(next_round(run, warm_epochs=1))
    capsys.readouterr()
    assert cli.main(["next-round", str(run), "--warm-epochs", "1", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "labels.u8" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (run / "rounds.json").read_text() == rounds_before and not (run / "rounds" / "3").exists()
    assert json.loads(rounds_before)  # still two finished rounds: nothing started
