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

Each image may also carry a free-text comment (``"comments"`` in review.json; files without it load). Comments
are notes, not decisions: they are saved at once but are not part of the undo log. A batch of decisions
(:meth:`ReviewSession.decide_many`) is logged with one shared ``"batch"`` token and undone as one step.

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
import json
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import ids, runs
from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_png, fsync_dir

__all__ = [
    "REVIEW_FILE",
    "REVIEW_VERSION",
    "STATUSES",
    "BATCH_STATUSES",
    "ReviewError",
    "ReviewSession",
    "check_id",
    "read_scores",
]

REVIEW_FILE = runs.REVIEW
REVIEW_VERSION = 1
SCORES_FILE = runs.SCORES
EDITS_DIR = runs.EDITS
UNDO_DIR = ".undo"  # inside edits/: the drawings an edit replaced, for undo
#: Every status an image can have; "pending" is the absence of a decision.
STATUSES = ("pending", "accepted", "kept", "edited", "flagged", "excluded")
_DECIDED = ("accepted", "kept", "edited", "flagged", "excluded")
#: The statuses a batch (decide_many) may set: every decision but "edited" (an edit needs a drawing).
BATCH_STATUSES = ("accepted", "kept", "flagged", "excluded")
MAX_COMMENT = 2000  # characters; a comment is a note, not a report
_BACKUP_RE = re.compile(r"^edits/\.undo/[A-Za-z0-9._-]+\.[0-9a-f]+\.png$")
_BATCH_RE = re.compile(r"^[0-9a-f]{1,32}$")


class ReviewError(ValueError):
    """The run cannot be reviewed as asked (no scores, unreadable review.json, ...); names the file."""


def check_id(image_id: str, where: str | Path = "") -> str:
    """Refuse ids that are unsafe as file names (they become ``edits/<id>.png`` and export file names): the
    one rule of :func:`crl_napari.ids.check_id`, raised here as a ReviewError."""
    try:
        return ids.check_id(image_id, where)
    except ids.UnsafeIdError as exc:
        raise ReviewError(str(exc)) from None


def _mkdir_durable(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _default_reviewer() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (containers): KeyError, OSError, ImportError
        return "unknown"
    return name or "unknown"


def read_scores(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``RUN/scores.csv`` sorted by rank: id (str), rank (int), the scores as floats (None if
    empty), corrupted as bool (None if absent/empty). Read and checked by the run folder gateway
    (:meth:`crl_napari.runs.RunFolder.score_rows`); errors name the file and line."""
    try:
        rows = runs.read_score_rows(run_dir)
    except (runs.RunError, ids.UnsafeIdError) as exc:
        raise ReviewError(str(exc)) from None
    return [{"id": r.id, "rank": r.rank, "suspicion": r.suspicion, "uncertainty": r.uncertainty,
             "disagreement": r.disagreement, "dice_given_corrected": r.dice_given_corrected,
             "corrupted": r.corrupted} for r in rows]


# --------------------------------------------------------------------------------- review.json checks


def _check_decision(d: Any, image_id: str, path: Path, where: str) -> dict[str, Any] | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ReviewError(f"{path}: {where}: expected an object, got {type(d).__name__}")
    status = d.get("status")
    if status not in _DECIDED:
        expected = ", ".join(_DECIDED)
        raise ReviewError(f"{path}: {where}: unknown status {status!r} (expected one of {expected})")
    for key in ("reviewer", "time"):
        if not isinstance(d.get(key), str):
            raise ReviewError(f"{path}: {where}: {key!r} must be a string")
    edit = d.get("edit")
    expected = f"{EDITS_DIR}/{image_id}.png"
    if status == "edited" and edit != expected:
        raise ReviewError(f"{path}: {where}: an edited decision must point to {expected!r}, found {edit!r}")
    if status != "edited" and edit is not None:
        raise ReviewError(f"{path}: {where}: only edited decisions have an edit file, found {edit!r}")
    return {"status": status, "reviewer": d["reviewer"], "time": d["time"], "edit": edit}


def _check_comments(raw: Any, path: Path) -> dict[str, str]:
    """The optional ``comments`` map (absent in files written before comments existed)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ReviewError(f"{path}: 'comments' must be an object mapping image ids to text")
    out: dict[str, str] = {}
    for image_id, text in raw.items():
        check_id(image_id, f"{path}: comments")
        if not isinstance(text, str):
            raise ReviewError(f"{path}: comment for {image_id!r} must be a string, got {type(text).__name__}")
        if text.strip():
            out[image_id] = text[:MAX_COMMENT]
    return out


def _validate(data: Any, path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Check a loaded review.json completely; returns (decisions, log) or raises ReviewError."""
    if not isinstance(data, dict):
        raise ReviewError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    version = data.get("version")
    if version != REVIEW_VERSION:
        raise ReviewError(
            f"{path}: unsupported review file version {version!r} (this crl-napari reads version "
            f"{REVIEW_VERSION}); it may come from a newer release"
        )
    raw_decisions = data.get("decisions", {})
    raw_log = data.get("log", [])
    if not isinstance(raw_decisions, dict):
        raise ReviewError(f"{path}: 'decisions' must be an object mapping image ids to decisions")
    if not isinstance(raw_log, list):
        raise ReviewError(f"{path}: 'log' must be a list")
    decisions: dict[str, dict[str, Any]] = {}
    for image_id, d in raw_decisions.items():
        check_id(image_id, f"{path}: decisions")
        checked = _check_decision(d, image_id, path, f"decision for {image_id!r}")
        if checked is None:
            raise ReviewError(f"{path}: decision for {image_id!r} is null")
        decisions[image_id] = checked
    log: list[dict[str, Any]] = []
    for i, entry in enumerate(raw_log):
        where = f"log entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ReviewError(f"{path}: {where}: expected an object with an 'id'")
        image_id = check_id(entry["id"], f"{path}: {where}")
        backup = entry.get("edit_backup")
        if backup is not None and (not isinstance(backup, str) or not _BACKUP_RE.match(backup)):
            raise ReviewError(f"{path}: {where}: invalid edit_backup {backup!r}")
        batch = entry.get("batch")
        if batch is not None and (not isinstance(batch, str) or not _BATCH_RE.match(batch)):
            raise ReviewError(f"{path}: {where}: invalid batch {batch!r}")
        log.append({
            "id": image_id,
            "before": _check_decision(entry.get("before"), image_id, path, f"{where} 'before'"),
            "after": _check_decision(entry.get("after"), image_id, path, f"{where} 'after'"),
            "reviewer": str(entry.get("reviewer", "")),
            "time": str(entry.get("time", "")),
            "edit_backup": backup,
            "batch": batch,
        })
    return decisions, log


class ReviewSession:
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
    ) -> None:
        self.run_dir = run_dir
        self.path = run_dir / REVIEW_FILE
        self._rows = rows
        self._by_id = {r["id"]: r for r in rows}
        self._ids = [r["id"] for r in rows]
        self._decisions = decisions
        self._log = log
        self._comments = dict(comments or {})
        self._lock = threading.RLock()
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
        set_aside = False
        if path.exists():
            try:
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ReviewError(f"{path}: not a readable review file ({exc})") from exc
                decisions, log = _validate(data, path)
                comments = _check_comments(data.get("comments"), path)
            except ReviewError as exc:
                if not recover:
                    raise ReviewError(
                        f"{exc}\nThe file was left untouched. Fix or move it, or reopen with recover=True to "
                        f"keep it as {REVIEW_FILE}.corrupt-<time> and start the review afresh."
                    ) from exc
                cls._set_aside(path)
                decisions, log, comments, set_aside = {}, [], {}, True
        name = reviewer if reviewer is not None else _default_reviewer()
        session = cls(run_dir, rows, decisions, log, name, comments)
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
        """Image ids in rank order (most suspicious first)."""
        return list(self._ids)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The scores.csv rows (copies) in rank order, numbers parsed."""
        return [dict(r) for r in self._rows]

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
        try:
            return runs.inside(self.run_dir, EDITS_DIR, f"{self._check(image_id)}.png")
        except runs.RunError as exc:
            raise ReviewError(str(exc)) from None

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
            token, time = secrets.token_hex(6), _now()
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

        The mask must have the shape of the given mask (training size). The drawing it replaces, if any, is
        kept for undo.
        """
        with self._lock:
            self._check(image_id)
            arr = np.asarray(mask)
            if arr.dtype == bool:
                binary = arr
            elif np.issubdtype(arr.dtype, np.number):
                if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                    raise ValueError(f"edited mask for {image_id!r} contains NaN or infinite values")
                binary = arr > 0
            else:
                raise TypeError(f"edited mask for {image_id!r}: expected bool or numbers, not {arr.dtype}")
            expected = self._mask_shape(image_id)
            if binary.shape != expected:
                raise ValueError(
                    f"edited mask for {image_id!r} has shape {binary.shape}, expected {expected} "
                    "(the size of the given mask)"
                )
            target = self.edit_path(image_id)
            _mkdir_durable(target.parent)
            backup_rel = None
            if target.exists():
                _mkdir_durable(target.parent / UNDO_DIR)
                backup_rel = f"{EDITS_DIR}/{UNDO_DIR}/{image_id}.{secrets.token_hex(6)}.png"
                atomic_write_bytes(self._inside(backup_rel), target.read_bytes())
            atomic_write_png(target, binary.astype(np.uint8) * 255)
            try:
                return self._apply(image_id, "edited", edit_backup=backup_rel)
            except BaseException:  # review.json not updated: put the previous drawing back
                if backup_rel is not None:
                    atomic_write_bytes(target, (self.run_dir / backup_rel).read_bytes())
                    os.unlink(self.run_dir / backup_rel)
                else:
                    os.unlink(target)
                raise

    def undo(self) -> str | None:
        """Revert the last change (also one made before the session was reopened); returns its id, or None
        when there is nothing to undo. An undone edit brings back the drawing it replaced. A batch is one
        change: all of it is undone and the first id of the batch is returned (see :meth:`undo_step`)."""
        ids = self.undo_step()
        return ids[0] if ids else None

    def undo_step(self) -> list[str]:
        """Revert the last change (a single decision or a whole batch); returns the ids it touched, in the
        order they were decided ([] when there is nothing to undo)."""
        with self._lock:
            batch = self._log[-1].get("batch") if self._log else None
            if batch is None:
                image_id = self._undo_one()
                return [] if image_id is None else [image_id]
            saved_decisions, saved_log = dict(self._decisions), list(self._log)
            ids = []
            while self._log and self._log[-1].get("batch") == batch:
                entry = self._log.pop()
                self._set(entry["id"], entry["before"])
                ids.append(entry["id"])
            try:
                self._save()
            except BaseException:
                self._decisions, self._log = saved_decisions, saved_log
                raise
            return ids[::-1]

    def _undo_one(self) -> str | None:
        with self._lock:
            if not self._log:
                return None
            entry = self._log[-1]
            image_id = entry["id"]
            target = self.edit_path(image_id)
            backup = entry.get("edit_backup")
            after = entry.get("after")
            if after is not None and after["status"] == "edited":
                # the files first: if we die here, review.json still holds the entry and undo can be redone
                if backup is not None and (self.run_dir / backup).is_file():
                    atomic_write_bytes(target, (self.run_dir / backup).read_bytes())
                elif backup is None and target.exists():
                    os.unlink(target)
                    fsync_dir(target.parent)
            previous = self._decisions.get(image_id)
            self._log.pop()
            self._set(image_id, entry["before"])
            try:
                self._save()
            except BaseException:
                self._log.append(entry)
                self._set(image_id, previous)
                raise
            if backup is not None:
                try:
                    os.unlink(self.run_dir / backup)
                except OSError:
                    pass
            return image_id

    # ------------------------------------------------------------------------------------- internals
    def _inside(self, relative: str) -> Path:
        """A path inside the run for writing, refusing links out of it (see crl_napari.runs.inside)."""
        try:
            return runs.inside(self.run_dir, *relative.split("/"))
        except runs.RunError as exc:
            raise ReviewError(str(exc)) from None

    def _mask_shape(self, image_id: str) -> tuple[int, ...]:
        import imageio.v3 as iio

        for sub in ("given", "corrected"):
            p = self.run_dir / sub / f"{image_id}.png"
            if p.is_file():
                try:
                    arr = np.asarray(iio.imread(p))
                except Exception as exc:
                    raise ReviewError(f"{p}: unreadable mask ({exc})") from exc
                return tuple(arr.shape[:2])
        given = self.run_dir / "given" / f"{image_id}.png"
        raise ReviewError(f"{given}: missing (needed to check the size of the edited mask)")

    def _decide(self, image_id: str, status: str) -> dict[str, Any]:
        with self._lock:
            current = self._decisions.get(self._check(image_id))
            if current is not None and current["status"] == status and current["reviewer"] == self.reviewer:
                return dict(current)  # nothing changes; no log entry, no write
            return self._apply(image_id, status)

    def _set(self, image_id: str, decision: dict[str, Any] | None) -> None:
        if decision is None:
            self._decisions.pop(image_id, None)
        else:
            self._decisions[image_id] = dict(decision)

    def _record(self, image_id: str, status: str | None, time: str, edit_backup: str | None = None,
                batch: str | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Change one decision in memory and log it; returns (before, after)."""
        before = self._decisions.get(image_id)
        after = None
        if status is not None:
            edit = f"{EDITS_DIR}/{image_id}.png" if status == "edited" else None
            after = {"status": status, "reviewer": self.reviewer, "time": time, "edit": edit}
        self._set(image_id, after)
        self._log.append({
            "id": image_id,
            "before": None if before is None else dict(before),
            "after": None if after is None else dict(after),
            "reviewer": self.reviewer,
            "time": time,
            "edit_backup": edit_backup,
            "batch": batch,
        })
        return before, after

    def _apply(self, image_id: str, status: str | None, edit_backup: str | None = None) -> dict[str, Any]:
        """Record one change (status None = back to pending), log it and save; on a failed save the session
        is rolled back so memory never claims what the disk does not hold."""
        before, after = self._record(image_id, status, _now(), edit_backup=edit_backup)
        try:
            self._save()
        except BaseException:
            self._log.pop()
            self._set(image_id, before)
            raise
        return {} if after is None else dict(after)

    def to_json(self) -> dict[str, Any]:
        """The review.json content."""
        return {
            "version": REVIEW_VERSION,
            "run": self.run_dir.resolve().name,
            "decisions": {k: dict(v) for k, v in self._decisions.items()},
            "comments": dict(self._comments),
            "log": copy.deepcopy(self._log),
        }

    def _save(self) -> None:
        atomic_write_json(self.path, self.to_json())
