"""Read large review cases in a helper process, so the reviewer's window never waits on the read-ahead.

A 3000 px case costs about a second of CPU: a PNG decode, the windowing, :func:`crl_napari.native.native_mask`
(a resampling, then the clean-up's labelling) and the outlines. Done in a thread of the viewer's process it
shares the GIL with the GUI thread, and on a busy machine the OS pre-empts it while it holds the GIL: the
GUI thread then waits for it to be scheduled again (56-66 ms pauses measured at load 10, where each call
alone holds the GIL under 25 ms). One helper process (started with ``spawn``: forking a process that runs Qt
and OpenGL is unsafe) does those reads at a lowered priority and hands each case back through shared memory,
so the viewer's process only copies three arrays (numpy copies without the GIL).

The helper is shared by every Review widget of the process and started when a run with large originals is
opened; it reads with the same :class:`crl_napari.case_cache.NativeCases` as the thread would (the same
correction as the export writes). Any failure to run it (no shared memory, a helper that died) falls back to
reading in the calling thread; a reader's own error (a missing file) comes back as the same exception.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import resource_tracker, shared_memory

import numpy as np

__all__ = ["HELPER_NICE", "read_in_helper", "warm_helper", "stop_helper", "helper_running"]

HELPER_NICE = 10  # the helper's nice value: it gives the CPU to the viewer (no shared GIL, no priority inversion)

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_reader = None  # in the helper: (key, NativeCases) of the run it reads now


def _init_helper() -> None:
    try:
        os.nice(HELPER_NICE)
    except (AttributeError, OSError):
        pass
    import torch

    torch.set_num_threads(1)  # one core's worth: the viewer keeps the other


def _ready() -> int:
    """Nothing: submitted to start the helper (and its imports) before the first case is asked for."""
    from . import case_cache  # noqa: F401 - imports numpy, torch, scipy: the helper's start-up cost

    return os.getpid()


def _read(run_dir: str, cleanup, key: int, id_: str) -> tuple[str, list, str]:
    """In the helper: read case ``id_`` and leave its arrays in a new shared memory block; (block name, array
    layout, the reader's note)."""
    global _reader
    from .case_cache import NativeCases
    from .runs import RunFolder

    if _reader is None or _reader[0] != key:
        _reader = (key, NativeCases(RunFolder(run_dir), cleanup=cleanup, helper=False))
    reader = _reader[1]
    arrays = [np.ascontiguousarray(a) for a in reader(id_)]
    block = shared_memory.SharedMemory(create=True, size=max(1, sum(a.nbytes for a in arrays)))
    try:
        resource_tracker.unregister(block._name, "shared_memory")  # the viewer's process unlinks it
    except Exception:  # noqa: BLE001 - a tracker that never saw it
        pass
    layout, offset = [], 0
    for a in arrays:
        np.ndarray(a.shape, a.dtype, buffer=block.buf, offset=offset)[...] = a
        layout.append((a.shape, a.dtype.str, offset))
        offset += a.nbytes
    name = block.name
    block.close()
    return name, layout, reader.note(id_)


def _collect(name: str, layout: list) -> list[np.ndarray]:
    """In the viewer's process: the arrays out of the block, then the block removed."""
    block = shared_memory.SharedMemory(name=name)
    try:
        return [np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=offset).copy()
                for shape, dtype, offset in layout]
    finally:
        block.close()
        block.unlink()


@contextmanager
def _main_hidden():
    """While the helper starts, the viewer's ``__main__`` is not named to it: ``spawn`` would run the user's
    script (napari's, a notebook's, a script without a ``__name__`` guard) again in the helper. The helper needs
    only this package."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for k in saved:
            if k == "__spec__":
                main.__spec__ = None
            else:
                del main.__dict__[k]
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def _submit(fn, *args):
    """``fn(*args)`` in the helper, started first if none runs (ProcessPoolExecutor starts it in ``submit``)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_helper)
        with _main_hidden():
            return _pool.submit(fn, *args)


def warm_helper() -> None:
    """Start the helper now (its imports take seconds), so the first large case does not wait for them."""
    try:
        _submit(_ready)
    except (OSError, RuntimeError, BrokenProcessPool):
        stop_helper()


def helper_running() -> bool:
    """Whether a helper process is started (tests, and :func:`stop_helper`)."""
    return _pool is not None


def read_in_helper(run_dir: str, cleanup, key: int, id_: str) -> tuple[list[np.ndarray], str] | None:
    """Case ``id_`` of the run in ``run_dir`` read by the helper: (image, given, corrected), note; None when the
    helper cannot run (the caller reads it itself). ``key`` names the caller's reader (a new one, after the data
    moved, makes the helper read the run's settings again)."""
    try:
        future = _submit(_read, run_dir, cleanup, key, id_)
        name, layout, note = future.result()  # the reader's own error (a missing file) is raised here
        return _collect(name, layout), note
    except (BrokenProcessPool, OSError):  # the helper could not start or died, no shared memory: read here
        stop_helper()
        return None
    except RuntimeError:  # a helper stopped while this was waiting (another thread's stop_helper)
        return None


def stop_helper() -> None:
    """Stop the helper process (it is started again when needed)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(stop_helper)
