"""A review round after a second pass (crl_napari.rounds.base_labels) on real run folders: tiny phantoms with
simulated noise, the second pass trained by the product's own path, then a reviewer's decisions and a warm round.
The second pass keeps the labels it trained on; the warm round trains its undecided images on them (not on the
given masks the second pass had replaced), its decided ones on the decisions; a second pass of an earlier release
(no labels kept) and a damaged labels file."""

from __future__ import annotations

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
from crl_napari.second_pass import EVERY, train_passes
from crl_napari.settings import TrainConfig

TINY = dict(width=4, depth=2, epochs=6, batch_size=3, lr=0.1, augment=False, threads=1)
SIZE = 32


@pytest.fixture(scope="module")
def passed(tmp_path_factory):
    """A run whose second pass (every correction) trained after its first; the labels it was handed."""
    root = tmp_path_factory.mktemp("after-second")
    data = write_sample_set(root / "set", n=12, size=SIZE, noise_ratio=0.0, seed=3)
    run = root / "run"
    handed: dict = {}
    for ev in train_passes(data, run, TrainConfig(**TINY, second_pass=EVERY), size=SIZE, simulate_noise=0.5):
        if isinstance(ev, RoundStarted):  # the first pass is scored: its corrections are the second pass's labels
            folder = RunFolder(run)
            handed.update({r.id: folder.corrected(r.id) > 0 for r in folder.case_rows()})
    assert runs.read_rounds(run)[-1].second_pass
    return run, handed


@pytest.fixture
def reviewed(passed, tmp_path):
    """A copy of the run after its second pass, with one image accepted, one kept, one flagged, one excluded."""
    run, handed = passed
    out = tmp_path / "run"
    shutil.copytree(run, out)
    s = ReviewSession.open(out, reviewer="ana")
    accepted, kept, flagged, excluded = s.ids[:4]
    s.accept(accepted)
    s.keep(kept)
    s.flag(flagged)
    s.exclude(excluded)
    return out, handed, dict(accepted=accepted, kept=kept, flagged=flagged, excluded=excluded)


def _spy(monkeypatch) -> dict:
    """Record the masks and trusted flags training is handed, then train for real."""
    seen: dict = {}
    real = cascade.train_from

    def spy(source, config, **kw):
        every = range(len(source))
        seen.update(masks=np.asarray(source.labels(every)) > 0, trusted=np.asarray(kw["trusted"]), config=config)
        return real(source, config, **kw)

    monkeypatch.setattr(cascade, "train_from", spy)
    return seen


def test_the_second_pass_keeps_the_labels_it_trained_on(passed):
    run, handed = passed
    ids = [r.id for r in RunFolder(run).case_rows()]
    labels = Slots(run / "rounds" / "2" / runs.ROUND_LABELS, len(ids), SIZE)[list(range(len(ids)))] > 0
    assert all(np.array_equal(labels[k], handed[i]) for k, i in enumerate(ids))
    given = [RunFolder(run).given(i) > 0 for i in ids]
    assert any(not np.array_equal(labels[k], given[k]) for k in range(len(ids)))  # they differ from the given
    assert not (run / "rounds" / "2" / runs.ROUND_MASKS).exists()
    assert not (run / "rounds" / "1" / runs.ROUND_LABELS).exists()  # round 1 trained on the given masks


def test_a_warm_round_trains_undecided_images_on_the_second_pass_labels(reviewed, monkeypatch, capsys):
    run, handed, d = reviewed
    corrected_now = {i: RunFolder(run).corrected(i) > 0 for i in handed}  # the second pass's own corrections
    seen = _spy(monkeypatch)
    assert cli.main(["next-round", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    ids = [r.id for r in RunFolder(run).case_rows()]
    undecided = [i for i in ids if i not in (d["accepted"], d["kept"], d["excluded"])]
    assert f"{len(undecided)} undecided on the second pass's labels (round 2)" in err
    order = [i for i in ids if i != d["excluded"]]
    masks = dict(zip(order, seen["masks"], strict=True))
    trusted = dict(zip(order, seen["trusted"], strict=True))
    assert {i for i, t in trusted.items() if t} == {d["accepted"], d["kept"]}
    assert seen["config"].epochs == 1 and seen["config"].k == 0  # warm, from the second pass's nets
    for i in undecided:  # flagged ones too: not trusted, on what the second pass learnt from
        assert np.array_equal(masks[i], handed[i]), i
    assert any(not np.array_equal(handed[i], RunFolder(run).given(i) > 0) for i in undecided)
    assert np.array_equal(masks[d["accepted"]], corrected_now[d["accepted"]])
    assert np.array_equal(masks[d["kept"]], RunFolder(run).given(d["kept"]) > 0)
    rounds = runs.read_rounds(run)
    assert [(r.number, r.second_pass, r.warm_epochs) for r in rounds] == [(1, False, None), (2, True, None),
                                                                            (3, False, 1)]
    assert not (run / "rounds" / "3" / runs.ROUND_LABELS).exists()  # a review round keeps none
    assert (run / "rounds" / "2" / runs.ROUND_LABELS).is_file()  # the next warm round goes on from it too


def test_a_second_pass_of_an_earlier_release_leaves_the_given_masks(reviewed, monkeypatch):
    run, _, d = reviewed
    (run / "rounds" / "2" / runs.ROUND_LABELS).unlink()  # finished before the labels were kept
    seen = _spy(monkeypatch)
    events = list(next_round(run))
    assert [e.corrected for e in events if isinstance(e, RoundStarted)] == [0]
    assert isinstance(events[-1], ScoresReady)
    order = [r.id for r in RunFolder(run).case_rows() if r.id != d["excluded"]]
    for i, mask in zip(order, seen["masks"], strict=True):
        if i != d["accepted"]:
            assert np.array_equal(mask, RunFolder(run).given(i) > 0), i


def test_a_damaged_labels_file_is_one_line_naming_it(reviewed, capsys):
    run, _, _ = reviewed
    path = run / "rounds" / "2" / runs.ROUND_LABELS
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(RunError, match="labels.u8"):
        list(next_round(run))
    assert cli.main(["next-round", str(run), "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "delete it" in err[0]
    assert len(runs.read_rounds(run)) == 3  # the round is recorded; it starts once the file is mended or gone
    path.unlink()
    assert cli.main(["next-round", str(run), "--quiet"]) == 0
    assert [r.finished is not None for r in runs.read_rounds(run)] == [True, True, True]
