"""The review's change log: every decision is logged with what it replaced, so undo works after reopening a
run, an undone edit brings back the drawing it replaced byte for byte, and a batch is undone as one step. A
failed save rolls memory back, so the session never claims what the disk does not hold. Mixed into
crl_napari.review.ReviewSession, which provides the decisions, the log, the lock, ``edit_path`` and ``_save``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from .atomic import atomic_write_bytes, fsync_dir
from .review_file import EDITS_DIR

__all__ = ["ChangeLog", "now"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ChangeLog:
    """Undo and the log entries behind it (see the module docstring)."""

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
            after = {"status": status, "reviewer": self.reviewer, "time": time, "edit": edit, "round": self.round}
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
        before, after = self._record(image_id, status, now(), edit_backup=edit_backup)
        try:
            self._save()
        except BaseException:
            self._log.pop()
            self._set(image_id, before)
            raise
        return {} if after is None else dict(after)
