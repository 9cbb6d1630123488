"""review.json: its statuses and its checked reading. A review file may come from anyone (a colleague's laptop,
a hand edit), so every decision, comment and log entry is checked before the session trusts it; each problem is
one ReviewError naming the file. The session that writes it is crl_napari.review.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import ids, runs
from .scoring import UNREVIEWED

REVIEW_FILE = runs.REVIEW
REVIEW_VERSION = 1
SCORES_FILE = runs.SCORES
EDITS_DIR = runs.EDITS
UNDO_DIR = runs.UNDO  # inside edits/: the drawings an edit replaced, for undo
#: Every status an image can have; "pending" is the absence of a decision.
STATUSES = ("pending", "accepted", "kept", "edited", "flagged", "excluded")
_DECIDED = ("accepted", "kept", "edited", "flagged", "excluded")
#: The statuses a batch (decide_many) may set: every decision but "edited" (an edit needs a drawing).
BATCH_STATUSES = ("accepted", "kept", "flagged", "excluded")
MAX_COMMENT = 2000  # characters; a comment is a note, not a report
MAX_ROUND = 10_000  # review rounds (runs.rounds.MAX_ROUNDS)
_BACKUP_RE = re.compile(rf"^{re.escape(f'{EDITS_DIR}/{UNDO_DIR}/')}[A-Za-z0-9._-]+\.[0-9a-f]+\.png$")
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
    made_in = d.get("round", 1)  # the review round whose scores the reviewer saw; absent in older files: 1
    if isinstance(made_in, bool) or not isinstance(made_in, int) or not 1 <= made_in <= MAX_ROUND:
        raise ReviewError(f"{path}: {where}: 'round' must be a round number (1-{MAX_ROUND}), got {made_in!r}")
    return {"status": status, "reviewer": d["reviewer"], "time": d["time"], "edit": edit, "round": made_in}


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


def validate(data: Any, path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
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


def read(path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, str], str | None]:
    """(decisions, log, comments, unreviewed) of the review file ``path``, checked; ReviewError naming it
    otherwise. ``unreviewed``: what the review chose the export to give images nobody reviewed (None: not chosen,
    as in files written before the choice existed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{path}: not a readable review file ({exc})") from exc
    decisions, log = validate(data, path)
    return decisions, log, _check_comments(data.get("comments"), path), _check_unreviewed(data, path)


def _check_unreviewed(data: dict, path: Path) -> str | None:
    """The optional ``unreviewed`` choice: one of scoring.UNREVIEWED, or absent."""
    choice = data.get("unreviewed")
    if choice is not None and choice not in UNREVIEWED:
        raise ReviewError(f"{path}: 'unreviewed' must be one of {', '.join(UNREVIEWED)}, got {choice!r}")
    return choice


def read_unreviewed(run_dir: Path | str) -> str | None:
    """The review's choice for images nobody reviewed in ``RUN/review.json`` (None: no file, or no choice made),
    checked as a session opens it."""
    path = Path(run_dir) / REVIEW_FILE
    return read(path)[3] if path.exists() else None


def read_statuses(run_dir: Path | str) -> dict[str, str]:
    """{id: status} of every decision in ``RUN/review.json`` ({} when there is none), checked as a session
    opens it; needs no scores.csv (``crl-napari score`` rewrites that one)."""
    path = Path(run_dir) / REVIEW_FILE
    if not path.exists():
        return {}
    return {i: d["status"] for i, d in read(path)[0].items()}
