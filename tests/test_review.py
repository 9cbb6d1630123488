"""ReviewSession and the atomic writers, on a real run folder built from arrays (no training needed).

``make_run`` writes exactly what ``pipeline.train_run`` leaves (docs/internals.md): config.json, cases.csv,
images/, given/, scores.csv, corrected/ (+ _prob, _unc), history.csv, and a source data folder with 64x64
originals for a run at 32x32. test_export.py reuses it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest

from crl_napari import atomic
from crl_napari.review import ReviewError, ReviewSession, read_scores

ORIG, SIZE = 64, 32
TRAIN_IDS = [f"case{i:02d}" for i in range(6)]
TEST_IDS = ["case06", "case07"]
# suspicion per training id; rank order = descending suspicion
SUSPICION = {"case00": 0.9, "case01": 0.1, "case02": 0.7, "case03": 0.3, "case04": 0.5, "case05": 0.2}
RANKED = sorted(SUSPICION, key=lambda i: -SUSPICION[i])  # case00, case02, case04, case03, case05, case01


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(n):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def make_run(base: Path) -> SimpleNamespace:
    """A scored run folder + its source data; returns paths and the arrays written (for pixel checks)."""
    rng = np.random.default_rng(0)
    src, run = base / "data", base / "run"
    for d in (src / "images", src / "masks", run / "images", run / "given", run / "corrected"):
        d.mkdir(parents=True)
    orig_masks, corrected, given, image_paths, mask_paths = {}, {}, {}, {}, {}
    split_rows, case_rows = [], []
    for k, cid in enumerate(TRAIN_IDS + TEST_IDS):
        split = "train" if cid in TRAIN_IDS else "test"
        img = (rng.random((ORIG, ORIG)) * 200 + np.linspace(0, 55, ORIG)[None]).astype(np.uint8)
        mask = _ellipse(ORIG, ORIG, 30 + k, 28 + k, 14 + k % 3, 10 + k % 4)
        ext = ".bmp" if cid == "case01" else ".png"
        image_paths[cid] = src / "images" / f"{cid}{ext}"
        iio.imwrite(image_paths[cid], img)
        mask_name = f"{cid}_mask.png" if cid == "case03" else f"{cid}.png"
        mask_paths[cid] = src / "masks" / mask_name
        # case02's mask is stored as 0/1 (binarised to 0/255 on export); the others as 0/255
        iio.imwrite(mask_paths[cid], mask.astype(np.uint8) * (1 if cid == "case02" else 255))
        orig_masks[cid] = mask
        split_rows.append({"id": cid, "split": split})
        small = mask[::2, ::2]
        corrupted = cid in ("case00", "case02")
        given[cid] = _dilate(small, 3) if corrupted else small
        # a corrected mask that differs from both the given and the (down-sampled) original mask
        corrected[cid] = _ellipse(SIZE, SIZE, 15, 14 + k % 3, 8, 6)
        case_rows.append({
            "id": cid, "split": split, "image_path": str(image_paths[cid]), "mask_path": str(mask_paths[cid]),
            "orig_h": ORIG, "orig_w": ORIG, "corrupted": int(corrupted),
            "noise_op": "dilate" if corrupted else "none", "noise_n": 3 if corrupted else 0,
        })
        iio.imwrite(run / "images" / f"{cid}.png", img[::2, ::2])
        iio.imwrite(run / "given" / f"{cid}.png", given[cid].astype(np.uint8) * 255)
        if split == "train":
            iio.imwrite(run / "corrected" / f"{cid}.png", corrected[cid].astype(np.uint8) * 255)
            iio.imwrite(run / "corrected" / f"{cid}_prob.png", (corrected[cid] * 230).astype(np.uint8))
            unc = (rng.random((SIZE, SIZE)) * 40).astype(np.uint8)
            iio.imwrite(run / "corrected" / f"{cid}_unc.png", unc)
    _write_csv(src / "split.csv", ["id", "split"], split_rows)
    _write_csv(run / "cases.csv", ["id", "split", "image_path", "mask_path", "orig_h", "orig_w", "corrupted",
                                   "noise_op", "noise_n"], case_rows)
    score_rows = [{"id": cid, "rank": r + 1, "suspicion": f"{SUSPICION[cid]:.6f}",
                   "uncertainty": f"{SUSPICION[cid] / 3:.6f}", "disagreement": "0.050000",
                   "dice_given_corrected": f"{1 - SUSPICION[cid]:.6f}",
                   "corrupted": int(cid in ("case00", "case02"))}
                  for r, cid in enumerate(RANKED)]
    _write_csv(run / "scores.csv", ["id", "rank", "suspicion", "uncertainty", "disagreement",
                                    "dice_given_corrected", "corrupted"], score_rows)
    history = {"epoch": 0, "stage": 1, "loss_0": 0.5, "loss_1": 0.5, "loss_2": 0.5, "selected": 0.5,
               "lr": 0.01, "seconds": 1, "val_dice": ""}
    _write_csv(run / "history.csv", list(history), [history])
    (run / "config.json").write_text(json.dumps({
        "format": 1, "train": {"strategy": "crl", "epochs": 1},
        "data": {"root": str(src.resolve()), "size": SIZE, "simulate_noise": 0.25, "noise_seed": 0,
                 "skipped": []},
        "versions": {}, "created": "2025-01-01T00:00:00+00:00",
    }))
    return SimpleNamespace(run=run, src=src, orig_masks=orig_masks, corrected=corrected, given=given,
                           image_paths=image_paths, mask_paths=mask_paths)


@pytest.fixture
def rf(tmp_path: Path) -> SimpleNamespace:
    return make_run(tmp_path)


def _load(run: Path) -> dict:
    data = json.loads((run / "review.json").read_text())
    assert data["version"] == 1 and data["run"] == run.name
    # "unreviewed": the queue the review decides in, fixed from the first save on (ReviewSession.unreviewed)
    assert set(data) == {"version", "run", "unreviewed", "decisions", "comments", "log"}
    return data


# ------------------------------------------------------------------------------------------------ basics


def test_open_rank_order_rows_and_counts(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    assert s.ids == RANKED
    row = s.rows[0]
    assert row["id"] == "case00" and row["rank"] == 1 and row["suspicion"] == pytest.approx(0.9)
    assert isinstance(row["uncertainty"], float) and row["corrupted"] is True
    assert s.counts() == {"pending": 6, "accepted": 0, "kept": 0, "edited": 0, "flagged": 0, "excluded": 0,
                          "total": 6, "reviewed": 0}
    assert all(s.status(i) == "pending" and s.decision(i) is None for i in s.ids)
    assert not (rf.run / "review.json").exists()  # opening writes nothing
    with pytest.raises(KeyError, match="nope"):
        s.status("nope")
    with pytest.raises(KeyError, match="case06"):  # a test-split case is not reviewed
        s.accept("case06")


def test_missing_scores_and_unsafe_ids_are_refused(rf):
    (rf.run / "scores.csv").rename(rf.run / "scores.bak")
    with pytest.raises(ReviewError, match="scores.csv"):
        ReviewSession.open(rf.run)
    text = (rf.run / "scores.bak").read_text().replace("case05", "../../x")
    (rf.run / "scores.csv").write_text(text)
    with pytest.raises(ReviewError, match=r"unsafe image id '\.\./\.\./x'"):
        ReviewSession.open(rf.run)


def test_decisions_persist_and_reopen_restores_all(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    s.accept("case00")
    s.keep("case02")
    drawn = np.zeros((SIZE, SIZE), bool)
    drawn[4:20, 6:18] = True
    s.edit("case04", drawn)
    s.reviewer = "bo"
    s.accept("case03")
    before = {i: s.decision(i) for i in s.ids}
    s2 = ReviewSession.open(rf.run, reviewer="cy")
    assert {i: s2.decision(i) for i in s2.ids} == before
    assert [s2.status(i) for i in RANKED] == ["accepted", "kept", "edited", "accepted", "pending", "pending"]
    d = s2.decision("case03")
    assert d["reviewer"] == "bo" and d["edit"] is None
    t = datetime.fromisoformat(d["time"])
    assert t.tzinfo is not None and t.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - t).total_seconds()) < 60
    assert s2.decision("case04")["edit"] == "edits/case04.png"
    assert s2.counts() == {"pending": 2, "accepted": 2, "kept": 1, "edited": 1, "flagged": 0, "excluded": 0,
                           "total": 6, "reviewed": 4}


def test_edit_writes_the_mask(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    drawn = np.zeros((SIZE, SIZE), np.uint8)
    drawn[3:9, 2:30] = 1  # 0/1 uint8 as a napari Labels layer gives
    s.edit("case02", drawn)
    saved = iio.imread(rf.run / "edits" / "case02.png")
    assert saved.dtype == np.uint8 and saved.shape == (SIZE, SIZE)
    assert set(np.unique(saved)) == {0, 255}
    np.testing.assert_array_equal(saved > 0, drawn > 0)
    with pytest.raises(ValueError, match="shape"):  # issue 11: the original size or the training size, no other
        s.edit("case02", np.zeros((ORIG + 3, ORIG), bool))
    with pytest.raises(KeyError, match="zzz"):
        s.edit("zzz", drawn)
    assert s.status("case02") == "edited" and len(_load(rf.run)["log"]) == 1
    s.edit("case02", np.ones((ORIG, ORIG), bool))  # drawn at the original size (cases.csv's orig_h x orig_w)
    assert iio.imread(rf.run / "edits" / "case02.png").shape == (ORIG, ORIG)


def test_review_json_is_valid_after_every_call(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    drawn = np.ones((SIZE, SIZE), bool)
    calls = [
        lambda: s.accept("case00"), lambda: s.keep("case01"), lambda: s.edit("case02", drawn),
        lambda: s.reset("case01"), lambda: s.accept("case02"), lambda: s.undo(), lambda: s.keep("case05"),
        lambda: s.undo(), lambda: s.undo(),
    ]
    for n, call in enumerate(calls, start=1):
        call()
        data = _load(rf.run)
        assert {k: v["status"] for k, v in data["decisions"].items()} == {
            i: s.status(i) for i in s.ids if s.status(i) != "pending"
        }, f"after call {n}"
        for entry in data["log"]:
            assert {"id", "before", "after", "reviewer", "time"} <= set(entry)
    leftovers = [p.name for p in rf.run.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_undo_including_after_reopen(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    assert s.undo() is None
    s.accept("case00")
    first = s.decision("case00")
    s.reviewer = "bo"
    s.keep("case00")  # changes the decision, remembers the previous one
    s.keep("case01")
    s.reset("case01")
    s2 = ReviewSession.open(rf.run, reviewer="cy")
    assert s2.undo() == "case01"  # undo the reset: back to kept
    assert s2.status("case01") == "kept"
    assert s2.undo() == "case01"
    assert s2.status("case01") == "pending"
    s3 = ReviewSession.open(rf.run)
    assert s3.undo() == "case00"
    assert s3.decision("case00") == first  # the previous decision with its reviewer and time
    assert s3.undo() == "case00"
    assert s3.status("case00") == "pending"
    assert s3.undo() is None
    data = _load(rf.run)
    assert data["decisions"] == {} and data["log"] == []


def test_undo_of_edits_restores_the_previous_drawing(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    a = np.zeros((SIZE, SIZE), bool)
    a[:10] = True
    b = np.zeros((SIZE, SIZE), bool)
    b[:, :5] = True
    target = rf.run / "edits" / "case03.png"
    s.keep("case03")
    s.edit("case03", a)
    bytes_a = target.read_bytes()
    s.edit("case03", b)
    np.testing.assert_array_equal(iio.imread(target) > 0, b)
    s = ReviewSession.open(rf.run, reviewer="ana")  # undo works from disk alone
    assert s.undo() == "case03"
    assert target.read_bytes() == bytes_a and s.status("case03") == "edited"
    assert s.undo() == "case03"
    assert not target.exists() and s.status("case03") == "kept"
    assert list((rf.run / "edits" / ".undo").iterdir()) == []  # backups are cleaned up once used


def test_reset_next_pending_and_no_op_repeats(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    assert s.next_pending() == "case00"
    s.accept("case00")
    s.accept("case00")  # same decision by the same reviewer: no new log entry
    assert len(s.log) == 1
    s.keep("case02")
    assert s.next_pending() == "case04"
    assert s.next_pending(after="case04") == "case03"
    assert s.next_pending(after="case01") == "case04"  # wraps around to the first pending
    s.reset("case00")
    s.reset("case00")  # already pending: nothing to record
    assert len(s.log) == 3
    assert s.next_pending(after="case01") == "case00"
    for i in s.ids:
        s.keep(i)
    assert s.next_pending() is None
    assert s.counts()["reviewed"] == 6


def test_default_reviewer_falls_back_to_unknown(rf, monkeypatch):
    import getpass

    def boom() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", boom)
    s = ReviewSession.open(rf.run)
    assert s.reviewer == "unknown"
    with pytest.raises(ValueError):
        s.reviewer = "  "


@pytest.mark.parametrize("content, what", [
    ('{"version": 1, "decisions": {"case00": {"status": "accep', "not a readable review file"),
    ('{"version": 7, "decisions": {}, "log": []}', "unsupported review file version 7"),
    ('{"version": 1, "decisions": {"case00": {"status": "maybe", "reviewer": "a", "time": "t"}}, "log": []}',
     "unknown status 'maybe'"),
    ('{"version": 1, "decisions": {"case00": {"status": "edited", "reviewer": "a", "time": "t", '
     '"edit": "../../etc/passwd"}}, "log": []}', "must point to 'edits/case00.png'"),
    ('[1, 2]', "JSON object"),
])
def test_corrupt_review_json_is_never_overwritten(rf, content, what):
    path = rf.run / "review.json"
    path.write_text(content)
    with pytest.raises(ReviewError) as err:
        ReviewSession.open(rf.run)
    assert str(path) in str(err.value) and what in str(err.value)
    assert path.read_text() == content  # untouched
    s = ReviewSession.open(rf.run, reviewer="ana", recover=True)
    backups = list(rf.run.glob("review.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == content
    assert _load(rf.run)["decisions"] == {} and s.counts()["pending"] == 6
    s.accept("case00")
    assert ReviewSession.open(rf.run).status("case00") == "accepted"


# --------------------------------------------------------------------------------------------- atomic


def test_atomic_writers_replace_whole_files(tmp_path):
    p = tmp_path / "a.json"
    atomic.atomic_write_json(p, {"x": [1, 2]})
    assert json.loads(p.read_text()) == {"x": [1, 2]}
    atomic.atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic.atomic_write_png(tmp_path / "m.png", np.eye(4, dtype=bool))
    np.testing.assert_array_equal(iio.imread(tmp_path / "m.png"), np.eye(4, dtype=np.uint8) * 255)
    with pytest.raises(ValueError):  # not JSON: refused before the disk is touched
        atomic.atomic_write_json(p, {"x": float("nan")})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic.atomic_write_bytes(tmp_path / "no" / "x.bin", b"1")
    assert json.loads(p.read_text()) == {"x": [1, 2]}
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json", "m.png", "t.txt"]


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "review.json"
    atomic.atomic_write_json(p, {"old": True})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_json(p, {"new": True})
    assert json.loads(p.read_text()) == {"old": True}
    assert [q.name for q in tmp_path.iterdir()] == ["review.json"]


def test_failed_save_rolls_back_the_session(rf, monkeypatch):
    s = ReviewSession.open(rf.run, reviewer="ana")
    s.accept("case00")
    from crl_napari import review

    def fail(path, obj):
        raise OSError("read-only file system")

    monkeypatch.setattr(review, "atomic_write_json", fail)
    with pytest.raises(OSError):
        s.keep("case00")
    with pytest.raises(OSError):
        s.edit("case02", np.ones((SIZE, SIZE), bool))
    assert s.status("case00") == "accepted" and s.status("case02") == "pending" and len(s.log) == 1
    assert not (rf.run / "edits" / "case02.png").exists()
    ids = s.ids
    assert s.unreviewed == "keep" and s.unreviewed_chosen  # the fixture's default, fixed by the first decision
    with pytest.raises(OSError):
        s.choose_unreviewed("accept_above")  # the choice, like a decision, is on disk or not made
    assert s.ids == ids and s.unreviewed == "keep"
    assert _load(rf.run)["decisions"]["case00"]["status"] == "accepted"


def test_a_failed_first_save_leaves_the_default_unfixed(rf, monkeypatch):
    """The first decision saved fixes the Unreviewed default; one that never reached the disk fixes nothing."""
    s = ReviewSession.open(rf.run, reviewer="ana")
    assert not s.unreviewed_chosen
    from crl_napari import review

    real = review.atomic_write_json

    def fail(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(review, "atomic_write_json", fail)
    with pytest.raises(OSError):
        s.accept("case00")
    assert not s.unreviewed_chosen and s.status("case00") == "pending"
    monkeypatch.setattr(review, "atomic_write_json", real)
    s.accept("case00")
    assert s.unreviewed_chosen and _load(rf.run)["unreviewed"] == s.unreviewed


# ------------------------------------------------------------------------------------------ kill -9


_CHILD = r"""
import sys
import numpy as np
from crl_napari.review import ReviewSession

s = ReviewSession.open(sys.argv[1], reviewer="child")
mask = np.eye(8, dtype=bool)
print("ready", flush=True)
for i, image_id in enumerate(s.ids):
    if i % 3 == 0:
        s.accept(image_id); status = "accepted"
    elif i % 3 == 1:
        s.keep(image_id); status = "kept"
    else:
        s.edit(image_id, mask); status = "edited"
    print(image_id, status, flush=True)
print("done", flush=True)
"""


def test_sigkill_mid_review_loses_nothing_reported(tmp_path):
    run = tmp_path / "run"
    (run / "given").mkdir(parents=True)
    ids = [f"x{i:03d}" for i in range(120)]
    for i in ids[2::3]:  # the ones the child edits need their given mask (for the shape check)
        iio.imwrite(run / "given" / f"{i}.png", np.zeros((8, 8), np.uint8))
    _write_csv(run / "scores.csv", ["id", "rank", "suspicion"],
               [{"id": i, "rank": r + 1, "suspicion": 1 - r / 1000} for r, i in enumerate(ids)])
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.05, 0.6)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(run)], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
    finally:
        child.kill()
        child.wait()
    reported = dict(line.split() for line in rest.splitlines() if line and line != "done")
    msg = f"seed={seed} delay={delay:.3f}s reported={len(reported)}"
    data = json.loads((run / "review.json").read_text()) if reported else None
    if data is None:
        return  # killed before the first decision: nothing was promised
    decisions = data["decisions"]
    for image_id, status in reported.items():
        assert decisions[image_id]["status"] == status, msg
    assert len(decisions) - len(reported) in (0, 1), msg  # at most the one in flight when killed
    assert len(data["log"]) == len(decisions), msg
    for d in decisions.values():
        if d["status"] == "edited":
            np.testing.assert_array_equal(iio.imread(run / d["edit"]) > 0, np.eye(8, dtype=bool))
    s = ReviewSession.open(run)  # and the review goes on
    assert s.counts()["reviewed"] == len(decisions)
    assert s.undo() is not None


def test_read_scores_parses_types(rf):
    rows = read_scores(rf.run)
    assert [r["id"] for r in rows] == RANKED
    assert all(isinstance(r["rank"], int) and isinstance(r["dice_given_corrected"], float) for r in rows)


# ------------------------------------------------------------------------ statuses, comments, batches (#13)


def test_flag_exclude_and_comments_persist(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    s.flag("case00")
    s.exclude("case02")
    s.set_comment("case02", "  rotated film; ask Ben  ")
    s.set_comment("case04", "check the apex")
    data = _load(rf.run)
    assert data["decisions"]["case00"]["status"] == "flagged" and data["decisions"]["case02"]["status"] == "excluded"
    assert data["comments"] == {"case02": "rotated film; ask Ben", "case04": "check the apex"}
    s.set_comment("case04", "   ")  # blank removes it
    s2 = ReviewSession.open(rf.run, reviewer="ben")
    assert s2.comment("case02") == "rotated film; ask Ben" and s2.comment("case04") == ""
    assert s2.counts()["flagged"] == 1 and s2.counts()["excluded"] == 1 and s2.counts()["pending"] == 4
    assert s2.next_pending() == "case04"  # flagged / excluded images have been looked at
    assert s2.undo() == "case02" and s2.status("case02") == "pending"  # comments are not undo steps
    assert s2.comment("case02") == "rotated film; ask Ben"
    with pytest.raises(ValueError, match="at most"):
        s2.set_comment("case00", "x" * 5000)


def test_a_review_json_without_comments_or_new_statuses_still_loads(rf):
    """Files written before issue 13 (no "comments", no "batch" in the log) open unchanged."""
    old = {"version": 1, "run": rf.run.name,
           "decisions": {"case00": {"status": "kept", "reviewer": "ana", "time": "t", "edit": None}},
           "log": [{"id": "case00", "before": None,
                    "after": {"status": "kept", "reviewer": "ana", "time": "t", "edit": None},
                    "reviewer": "ana", "time": "t", "edit_backup": None}]}
    (rf.run / "review.json").write_text(json.dumps(old))
    s = ReviewSession.open(rf.run, reviewer="ana")
    assert s.status("case00") == "kept" and s.comment("case00") == ""
    assert s.undo() == "case00" and s.status("case00") == "pending"
    bad = dict(old, comments={"case00": 3})
    (rf.run / "review.json").write_text(json.dumps(bad))
    with pytest.raises(ReviewError, match="comment for 'case00' must be a string"):
        ReviewSession.open(rf.run)


def test_a_batch_is_one_save_and_one_undo_step(rf):
    s = ReviewSession.open(rf.run, reviewer="ana")
    s.keep("case01")
    s.accept("case00")
    changed = s.decide_many(["case00", "case02", "case04", "case01"], "accepted")
    assert changed == ["case02", "case04", "case01"]  # case00 was already accepted by ana
    data = _load(rf.run)
    assert [data["decisions"][i]["status"] for i in ("case00", "case02", "case04", "case01")] == ["accepted"] * 4
    tokens = {e["batch"] for e in data["log"][-3:]}
    assert len(tokens) == 1 and None not in tokens
    s2 = ReviewSession.open(rf.run, reviewer="ana")  # the batch survives reopening as one step
    assert s2.undo_step() == ["case02", "case04", "case01"]
    assert [s2.status(i) for i in ("case00", "case02", "case04", "case01")] == ["accepted", "pending", "pending",
                                                                                "kept"]
    assert s2.undo() == "case00" and s2.status("case00") == "pending"
    assert s2.decide_many(["case03"], "flagged") == ["case03"] and s2.status("case03") == "flagged"
    with pytest.raises(ValueError, match="batch"):
        s2.decide_many(["case03"], "edited")
    with pytest.raises(KeyError):
        s2.decide_many(["case03", "case06"], "kept")  # one unknown id: nothing changes
    assert s2.status("case03") == "flagged"


def test_export_leaves_excluded_images_out_and_treats_flagged_as_pending(rf, tmp_path):
    from crl_napari.data import load_dataset
    from crl_napari.export import export

    s = ReviewSession.open(rf.run, reviewer="ana")
    s.exclude("case02")
    s.set_comment("case02", "film rotated, lungs cut off")
    s.flag("case00")  # suspicion 0.9: the accept_above policy gives it the correction, as if pending
    s.accept("case04")
    report = export(rf.run, tmp_path / "clean", unreviewed="accept_above", threshold=0.8)
    assert report.n_images == 7 and report.excluded == 1 and "1 excluded" in report.summary()
    assert report.counts["corrected_by_policy"] == 1 and report.counts["corrected"] == 1
    with open(tmp_path / "clean" / "manifest.csv", newline="") as fh:
        man = {r["id"]: r for r in csv.DictReader(fh)}
    assert man["case02"]["status"] == "excluded" and man["case02"]["comment"] == "film rotated, lungs cut off"
    assert man["case02"]["image_file"] == man["case02"]["mask_file"] == man["case02"]["mask_source"] == ""
    assert not list((tmp_path / "clean").glob("*/case02*"))
    assert man["case00"]["status"] == "flagged" and man["case00"]["mask_source"] == "corrected_by_policy"
    assert man["case04"]["comment"] == ""
    ids = {c.id for c in load_dataset(tmp_path / "clean")}  # the cleaned set loads without the excluded one
    assert "case02" not in ids and len(ids) == 7


# -------------------------------------------------------------------------------- what unreviewed images get


def rescore(run: Path, order: list[str], suspicion: dict[str, float] | None = None) -> None:
    """Rewrite scores.csv's rank column so that ``order`` is its queue (as scoring.rank's recommended-policy queue
    differs from the plain suspicion order), and its suspicions when given (their uncertainty a third of them)."""
    with open(run / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["rank"] = str(order.index(r["id"]) + 1)
        if suspicion is not None:
            r["suspicion"], r["uncertainty"] = f"{suspicion[r['id']]:.6f}", f"{suspicion[r['id']] / 3:.6f}"
    _write_csv(run / "scores.csv", list(rows[0]), rows)


#: scores as nets that tell right masks from wrong ones give them: a few per cent, or tens of per cent
TELLING = {"case00": 0.40, "case01": 0.02, "case02": 0.30, "case03": 0.03, "case04": 0.35, "case05": 0.01}
BY_TELLING = sorted(TELLING, key=lambda i: -TELLING[i])
POLICY_QUEUE = ["case03", "case01", "case05", "case04", "case00", "case02"]  # under the threshold first: not BY_TELLING


def test_the_queue_is_ordered_for_what_the_export_gives_unreviewed_images(rf):
    """Scores from nets that can tell right masks from wrong: the recommended policy's queue (scores.csv's rank)
    by default; chosen "keep", the most suspicious first (rows aligned), the choice in review.json surviving a
    reopen, every decision kept; a hostile choice in the file is refused naming it, the file untouched."""
    from crl_napari.scoring import DEFAULT_UNREVIEWED

    rescore(rf.run, POLICY_QUEUE, TELLING)
    from crl_napari.rounds import info

    s = ReviewSession.open(rf.run, reviewer="ana")
    assert s.unreviewed == DEFAULT_UNREVIEWED == "accept_above" and not s.unreviewed_chosen
    assert s.ids == POLICY_QUEUE and [r["id"] for r in s.rows] == POLICY_QUEUE
    assert info(rf.run)["queue"]["unreviewed"] == "accept_above"  # `crl-napari info` says it
    s.accept("case05")
    s.choose_unreviewed("keep")
    assert info(rf.run)["queue"]["unreviewed"] == "keep"
    assert s.ids == BY_TELLING and [r["id"] for r in s.rows] == BY_TELLING  # most suspicious first
    assert s.column("suspicion") == [pytest.approx(TELLING[i]) for i in BY_TELLING]
    data = json.loads((rf.run / "review.json").read_text())
    assert data["unreviewed"] == "keep" and data["decisions"]["case05"]["status"] == "accepted"
    again = ReviewSession.open(rf.run, reviewer="bo")
    assert again.unreviewed == "keep" and again.unreviewed_chosen and again.ids == BY_TELLING
    assert again.status("case05") == "accepted" and again.next_pending() == BY_TELLING[0]
    again.choose_unreviewed("accept_above")
    assert again.ids == POLICY_QUEUE and ReviewSession.open(rf.run).ids == POLICY_QUEUE
    with pytest.raises(ValueError, match="unreviewed must be one of"):
        again.choose_unreviewed("accept_all")
    path = rf.run / "review.json"
    text = path.read_text().replace('"unreviewed": "accept_above"', '"unreviewed": "accept_all"')
    path.write_text(text)
    with pytest.raises(ReviewError) as err:
        ReviewSession.open(rf.run)
    assert str(path) in str(err.value) and "'unreviewed' must be one of accept_above, keep" in str(err.value)
    assert path.read_text() == text


def test_nets_that_cannot_tell_right_from_wrong_leave_unreviewed_masks_as_given_by_default(rf):
    """This run's scores (right masks at 0.1-0.3 from the nets' corrections: nets that cannot yet tell) default to
    keeping every unreviewed mask (review.default_unreviewed), so the queue is the most suspicious first; the
    recommended policy can still be chosen."""
    from crl_napari.review import default_unreviewed

    assert default_unreviewed(list(SUSPICION.values())) == "keep"
    assert default_unreviewed(list(TELLING.values())) == "accept_above"
    assert default_unreviewed([None, None]) == "keep"
    s = ReviewSession.open(rf.run, reviewer="ana")
    assert s.unreviewed == "keep" and not s.unreviewed_chosen and s.ids == RANKED
    s.choose_unreviewed("accept_above")
    assert s.unreviewed_chosen and s.ids == RANKED  # scores.csv's rank: the same order here


def test_the_queue_a_review_started_deciding_in_stays_when_new_scores_would_default_otherwise(rf):
    """Nothing chosen: the default follows the scores (a reopen after new scores may change it) until the first
    decision; from then on review.json holds the queue the reviewer has been deciding in, whatever a later
    scoring (a round) would default to."""
    rescore(rf.run, POLICY_QUEUE, TELLING)  # nets that can tell: the recommended policy's queue
    assert ReviewSession.open(rf.run).unreviewed == "accept_above"
    rescore(rf.run, RANKED, SUSPICION)  # new scores from nets that cannot: nothing was decided, the default follows
    assert ReviewSession.open(rf.run).unreviewed == "keep"
    rescore(rf.run, POLICY_QUEUE, TELLING)
    s = ReviewSession.open(rf.run, reviewer="ana")
    s.keep(s.ids[0])  # the first decision, in the recommended policy's queue
    assert json.loads((rf.run / "review.json").read_text())["unreviewed"] == "accept_above"
    rescore(rf.run, RANKED, SUSPICION)
    again = ReviewSession.open(rf.run, reviewer="ana")
    assert again.unreviewed == "accept_above" and again.unreviewed_chosen and again.status(POLICY_QUEUE[0]) == "kept"
