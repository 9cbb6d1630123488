"""Review rounds on real run folders (tiny phantoms, trained by the command line): the bookkeeping, the trusted
set handed to training, resuming a killed round, a run folder of the previous release, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from crl_napari import cascade, cli, runs
from crl_napari.atomic import atomic_write_png
from crl_napari.cache import Slots
from crl_napari.events import CheckpointSaved, EpochEnd, Finished, Started
from crl_napari.phantoms import write_sample_set
from crl_napari.pipeline import ScoresReady, ScoringStopped
from crl_napari.postprocess import clean_mask, extra_pieces
from crl_napari.review import ReviewSession, default_unreviewed
from crl_napari.rounds import (
    WARM_LR_END,
    WARM_LR_START,
    RoundStarted,
    describe,
    info,
    next_round,
    queue_order,
    round_config,
)
from crl_napari.runs import RunFolder
from crl_napari.scoring import noise_share, recommended_threshold, suggested_keep_ratio
from crl_napari.settings import TrainConfig

TINY = ["--size", "32", "--width", "4", "--depth", "2", "--epochs", "3", "--batch-size", "4", "--lr", "0.05",
        "--quiet"]
KEPT_FILES = ("config.json", "history.csv", "checkpoint.pt", "scores.csv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A crl run on 12 phantoms (9 train) with half the training masks corrupted."""
    root = tmp_path_factory.mktemp("rounds")
    data = write_sample_set(root / "set", n=12, size=32, noise_ratio=0.0, seed=3)
    assert cli.main(["train", str(data), "--out", str(root / "run"), "--simulate-noise", "0.5", *TINY]) == 0
    return root / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, reviewed: the first five images of the queue accepted, kept, edited, excluded,
    flagged (in rank order)."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    s = ReviewSession.open(out, reviewer="ana")
    a, k, e, x, f = s.ids[:5]
    s.accept(a)
    s.keep(k)
    drawn = np.zeros((32, 32), bool)
    drawn[8:24, 4:14] = drawn[8:24, 18:28] = True
    s.edit(e, drawn)
    s.exclude(x)
    s.flag(f)
    return out


def _bytes(folder: Path) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in KEPT_FILES}


def test_a_round_keeps_round_1_trains_with_the_decisions_and_rescores(run, monkeypatch):
    before, review_before = _bytes(run), json.loads((run / "review.json").read_text())
    s = ReviewSession.open(run)
    accepted, kept, edited, excluded, flagged = s.ids[:5]
    corrected_before = {i: (run / "corrected" / f"{i}.png").read_bytes() for i in s.ids}
    prob_before = {i: (run / "corrected" / f"{i}_prob16.png").read_bytes() for i in s.ids}
    seen = {}
    real = cascade.train_from

    def spy(source, config, **kw):  # records what training was handed, then trains for real
        every = range(len(source))
        seen.update(source=source, images=source.images(every), masks=source.labels(every), config=config, **kw)
        mask_file = run / "rounds" / "2" / runs.ROUND_MASKS  # the masks stream from the round's file, not memory
        seen["mask_file"] = Slots(mask_file, len(source), 32)[list(every)]
        return real(source, config, **kw)

    monkeypatch.setattr(cascade, "train_from", spy)
    events = list(next_round(run, warm_epochs=2))
    started = [e for e in events if isinstance(e, RoundStarted)]
    assert started == [RoundStarted(2, False, 3, 1, 2, False, 1)]
    assert isinstance(events[-1], ScoresReady) and events[-1].metrics["round"] == 2

    # what training saw: the excluded image left out, the trusted ones flagged, each with the mask decided
    ids = [r.id for r in RunFolder(run).case_rows()]
    order = [i for i in ids if i != excluded]
    assert len(seen["images"]) == len(order) == 8
    trusted = dict(zip(order, seen["trusted"], strict=True))
    assert {i for i, t in trusted.items() if t} == {accepted, kept, edited}
    masks = dict(zip(order, seen["masks"], strict=True))
    assert np.array_equal(seen["mask_file"], seen["masks"])
    assert not (run / "rounds" / "2" / runs.ROUND_MASKS).exists()  # made from decisions.json again when needed
    old = RunFolder(run / "rounds" / "1")
    assert np.array_equal(masks[accepted], iio.imread(corrected_before[accepted]) > 127)  # the one accepted
    assert masks[edited][8:24, 4:14].all() and masks[edited].sum() == 2 * 16 * 10
    for i in (kept, flagged):
        assert np.array_equal(masks[i], RunFolder(run).given(i))
    assert seen["init_from"] == run / "rounds" / "1" / "checkpoint.pt" and seen["resume"] is False
    assert seen["config"].epochs == 2 and seen["config"].k == 0 and seen["config"].ramp == 0.0
    assert old.train_config.epochs == 3
    # the warm round anneals from a tenth of the first round's last lr to a tenth of that; its nets average its epochs
    first = old.train_config
    end = first.lr * first.lr_decay**first.epochs * WARM_LR_START
    assert [e.lr for e in events if isinstance(e, EpochEnd)] == pytest.approx([end, end * WARM_LR_END])
    assert seen["config"].average_last == 2
    assert torch.load(run / "rounds" / "2" / "checkpoint.pt", weights_only=True)["average"]["count"] == 2

    # round 1 kept byte for byte; round 2 at the top level and in rounds/2
    assert _bytes(run / "rounds" / "1") == before
    top = _bytes(run)
    assert top["scores.csv"] != before["scores.csv"] and top["checkpoint.pt"] != before["checkpoint.pt"]
    assert _bytes(run / "rounds" / "2") == top
    assert RunFolder(run).train_config.epochs == 2 and len(RunFolder(run).history_rows()) == 2
    assert not RunFolder(run).scores_stale
    rounds = runs.read_rounds(run)
    assert [r.number for r in rounds] == [1, 2] and all(r.finished for r in rounds)
    assert rounds[1].decisions == {"accepted": 1, "edited": 1, "excluded": 1, "flagged": 1, "kept": 1}
    # the accepted correction keeps the mask the reviewer accepted; the others were rescored
    assert (run / "corrected" / f"{accepted}.png").read_bytes() == corrected_before[accepted]
    assert (run / "corrected" / f"{accepted}_prob16.png").read_bytes() == prob_before[accepted]
    assert all((run / "corrected" / f"{i}_prob16.png").read_bytes() != prob_before[i] for i in s.ids[5:])

    # every decision carries over untouched, tagged with round 1; new ones are tagged with round 2
    assert json.loads((run / "review.json").read_text()) == review_before
    s2 = ReviewSession.open(run, reviewer="ben")
    assert s2.round == 2 and sorted(s2.ids) == sorted(s.ids)
    assert [s2.decision(i)["round"] for i in s.ids[:5]] == [1] * 5
    assert [s2.status(i) for i in s.ids[:5]] == ["accepted", "kept", "edited", "excluded", "flagged"]
    pending = s2.next_pending()
    s2.keep(pending)
    assert json.loads((run / "review.json").read_text())["decisions"][pending]["round"] == 2

    listed = describe(run)
    assert [(r["round"], r["epochs"]) for r in listed] == [(1, 3), (2, 2)]
    assert listed[1]["decisions"]["accepted"] == 1 and listed[1]["warm_epochs"] == 2


def test_warm_rounds_anneal_alike_and_set_every_option_they_need():
    """Every warm round starts at a tenth of the first round's last lr and ends at a tenth of that (round after round
    alike, not compounding), whatever the first round's average_last: a round averages its own epochs."""
    first = TrainConfig(epochs=20, lr=0.05, lr_decay=0.95, average_last=5, width=4, ramp=0.1, k=10)
    end = 0.05 * 0.95**20 * WARM_LR_START
    assert WARM_LR_START == WARM_LR_END == 0.1
    second = round_config(first, first, 2, from_scratch=False)
    assert (second.epochs, second.k, second.ramp, second.average_last) == (2, 0, 0.0, 2)
    assert [cascade.learning_rate(second, e) for e in range(2)] == pytest.approx([end, end * WARM_LR_END])
    assert round_config(second, first, 2, from_scratch=False) == second
    longer = round_config(second, first, 4, from_scratch=False)
    lrs = [cascade.learning_rate(longer, e) for e in range(4)]
    assert lrs[0] == pytest.approx(end) and lrs[-1] == pytest.approx(end * WARM_LR_END)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and longer.average_last == 4
    one = round_config(first, first, 1, from_scratch=False)
    assert one.lr == pytest.approx(end) and one.average_last == 1
    assert round_config(second, first, None, from_scratch=True) == first


def test_every_warm_round_starts_from_the_last_round_trained_in_full(run, monkeypatch):
    """Round 3 (warm) starts from round 1's nets with every decision so far, not from round 2's (warm rounds chained
    on one another drift: rounds.warm_base); after a round from scratch, the next warm round starts from that one."""
    seen = []
    real = cascade.train_from

    def spy(source, config, **kw):  # records where the weights came from, then trains for real
        seen.append(kw["init_from"])
        return real(source, config, **kw)

    monkeypatch.setattr(cascade, "train_from", spy)
    bases = []
    for how in ({"warm_epochs": 1}, {"warm_epochs": 1}, {"from_scratch": True}, {"warm_epochs": 1}):
        events = list(next_round(run, **how))
        bases += [e.warm_from for e in events if isinstance(e, RoundStarted)]
        assert isinstance(events[-1], ScoresReady)
    assert bases == [1, 1, None, 4]
    assert seen == [run / "rounds" / "1" / "checkpoint.pt", run / "rounds" / "1" / "checkpoint.pt", None,
                    run / "rounds" / "4" / "checkpoint.pt"]
    assert [r.number for r in runs.read_rounds(run)] == [1, 2, 3, 4, 5]


def test_a_rounds_file_whose_round_1_was_warm_is_refused(run, capsys):
    assert cli.main(["next-round", str(run), "--warm-epochs", "1", "--quiet"]) == 0
    path = run / runs.ROUNDS
    data = json.loads(path.read_text())
    data["rounds"][0]["warm_epochs"] = 2
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert cli.main(["next-round", str(run), "--warm-epochs", "1", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert str(path) in err and "round 1 trained in full" in err and "Traceback" not in err


class Kill(Exception):
    pass


def test_a_killed_round_resumes_and_never_starts_another(run):
    before = _bytes(run)
    with pytest.raises(Kill):  # the consumer dies after the round's first checkpoint
        for ev in next_round(run, warm_epochs=3):
            if isinstance(ev, CheckpointSaved):
                raise Kill
    rounds = runs.read_rounds(run)
    assert [(r.number, r.finished) for r in rounds] == [(1, rounds[0].finished), (2, None)]
    assert _bytes(run) == before == _bytes(run / "rounds" / "1")  # the top level is still round 1's
    assert ReviewSession.open(run).round == 1
    assert info(run)["queue_scored_by_round"] == 1  # round 2 is not done: round 1's scores are the queue's

    # stopped from outside (should_stop) at once: nothing more is trained, still round 2
    events = list(next_round(run, should_stop=lambda: True))
    assert isinstance(events[-1], Finished) and events[-1].stopped
    assert len(runs.read_rounds(run)) == 2

    events = list(next_round(run, warm_epochs=9))  # the round's own settings win on resume
    assert [e for e in events if isinstance(e, RoundStarted)][0].resumed
    assert [e.start_epoch for e in events if isinstance(e, Started)] == [1]
    rounds = runs.read_rounds(run)
    assert [r.number for r in rounds] == [1, 2] and rounds[1].finished and rounds[1].warm_epochs == 3
    assert [h.epoch for h in RunFolder(run).history_rows()] == [0, 1, 2]
    assert _bytes(run / "rounds" / "1") == before


def test_a_round_stopped_while_scoring_resumes_into_its_scoring_only(run):
    """Stop pressed once the round is trained (the Review widget's Stop while it scores every image)."""
    stop = []
    events = []
    for ev in next_round(run, warm_epochs=2, should_stop=lambda: bool(stop)):
        events.append(ev)
        if isinstance(ev, Finished) and not ev.stopped:
            stop.append(True)
    assert isinstance(events[-1], ScoringStopped) and events[-1].done == 0 and events[-1].total == 9
    rounds = runs.read_rounds(run)
    assert [(r.number, r.finished is None) for r in rounds] == [(1, False), (2, True)]  # round 2 is not done
    assert RunFolder(run).scores_stale  # round 2's weights are the run's, round 1's scores still the queue's
    events = list(next_round(run))
    assert [e.resumed for e in events if isinstance(e, RoundStarted)] == [True]
    assert [e.start_epoch for e in events if isinstance(e, Started)] == [2]  # nothing trained again
    assert [e.metrics["round"] for e in events if isinstance(e, ScoresReady)] == [2]
    assert runs.read_rounds(run)[1].finished and not RunFolder(run).scores_stale


def test_a_round_killed_before_training_resumes_the_same_round(run):
    with pytest.raises(Kill):
        for ev in next_round(run, warm_epochs=1):
            if isinstance(ev, RoundStarted):
                raise Kill
    events = list(next_round(run))
    assert [e.round for e in events if isinstance(e, RoundStarted)] == [2]
    assert [r.number for r in runs.read_rounds(run)] == [1, 2]


def test_a_run_folder_of_the_previous_release_is_round_1(trained, tmp_path):
    """What the releases before rounds wrote: no rounds/, no rounds.json, decisions without a round, settings
    without workers and sync_batchnorm (config.json and checkpoint), an edit at training size, no cache; and
    older still: scores.csv without extra_pieces, no 16-bit probability maps."""
    run = tmp_path / "old"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in ("workers", "sync_batchnorm"):
        del config["train"][key], ckpt["config"][key]
    (run / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(ckpt, run / "checkpoint.pt")  # before scores.csv is rewritten below, so the scores are not stale
    rows = (run / "scores.csv").read_text().splitlines()
    header = rows[0].split(",")
    cut = header.index("extra_pieces")
    (run / "scores.csv").write_text("\n".join(",".join(c for j, c in enumerate(r.split(",")) if j != cut)
                                              for r in rows) + "\n")
    for p in (run / "corrected").glob("*_prob16.png"):
        p.unlink()
    shutil.rmtree(run / runs.CACHE)  # nor an on-disk cache: the round reads the originals
    ids = [r.id for r in RunFolder(run).score_rows()]
    old = {"version": 1, "run": "old",
           "decisions": {ids[0]: {"status": "accepted", "reviewer": "ana", "time": "t", "edit": None},
                         ids[1]: {"status": "kept", "reviewer": "ana", "time": "t", "edit": None},
                         ids[2]: {"status": "edited", "reviewer": "ana", "time": "t", "edit": f"edits/{ids[2]}.png"}},
           "log": []}
    drawn = np.zeros((32, 32), np.uint8)
    drawn[8:24, 4:14] = 255
    (run / "edits").mkdir(exist_ok=True)
    atomic_write_png(run / "edits" / f"{ids[2]}.png", drawn)
    (run / "review.json").write_text(json.dumps(old))
    assert ReviewSession.open(run).decision(ids[0])["round"] == 1
    assert [r["round"] for r in describe(run)] == [1]
    before = _bytes(run)
    events = list(next_round(run, warm_epochs=1))
    assert [e.trusted for e in events if isinstance(e, RoundStarted)] == [3]
    assert isinstance(events[-1], ScoresReady) and events[-1].metrics["round"] == 2
    assert RunFolder(run).train_config.workers == 0 and not RunFolder(run).train_config.sync_batchnorm
    assert _bytes(run / "rounds" / "1") == before
    assert json.loads((run / "review.json").read_text()) == old  # read, never rewritten
    assert ReviewSession.open(run).round == 2


def test_a_round_of_a_cached_run_reads_the_cache(tmp_path):
    """A run trained from a data folder streams its round from its cache, as training did: with the data folder
    moved away and the run's display copies gone, the round still trains and rescores."""
    data = write_sample_set(tmp_path / "set", n=12, size=32, noise_ratio=0.0, seed=4)
    run = tmp_path / "run"
    assert cli.main(["train", str(data), "--out", str(run), *TINY]) == 0
    s = ReviewSession.open(run, reviewer="ana")
    s.accept(s.ids[0])
    s.keep(s.ids[1])
    data.rename(tmp_path / "moved")
    shutil.rmtree(run / runs.IMAGES)
    events = list(next_round(run, warm_epochs=1))
    assert [e.trusted for e in events if isinstance(e, RoundStarted)] == [2]
    started = [e for e in events if isinstance(e, Started)]
    assert len(started) == 1 and started[0].n_train == 9
    assert isinstance(events[-1], ScoresReady) and events[-1].metrics["round"] == 2
    assert len(RunFolder(run).score_rows()) == 9 and not RunFolder(run).scores_stale


def test_next_round_refuses_what_it_cannot_do(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert cli.main(["next-round", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "review.json: no decisions yet" in err[0] and "Traceback" not in err[0]
    assert not (run / "rounds").exists() and not (run / "rounds.json").exists()
    with pytest.raises(SystemExit):
        cli.main(["next-round", str(run), "--warm-epochs", "2", "--from-scratch"])
    ReviewSession.open(run, reviewer="ana").keep(RunFolder(run).score_rows()[0].id)
    with runs.writer_lock(run, "train"):
        assert cli.main(["next-round", str(run), "--quiet"]) == 2
    assert "in use by pid" in capsys.readouterr().err


def test_cli_next_round_and_info_end_to_end(run, capsys):
    assert cli.main(["next-round", str(run), "--warm-epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "starting review round 2 (warm start from round 1, 1 epoch(s); 3 trusted; 1 left out)" in out.err
    assert "round 2 scored" in out.out
    assert cli.main(["next-round", str(run), "--from-scratch", "--quiet"]) == 0
    assert RunFolder(run).train_config == RunFolder(run / "rounds" / "1").train_config  # the first round's
    capsys.readouterr()
    assert cli.main(["info", str(run)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(r["round"], r["epochs"], r["warm_epochs"], r["from_scratch"]) for r in shown["rounds"]] == \
        [(1, 3, None, False), (2, 1, 1, False), (3, 3, None, True)]
    assert shown["epochs_done"] == 3 and shown["scored"] and not shown["scores_stale"]
    assert shown["queue_scored_by_round"] == 3
    suspicion = [r.suspicion for r in RunFolder(run).score_rows()]
    threshold = recommended_threshold(suspicion)
    assert shown["queue"] == {"recommended_threshold": pytest.approx(threshold, abs=1e-4), "images": 9,
                              "under_threshold": sum(s < threshold for s in suspicion),
                              "order": queue_order(noise_share(suspicion)),
                              "noise_share": pytest.approx(sum(s >= threshold for s in suspicion) / 9, abs=1e-4),
                              "suggested_keep_ratio": suggested_keep_ratio(
                                  suspicion, RunFolder(run).train_config.keep_ratio),
                              "trained_keep_ratio": 0.5,  # the setting's: keep_auto is off
                              # rounds were trained: a second pass comes before them
                              "second_pass_offered": False, "second_pass_advised": None,
                              "size_offset": 0.0,  # the default calibrates; no bias found on 9 images
                              "unreviewed": default_unreviewed(suspicion)}
    assert (runs.round_dir(run, 2) / runs.SCORING).is_file()  # every round keeps what its scoring found


def test_score_keeps_the_corrections_a_reviewer_accepted(run, capsys):
    """`crl-napari score` after a round rescores with the round's nets, yet an accepted correction keeps the mask
    the reviewer accepted (round 1's), as the round itself kept it; unreadable decisions stop it, naming them."""
    s = ReviewSession.open(run)
    accepted, pending = s.ids[0], s.ids[6]
    seen = (run / "corrected" / f"{accepted}_prob16.png").read_bytes()
    assert cli.main(["next-round", str(run), "--warm-epochs", "1", "--quiet"]) == 0
    assert (run / "corrected" / f"{accepted}_prob16.png").read_bytes() == seen
    round2 = (run / "corrected" / f"{pending}_prob16.png").read_bytes()
    (run / "corrected" / f"{pending}_prob16.png").unlink()
    capsys.readouterr()

    assert cli.main(["score", str(run)]) == 0
    assert (run / "corrected" / f"{accepted}_prob16.png").read_bytes() == seen  # not round 2's
    assert (run / "corrected" / f"{pending}_prob16.png").read_bytes() == round2  # rescored
    # the row of an accepted correction describes the map on disk (what export takes), not the nets' new one
    kept = RunFolder(run).given(accepted).copy()
    kept[0:3, 0:3] = kept[0:3, 29:32] = kept[29:32, 0:3] = True  # three specks in the corners, which clean-up keeps
    atomic_write_png(run / "corrected" / f"{accepted}.png", kept.astype(np.uint8) * 255)
    assert cli.main(["score", str(run)]) == 0
    row = next(r for r in RunFolder(run).score_rows() if r.id == accepted)
    g = RunFolder(run).given(accepted)
    assert row.dice_given_corrected == pytest.approx(2 * (g & kept).sum() / (g.sum() + kept.sum()), abs=1e-5)
    assert row.dice_given_corrected < 1
    assert row.extra_pieces == extra_pieces(clean_mask(kept)) >= 3
    assert np.array_equal(RunFolder(run).corrected(accepted), kept)  # still the accepted map
    (run / "corrected" / f"{accepted}.png").unlink()  # an accepted map that is gone is written again
    assert cli.main(["score", str(run)]) == 0
    assert (run / "corrected" / f"{accepted}.png").is_file()

    (run / "review.json").write_text("{not json")
    scores = (run / "scores.csv").read_bytes()
    capsys.readouterr()
    assert cli.main(["score", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "review.json: not a readable review file" in err[0], err
    assert (run / "review.json").read_text() == "{not json" and (run / "scores.csv").read_bytes() == scores
