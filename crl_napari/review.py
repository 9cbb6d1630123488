"""The radiologist's review of a scored run: one decision per training image, saved after every change.

A :class:`ReviewSession` sits on a run folder (layout in docs/internals.md). Each image listed in
``RUN/scores.csv`` is, at any moment, in one of six states:

* ``"pending"``  - not looked at yet (no entry in the decisions);
* ``"accepted"`` - the corrected mask ``RUN/corrected/<id>.png`` replaces the given one;
* ``"kept"``     - the given (original) mask is right after all;
* ``"edited"``   - the reviewer drew the mask; it is stored as ``RUN/edits/<id>.png`` (0/255);
* ``"flagged"``  - a second opinion is wanted; the export treats it as pending (it gets what unreviewed
  images get);
* ``"excluded"`` - a bad radiograph: left out of the export and listed in its manifest as excluded.

Each decision records the review ``"round"`` whose scores the reviewer saw (runs.current_round; absent in
files written before rounds: round 1). Each image may also carry a free-text comment (``"comments"`` in
review.json; files without it load). Comments are notes, not decisions: they are saved at once but are not
part of the undo log. A batch of decisions (:meth:`ReviewSession.decide_many`) is logged with one shared
``"batch"`` token and undone as one step.

Every change is written at once to ``RUN/review.json`` with :func:`crl_napari.atomic.atomic_write_json`, so a
crash, a killed process or a closed laptop never loses more than the change in flight and never leaves a
half-written file. The file also holds the change log, so :meth:`ReviewSession.undo` works after reopening::

    {"version": 1, "run": "<run folder name>",
     "decisions": {"<id>": {"status": "accepted", "reviewer": "ana", "time": "2025-01-31T10:00:00+00:00",
                            "edit": null}},
     "comments": {"<id>": "rotated; ask Ben"},
     "log": [{"id": "<id>", "before": null, "after": {...}, "reviewer": "ana", "time": "...",
              "edit_backup": null, "batch": null}]}

A ``review.json`` that cannot be read or validated is never overwritten silently: opening raises a
:class:`ReviewError` naming the file; ``recover=True`` renames it to ``review.json.corrupt-<time>`` first.

Edits and undo: the mask a new edit replaces (if ``edits/<id>.png`` already existed) is copied to
``edits/.undo/<id>.<token>.png`` and the log entry points to it, so undoing an edit restores the previous
drawing byte for byte. Known limit: a crash between writing ``edits/<id>.png`` and writing ``review.json``
leaves the new drawing on disk while the decision is still the previous one. Two processes reviewing the same
run at the same time are not coordinated (the last writer wins).
"""

from __future__ import annotations

import copy
import getpass
import os
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import ids, runs
from .atomic import atomic_write_json, fsync_dir

__all__ = [
    "REVIEW_FILE",
    "REVIEW_VERSION",
    "STATUSES",
    "BATCH_STATUSES",
    "ReviewError",
    "ReviewSession",
    "check_id",
    "default_unreviewed",
    "read_scores",
]

from .keep_estimate import nets_can_tell
from .review_edits import EditFiles
from .review_file import (  # noqa: F401  (re-exported: the statuses and ReviewError are review's API)
    _DECIDED,
    BATCH_STATUSES,
    EDITS_DIR,
    MAX_COMMENT,
    REVIEW_FILE,
    REVIEW_VERSION,
    SCORES_FILE,
    STATUSES,
    UNDO_DIR,
    ReviewError,
    check_id,
)
from .review_file import read as read_review_file
from .review_log import ChangeLog, now
from .scoring import DEFAULT_UNREVIEWED, UNREVIEWED, rank


def _queue(rows: list[dict[str, Any]], unreviewed: str) -> list[dict[str, Any]]:
    """``rows`` (scores.csv's, in any order) in the queue's order for the export's choice ``unreviewed``: their rank
    column for the recommended policy (scoring.rank wrote it), scoring.rank's keep queue from their scores else."""
    if unreviewed == DEFAULT_UNREVIEWED:
        return sorted(rows, key=lambda r: r["rank"])
    nan = float("nan")
    order = rank(np.array([nan if r["suspicion"] is None else r["suspicion"] for r in rows]),
                 np.array([nan if r["uncertainty"] is None else r["uncertainty"] for r in rows]),
                 unreviewed=unreviewed)
    return [rows[i] for i in np.argsort(order, kind="stable")]


def default_unreviewed(suspicion) -> str:
    """What the export gives images nobody reviewed when the review chose nothing: the recommended policy
    (scoring.DEFAULT_UNREVIEWED) where the nets can tell right masks from wrong ones (keep_estimate.nets_can_tell),
    else the given masks: barely trained nets find every mask wrong, and their corrections are no better.

    Why the recommended policy: on Shenzhen with nobody reviewing it exported 0.961 / 0.982 / 0.990 at 75 / 50 / 25 %
    noise against the given masks' 0.81 / 0.87 / 0.94, 0.993 against 0.975 at 10 %; on masks that were all right
    (0 % noise) it replaced about a fifth of them by corrections, 0.994 against 1.0
    (benchmarks/results/native_noise.md, seeds 0-2)."""
    s = np.array([np.nan if v is None else v for v in suspicion], dtype=np.float64)
    return DEFAULT_UNREVIEWED if nets_can_tell(s[np.isfinite(s)]) else "keep"


def default_reviewer() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (containers): KeyError, OSError, ImportError
        return "unknown"
    return name or "unknown"


def _current_round(run_dir: Path) -> int:
    try:
        return runs.current_round(run_dir)
    except runs.RunError as exc:
        raise ReviewError(str(exc)) from None


def read_scores(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``RUN/scores.csv`` sorted by rank: id (str), rank (int), the scores as floats (None if
    empty), corrupted as bool (None if absent/empty). Read and checked by the run folder gateway
    (:meth:`crl_napari.runs.RunFolder.score_rows`); errors name the file and line."""
    try:
        rows = runs.read_score_rows(run_dir)
    except (runs.RunError, ids.UnsafeIdError) as exc:
        raise ReviewError(str(exc)) from None
    with runs.paused_gc():
        return [{"id": r.id, "rank": r.rank, "suspicion": r.suspicion, "uncertainty": r.uncertainty,
                 "disagreement": r.disagreement, "dice_given_corrected": r.dice_given_corrected,
                 "corrupted": r.corrupted, "extra_pieces": r.extra_pieces} for r in rows]


class ReviewSession(ChangeLog):
    """Decisions on one run folder; every change is saved to ``RUN/review.json`` before the call returns.

    Create with :meth:`open`. Thread-safe for calls from one process (a napari worker and the GUI thread).
    """

    def __init__(
        self,
        run_dir: Path,
        rows: list[dict[str, Any]],
        decisions: dict[str, dict[str, Any]],
        log: list[dict[str, Any]],
        reviewer: str,
        comments: dict[str, str] | None = None,
        round: int = 1,
        unreviewed: str | None = None,
    ) -> None:
        self.run_dir = run_dir
        #: the review round whose nets scored the queue; every decision made records it (``"round"``)
        self.round = round
        self.path = run_dir / REVIEW_FILE
        self._chosen = unreviewed
        self._default = default_unreviewed([r["suspicion"] for r in rows])
        # read_scores' rows come in rank order: the recommended policy's queue as they are
        self._rows = rows if self.unreviewed == DEFAULT_UNREVIEWED else _queue(rows, self.unreviewed)
        self._by_id = {r["id"]: r for r in rows}
        self._ids = [r["id"] for r in self._rows]
        self._decisions = decisions
        self._log = log
        self._comments = dict(comments or {})
        self._lock = threading.RLock()
        self._edits = EditFiles(run_dir)
        self._reviewer = ""
        self.reviewer = reviewer

    # ---------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, run_dir: str | Path, reviewer: str | None = None, recover: bool = False) -> ReviewSession:
        """Open the review of a scored run, restoring earlier decisions from ``RUN/review.json``.

        ``reviewer`` defaults to the login name ("unknown" when there is none). A corrupt or unknown-version
        review.json raises ReviewError naming it, unless ``recover=True``: then it is renamed to
        ``review.json.corrupt-<UTC time>`` (kept as evidence) and the review starts fresh.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ReviewError(f"{run_dir}: run folder does not exist")
        rows = read_scores(run_dir)
        path = run_dir / REVIEW_FILE
        decisions: dict[str, dict[str, Any]] = {}
        log: list[dict[str, Any]] = []
        comments: dict[str, str] = {}
        unreviewed = None
        set_aside = False
        if path.exists():
            try:
                decisions, log, comments, unreviewed = read_review_file(path)
            except ReviewError as exc:
                if not recover:
                    raise ReviewError(
                        f"{exc}\nThe file was left untouched. Fix or move it, or reopen with recover=True to "
                        f"keep it as {REVIEW_FILE}.corrupt-<time> and start the review afresh."
                    ) from exc
                cls._set_aside(path)
                decisions, log, comments, set_aside = {}, [], {}, True
        name = reviewer if reviewer is not None else default_reviewer()
        session = cls(run_dir, rows, decisions, log, name, comments, _current_round(run_dir), unreviewed)
        if set_aside:
            session._save()  # the fresh start is explicit on disk
        return session

    @staticmethod
    def _set_aside(path: Path) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while backup.exists():
            backup = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(path, backup)
        fsync_dir(path.parent)
        return backup

    # --------------------------------------------------------------------------------------- reading
    @property
    def reviewer(self) -> str:
        """Name recorded with each decision; settable (e.g. when the radiologist changes at a shared PC)."""
        return self._reviewer

    @reviewer.setter
    def reviewer(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"reviewer must be a non-empty string, got {name!r}")
        self._reviewer = name.strip()

    @property
    def ids(self) -> list[str]:
        """Image ids in the review queue's order: scoring.rank for the export's choice for the images nobody
        reviewed (:attr:`unreviewed`; scores.csv's rank for the recommended policy)."""
        return list(self._ids)

    @property
    def unreviewed(self) -> str:
        """What the export gives images nobody reviewed, and so what the queue is made for: "accept_above" (their
        corrections where the suspicion reaches the recommended threshold) or "keep" (their given masks);
        :func:`default_unreviewed` of the scores until the review chooses (:meth:`choose_unreviewed`)."""
        return self._chosen or self._default

    @property
    def unreviewed_chosen(self) -> bool:
        """Whether :attr:`unreviewed` is fixed (review.json holds it: chosen, or the default the review started
        deciding in, kept from its first decision on) rather than the default of the current scores."""
        return self._chosen is not None

    def choose_unreviewed(self, policy: str) -> None:
        """Choose what the export gives images nobody reviewed (one of scoring.UNREVIEWED): saved to review.json
        before this returns, the queue (:attr:`ids`, :attr:`rows`) re-ordered for it; every decision stays."""
        if policy not in UNREVIEWED:
            raise ValueError(f"unreviewed must be one of {', '.join(UNREVIEWED)}, got {policy!r}")
        with self._lock:
            if policy == self._chosen:
                return
            before = self._chosen, self._rows, self._ids
            self._chosen = policy
            self._rows = _queue(self._rows, policy)
            self._ids = [r["id"] for r in self._rows]
            try:
                self._save()
            except BaseException:
                self._chosen, self._rows, self._ids = before  # not on disk: the session stays as it was
                raise

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The scores.csv rows (copies) in the queue's order, numbers parsed."""
        return [dict(r) for r in self._rows]

    def column(self, name: str) -> list[Any]:
        """One scores.csv column (``"suspicion"``, say) in the queue's order: :attr:`rows` without copying 100,000
        rows to read one number of each."""
        return [r[name] for r in self._rows]

    def row(self, image_id: str) -> dict[str, Any]:
        """The scores.csv row of one image (a copy)."""
        return dict(self._by_id[self._check(image_id)])

    def _check(self, image_id: str) -> str:
        if image_id not in self._by_id:
            raise KeyError(f"unknown image id {image_id!r}: not in {self.run_dir / SCORES_FILE}")
        return image_id

    def status(self, image_id: str) -> str:
        """One of STATUSES."""
        d = self._decisions.get(self._check(image_id))
        return "pending" if d is None else d["status"]

    def decision(self, image_id: str) -> dict[str, Any] | None:
        """``{"status", "reviewer", "time" (ISO-8601 UTC), "edit" (path relative to the run or None)}``, or
        None while pending."""
        d = self._decisions.get(self._check(image_id))
        return None if d is None else dict(d)

    def comment(self, image_id: str) -> str:
        """The reviewer's free-text note on ``image_id`` ("" when none)."""
        return self._comments.get(self._check(image_id), "")

    def edit_path(self, image_id: str) -> Path:
        """Where the edited mask of ``image_id`` lives (whether or not it exists)."""
        return self._edits.path(self._check(image_id))

    def counts(self) -> dict[str, int]:
        """Number of images per status, plus "total" and "reviewed" (= total - pending)."""
        out = {s: 0 for s in STATUSES}
        for image_id in self._ids:
            out[self.status(image_id)] += 1
        out["total"] = len(self._ids)
        out["reviewed"] = out["total"] - out["pending"]
        return out

    def next_pending(self, after: str | None = None) -> str | None:
        """The next pending id in rank order after ``after`` (from the top when None), wrapping around to the
        ones skipped earlier; None when nothing is pending."""
        start = 0 if after is None else self._ids.index(self._check(after)) + 1
        order = self._ids[start:] + self._ids[:start]
        return next((i for i in order if i not in self._decisions), None)

    @property
    def log(self) -> list[dict[str, Any]]:
        """The change history, oldest first (copies)."""
        return copy.deepcopy(self._log)

    # -------------------------------------------------------------------------------------- changing
    def accept(self, image_id: str) -> dict[str, Any]:
        """Use the corrected mask for this image."""
        return self._decide(image_id, "accepted")

    def keep(self, image_id: str) -> dict[str, Any]:
        """Keep the given (original) mask for this image."""
        return self._decide(image_id, "kept")

    def flag(self, image_id: str) -> dict[str, Any]:
        """Ask for a second opinion (the export treats the image as pending)."""
        return self._decide(image_id, "flagged")

    def exclude(self, image_id: str) -> dict[str, Any]:
        """Leave this (bad) radiograph out of the export; the manifest lists it as excluded."""
        return self._decide(image_id, "excluded")

    def decide_many(self, image_ids: list[str], status: str) -> list[str]:
        """Set ``status`` (one of BATCH_STATUSES) on several images in ONE save and ONE undo step; returns the
        ids that changed (those already so decided by this reviewer are left alone)."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"a batch can set one of {', '.join(BATCH_STATUSES)}, not {status!r}")
        with self._lock:
            for image_id in image_ids:
                self._check(image_id)
            changed = []
            for image_id in dict.fromkeys(image_ids):
                current = self._decisions.get(image_id)
                if current is None or current["status"] != status or current["reviewer"] != self.reviewer:
                    changed.append(image_id)
            if not changed:
                return []
            token, time = secrets.token_hex(6), now()
            saved_decisions, saved_log = dict(self._decisions), len(self._log)
            for image_id in changed:
                self._record(image_id, status, time, batch=token)
            try:
                self._save()
            except BaseException:
                self._decisions = saved_decisions
                del self._log[saved_log:]
                raise
            return changed

    def set_comment(self, image_id: str, text: str) -> str:
        """Store a free-text note on ``image_id`` (blank removes it); saved at once, not part of undo."""
        if not isinstance(text, str):
            raise TypeError(f"a comment must be text, not {type(text).__name__}")
        text = text.strip()
        if len(text) > MAX_COMMENT:
            raise ValueError(f"comment on {image_id!r} is {len(text)} characters long; at most {MAX_COMMENT}")
        with self._lock:
            before = self._comments.get(self._check(image_id), "")
            if text == before:
                return text
            if text:
                self._comments[image_id] = text
            else:
                self._comments.pop(image_id, None)
            try:
                self._save()
            except BaseException:
                if before:
                    self._comments[image_id] = before
                else:
                    self._comments.pop(image_id, None)
                raise
            return text

    def reset(self, image_id: str) -> None:
        """Back to pending (the edit file, if any, stays so that undo can bring the decision back)."""
        with self._lock:
            if self._check(image_id) in self._decisions:
                self._apply(image_id, None)

    def edit(self, image_id: str, mask: np.ndarray) -> dict[str, Any]:
        """Store the reviewer's own mask (anything > 0 is lung) as ``RUN/edits/<id>.png`` (0/255).

        The mask must be at the original image's size (``orig_h`` x ``orig_w`` in cases.csv: edits are drawn
        there and exported unchanged), or at the training size of the given mask (as edits were drawn before).
        The drawing it replaces, if any, is kept for undo.
        """
        with self._lock:
            binary = self._edits.binary(self._check(image_id), mask)
            backup = self._edits.write(image_id, binary)
            try:
                return self._apply(image_id, "edited", edit_backup=backup)
            except BaseException:  # review.json not updated: put the previous drawing back
                self._edits.roll_back(image_id, backup)
                raise

    # ------------------------------------------------------------------------------------- internals
    def _decide(self, image_id: str, status: str) -> dict[str, Any]:
        with self._lock:
            current = self._decisions.get(self._check(image_id))
            if current is not None and current["status"] == status and current["reviewer"] == self.reviewer:
                return dict(current)  # nothing changes; no log entry, no write
            return self._apply(image_id, status)

    def to_json(self) -> dict[str, Any]:
        """The review.json content."""
        return {
            "version": REVIEW_VERSION,
            "run": self.run_dir.resolve().name,
            **({"unreviewed": self._chosen} if self._chosen else {}),
            "decisions": {k: dict(v) for k, v in self._decisions.items()},
            "comments": dict(self._comments),
            "log": copy.deepcopy(self._log),
        }

    def _save(self) -> None:
        # the first thing written fixes the queue the reviewer has been deciding in: the default would otherwise
        # follow the scores, and a round that lets the nets tell right from wrong could flip it under them
        before = self._chosen
        self._chosen = self._chosen or self._default
        try:
            atomic_write_json(self.path, self.to_json())
        except BaseException:
            self._chosen = before  # not on disk: the default still follows the scores, as it did before
            raise
