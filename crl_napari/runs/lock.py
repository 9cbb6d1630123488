"""The writer lock of a run folder: train, resume and score take it, so two writers never mix one run.

``fcntl.flock`` on a lock file inside the run: the kernel releases it when the process ends, also on
``kill -9``, so a crash never leaves a stale lock. The file holds who took it (pid, host, command, time) so a
refused writer can name the holder. Where flock does not exist (Windows) the lock only records the holder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import RunError, RunLocked
from .names import LOCK

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def _holder(fd: int, wait: float = 1.0) -> str:
    """Who holds the lock, from the lock file; for up to ``wait`` seconds while it is unreadable (the holder is
    between taking the lock and writing its name, a moment a busy machine can stretch), then "another process"."""
    end = time.monotonic() + wait
    while True:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 4096).decode("utf-8", "replace"))
            return (f"pid {int(info['pid'])} on {str(info['host'])[:64]} ({str(info['command'])[:80]}, "
                    f"since {str(info['time'])[:32]})")
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= end:
                return "another process"
            time.sleep(0.02)


@contextmanager
def writer_lock(run_dir: Path | str, command: str) -> Iterator[None]:
    """Hold the run's writer lock for the ``with`` block; RunLocked naming the holder when another has it.
    ``run_dir`` must exist. The lock file is opened without following a symbolic link."""
    path = Path(run_dir) / LOCK
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise RunError(f"{path}: cannot take the run's writer lock ({exc.strerror or exc})") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(f"{run_dir}: in use by {_holder(fd)}; a run folder is written by one process at "
                                "a time (wait for it to finish, or stop it, then try again)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "argv": " ".join(sys.argv)[:200], "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())
        yield
    finally:
        os.close(fd)  # releases the flock


def is_locked(run_dir: Path | str) -> str | None:
    """Who holds the run's writer lock now (None when nobody): for a face that wants to say so before it asks."""
    path = Path(run_dir) / LOCK
    if fcntl is None or not path.is_file() or path.is_symlink():
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        return None
    finally:
        os.close(fd)
