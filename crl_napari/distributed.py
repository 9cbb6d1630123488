"""Training and scoring under torchrun: everything distributed lives here, behind small hooks elsewhere.

``torchrun --nproc-per-node G -m crl_napari train ...`` starts G processes (ranks). The command line alone
calls :func:`init_from_env` (the plugin never does: it trains in one process), so without torchrun every
function here is a no-op and the engine runs exactly as before. Under torchrun:

- every rank builds the same nets (same seeds) and wraps each in DistributedDataParallel (:func:`wrap`), which
  all-reduces (averages) the gradients of every backward; SyncBatchNorm is ``TrainConfig.sync_batchnorm``;
- the loop draws the same seeded order on every rank, cuts it into global batches and each rank keeps its
  :func:`shard` of a batch; selection ranks within that shard, or with ``TrainConfig.global_selection`` over the
  whole global batch (:class:`GlobalBatch`; docs/scaling.md compares the two);
- rank 0 alone writes the run folder; it takes the writer lock, prepares the run and then tells the other ranks
  how to go on, or the error that stopped it (:class:`Lead`, :func:`follow`), so every rank stops with the same
  one-line message;
- scoring gives each rank a block of the cases (:func:`block`): every rank writes its cases' maps and its
  scores as a part (a temporary file in the run folder); rank 0 merges the parts into scores.csv (:func:`gather`);
- work that one rank may fail at alone (reading its batch, its loss, rank 0's checkpoint, scoring its block) ends
  with every rank's vote (:func:`agree`, :class:`Together`): a failure on one rank stops every rank at the same
  point with the same one line, naming the rank, instead of leaving the others in a collective.

Process group: gloo for CPU tensors, nccl for CUDA ones; with CUDA every rank uses cuda:LOCAL_RANK.

Over 400 lines on purpose: everything that knows about other ranks is here, so each hook elsewhere is one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .settings import TrainConfig, TrainingError

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# --- the process group --------------------------------------------------------------------------------------
def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return all(v in os.environ for v in _LAUNCH_VARS)


def launched_world_size() -> int:
    """WORLD_SIZE as the launcher set it (1 without one), readable before any process group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_from_env() -> None:
    """Join the launcher's process group (gloo for CPU tensors, nccl for CUDA ones); with CUDA, make
    cuda:LOCAL_RANK this process's device. Only the command line calls this."""
    if not launched() or active():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")


CLOSE_WAIT_S = 30  # how long a rank waits at close for the others


def close() -> None:
    """Leave the process group (the command line, when its command ends). On gloo every rank first waits for the
    others (a barrier that gives up after CLOSE_WAIT_S, for a rank that is gone): a rank that destroyed its group
    while the other still ran aborted now and then at exit ("terminate called without an active exception",
    SIGABRT; 2 of 20 torchrun launches of tests/_ddp_faults.py at load 2.5, 0 of 20 with the barrier)."""
    if active():
        if dist.get_backend() == "gloo":  # monitored_barrier is gloo's; "cpu:gloo,cuda:nccl" goes on as before
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=CLOSE_WAIT_S))
            except RuntimeError:  # a rank left already (it failed, or said its error and went)
                pass
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one rank of an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """Rank 0 (or the only process): the one that writes the run folder."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device this rank trains on: under a process group a CUDA device is this rank's own GPU."""
    if active() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


# --- sharding and wrapping -------------------------------------------------------------------------------------
def shard(idx, rank: int, world: int):
    """This rank's part of a global batch of indices (a tensor or array): every ``world``-th one from ``rank``,
    as torch's DistributedSampler deals them; shards differ in size by at most one."""
    return idx[rank::world]


def block(n: int, rank: int, world: int) -> np.ndarray:
    """This rank's consecutive block of ``n`` cases (scoring: consecutive cases read and write in order, and a
    chunked reader can slice them); blocks differ in size by at most one."""
    return np.array_split(np.arange(n), world)[rank]


def global_selection(config: TrainConfig) -> bool:
    """Whether the steppers select over the whole global batch (:class:`GlobalBatch`): asked for, and more than
    one process. In one process both settings are the same plain selection."""
    return config.global_selection and world_size() > 1


class GlobalBatch:
    """The global batch a rank's :func:`shard` belongs to, for a selection over the whole of it.

    Every rank gathers the per-sample values of every shard (``all_gather`` of fixed-size tensors: each shard is
    padded to the largest, after one gather of the sizes), puts them back in the global batch's own order, so
    that a selection on them is the very call one process makes on the whole batch, and keeps its own part of
    the picks (:meth:`mine`). :meth:`weight` scales a rank's mean loss so that DDP's mean over the ranks is the
    single-process mean over all the picks.
    """

    def __init__(self, n_local: int, device: torch.device) -> None:
        self.world, self.rank = world_size(), rank()
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.int64, device=device))
        self.sizes = [int(s.item()) for s in sizes]
        self.n = sum(self.sizes)
        # the sizes shard() deals a batch of n in: anything else would put the gathered values out of order
        assert self.sizes == [len(range(r, self.n, self.world)) for r in range(self.world)], self.sizes

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """(S, n_local) -> (S, n): every rank's values of its shard, in the global batch's order."""
        width = max(self.sizes)
        padded = values.new_zeros((values.shape[0], width))
        padded[:, : values.shape[1]] = values
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous())
        whole = values.new_empty((values.shape[0], self.n))
        for r, part in enumerate(parts):
            whole[:, r :: self.world] = part[:, : self.sizes[r]]  # shard r holds positions r, r + world, ...
        return whole

    def mine(self, picks: torch.Tensor) -> torch.Tensor:
        """Indices into the global batch -> the indices, into this rank's shard, of those in it."""
        return picks[picks % self.world == self.rank] // self.world

    def weight(self, n_mine: int, n_all: int) -> float:
        """The factor on this rank's mean loss over ``n_mine`` of ``n_all`` samples that makes DDP's mean of the
        ranks' gradients the gradient of the mean over all ``n_all``: n_mine / n_all * world."""
        return n_mine * self.world / n_all


def check_shards(n: int, batch_size: int, world: int | None = None) -> None:
    """Refuse, before anything is written, a batch too small to give every rank 2 samples (BatchNorm needs
    two per process; the loop drops a trailing batch that would give a rank fewer)."""
    world = world_size() if world is None else world
    bs = min(batch_size, n)
    if bs // world < 2:
        raise TrainingError(
            f"a batch of {bs} images over {world} processes gives {bs // world} per process; BatchNorm needs at "
            f"least 2 per process: use --batch-size {2 * world} or more"
            + (f" (there are {n} training images)" if n < 2 * world else "") + ", or fewer processes")


def check_setup(config: TrainConfig, device: torch.device | None = None) -> None:
    """Settings that cannot work on this device (by default the one ``config.device`` picks): SyncBatchNorm
    synchronises GPU tensors only (torch's SyncBatchNorm raises on CPU ones, gloo or not); nor does it go with
    global selection yet: a rank holding none of a net's picks takes its zero-weight step with BatchNorm in eval
    mode (Stepper.idle_step), which would skip SyncBatchNorm's collectives that the other ranks wait in."""
    if not config.sync_batchnorm or world_size() == 1:
        return
    if device is None:
        from .device import pick_device

        device = pick_device(config.device)
    if device.type != "cuda":
        raise TrainingError(f"sync_batchnorm needs CUDA devices (this run trains on {device.type}); "
                            "train without --sync-batchnorm")
    if global_selection(config):
        raise TrainingError("sync_batchnorm and global_selection do not go together yet (docs/scaling.md); "
                            "train without one of --sync-batchnorm, --global-selection")


def wrap(models: list[torch.nn.Module], config: TrainConfig) -> list[torch.nn.Module]:
    """The nets as the steppers train them: each in DistributedDataParallel under a process group (its
    BatchNorm layers made SyncBatchNorm first when ``config.sync_batchnorm``), else the nets themselves.

    SyncBatchNorm replaces the nets' BatchNorm layers in place but keeps their parameter tensors, so the
    optimisers built on them stay valid and the checkpoint's names stay those of a plain U-Net.
    """
    if not active():
        return models
    from torch.nn.parallel import DistributedDataParallel as DDP

    wrapped = []
    for m in models:
        if config.sync_batchnorm:
            m = torch.nn.SyncBatchNorm.convert_sync_batchnorm(m)
        cuda = next(m.parameters()).device.type == "cuda"
        wrapped.append(DDP(m, device_ids=[torch.cuda.current_device()] if cuda else None))
    return wrapped


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The net inside a DDP wrapper: ranking forwards (no gradient) run on it, so they start no gradient
    synchronisation and broadcast no buffers."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model


def epoch_end(models: list[torch.nn.Module], values: Sequence[float]) -> list[float]:
    """Make the ranks agree at an epoch's end; returns the mean of each value over the ranks (the epoch's
    losses for history.csv; unchanged in one process).

    The nets' buffers (BatchNorm's running statistics) become rank 0's, the ones its checkpoint holds: DDP
    broadcasts them before each forward, but every forward then updates them from its own shard, so without
    this the ranks would score their shares with slightly different nets.
    """
    if world_size() == 1:
        return list(values)
    for m in models:
        for b in unwrap(m).buffers():
            dist.broadcast(b, src=0)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def merge_disjoint(values: np.ndarray) -> np.ndarray:
    """Every rank's ``values`` (1-D float, NaN where the rank has none) put together: each rank holds its own
    entries, NaN elsewhere (unchanged in one process)."""
    if world_size() == 1:
        return values
    have = np.isfinite(values)
    t = torch.as_tensor(np.stack([np.where(have, values, 0.0), have]), dtype=torch.float64)
    dist.all_reduce(t)
    return np.where(t[1].numpy() > 0, t[0].numpy() / np.maximum(t[1].numpy(), 1), np.nan)


# --- rank 0 leads, the others follow ---------------------------------------------------------------------------
def _broadcast(obj, src: int = 0):
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _portable(exc: BaseException) -> tuple[str, str, str]:
    """An error as plain values (module, class name, message): nothing but strings crosses to the other ranks."""
    return type(exc).__module__, type(exc).__qualname__, str(exc)


def _rebuild(spec: tuple[str, str, str], kept: tuple[str, ...] = ("crl_napari", "builtins"),
             prefix: str = "") -> BaseException:
    """The error another rank stopped with, as the same class where that is one of the ``kept`` packages' (so
    the command line reports it as that rank does), else a TrainingError with its message (and its class's name
    when that is not kept either)."""
    import importlib

    module, name, message = spec
    if module.split(".")[0] in kept:
        try:
            cls = getattr(importlib.import_module(module), name)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls(prefix + message)
        except Exception:  # a class that cannot be rebuilt from its message: the fallback below
            pass
    elif module.split(".")[0] != "crl_napari" and prefix:
        message = f"{name}: {message}"
    return TrainingError(prefix + message)


class Lead:
    """Rank 0 tells the other ranks, once, how to go on (a small dict) or the error that stopped it, so
    they neither run ahead of a run folder that is not ready nor wait for one that will never be."""

    def __init__(self) -> None:
        self.told = not active() or not is_writer()

    def tell(self, plan: dict) -> None:
        if not self.told:
            self.told = True
            _broadcast((plan, None))

    def fail(self, exc: BaseException) -> None:
        if not self.told:
            self.told = True
            _broadcast((None, _portable(exc)))
            _every_rank(exc)


def follow() -> dict:
    """On a rank other than 0: wait for rank 0's plan; raise the error it stopped with."""
    plan, error = _broadcast(None)
    if error is not None:
        raise _every_rank(_rebuild(error))
    return plan


@contextmanager
def writer_lock(run_dir: Path | str, command: str) -> Iterator[None]:
    """The run's writer lock, taken by rank 0 only; when it is refused, every rank stops with that error."""
    from .runs import writer_lock as _lock

    if not active():
        with _lock(run_dir, command):
            yield
        return
    with ExitStack() as stack:
        lead = Lead()
        if is_writer():
            try:
                stack.enter_context(_lock(run_dir, command))
            except BaseException as exc:
                lead.fail(exc)
                raise
            lead.tell({})
        else:
            follow()
        yield


# --- every rank goes on, or every rank stops ------------------------------------------------------------------
def agree(failure: BaseException | None = None, where: str | None = None, stop: bool = False) -> bool:
    """Every rank says whether it can go on; all of them must call this at the same point, outside any other
    collective. Returns whether some rank asked to ``stop`` (then every rank stops there).

    When a rank's ``failure`` is given, no rank goes on: the lowest failing rank sends its error and every rank
    raises it, its message led by the rank (and ``where``), so none is left waiting in a collective that the
    failed rank will never join. The package's own errors keep their class (one line on the command line, on
    every rank); anything else is raised as it is on the rank it happened on (a bug keeps its traceback) and as
    a TrainingError naming its class on the others. One all-reduce of world + 1 integers; the message crosses
    only on failure. In one process: raises ``failure``, returns ``stop``.
    """
    world = world_size()
    if world == 1:
        if failure is not None:
            raise failure
        return stop
    votes = torch.zeros(world + 1, dtype=torch.int64)  # CPU: gloo carries it, also beside nccl
    votes[rank()] = failure is not None
    votes[world] = bool(stop)
    dist.all_reduce(votes)
    failed = [r for r in range(world) if votes[r]]
    if not failed:
        return bool(votes[world])
    first = failed[0]
    spec = _broadcast(_portable(failure) if rank() == first else None, src=first)
    who = (f"rank {first} of {world}" if len(failed) == 1 else f"every rank of {world}" if len(failed) == world
           else f"ranks {', '.join(map(str, failed))} of {world}")
    error = _rebuild(spec, kept=("crl_napari",), prefix=f"{who}{f' at {where}' if where else ''}: ")
    if failure is not None and type(error) is not type(failure):
        raise failure  # not the package's error: as it is, with its traceback, on the rank it happened on
    raise _every_rank(error) from failure


def _every_rank(error: BaseException) -> BaseException:
    """Mark an error that every rank raises at the same point (:func:`settle` waits for the others then)."""
    error.every_rank = True  # type: ignore[attr-defined]
    return error


def settle(error: BaseException) -> None:
    """After this rank reported ``error``: when every rank stopped with it at the same point (:func:`agree`,
    :func:`follow`), wait until each has reported it too. torchrun ends the other ranks as soon as one process
    exits, which could otherwise cut another rank's line short (rank 0's, the one a user reads). Else nothing.
    A rank that left meanwhile ends the wait (the error is already said)."""
    if active() and getattr(error, "every_rank", False):
        try:
            dist.all_reduce(torch.zeros(1))  # a CPU tensor: gloo, also beside nccl
        except RuntimeError:
            pass


class Together:
    """``with Together(where) as work:`` rank-local work (no collective inside) that ends with every rank's
    :func:`agree`: an exception inside stops every rank with it; ``work.stop()`` asks every rank to stop, and
    ``work.stopped`` says after the block whether some rank did. In one process an exception passes unchanged.
    An interrupt (KeyboardInterrupt, SystemExit) passes too: the launcher sends the signal to every rank."""

    def __init__(self, where: str) -> None:
        self.where, self.asked, self.stopped = where, False, False

    def __enter__(self) -> Together:
        return self

    def stop(self) -> None:
        self.asked = True

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and (world_size() == 1 or not isinstance(exc, Exception)):
            return False
        self.stopped = agree(exc, self.where, self.asked)
        return False


# --- scoring in shards -----------------------------------------------------------------------------------------
def gather(run_dir: Path | str, n: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Each rank's ``arrays`` (first axis: the cases of its :func:`block` of ``n``) merged in case order on
    rank 0: every rank writes its part into the run folder (runs.SCORE_PART), rank 0 reads them all, checks
    them and removes them. None on the other ranks; in one process, ``arrays`` themselves."""
    world, me = world_size(), rank()
    if world == 1:
        return arrays
    from .atomic import atomic_write
    from .runs import SCORE_PART, SCORE_PARTS, RunError

    run_dir = Path(run_dir)
    positions = block(n, me, world)
    part = run_dir / SCORE_PART.format(rank=me, world=world)
    with Together("writing its scoring part"):  # every part written, or every rank stops
        atomic_write(part, lambda fh: np.savez(fh, positions=positions, **arrays))
    if not is_writer():
        return None
    merged = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in arrays.items()}
    for r in range(world):
        path = run_dir / SCORE_PART.format(rank=r, world=world)
        want = block(n, r, world)
        try:
            with np.load(path, allow_pickle=False) as part:
                if not np.array_equal(part["positions"], want):
                    raise ValueError("it holds other cases than this rank's block")
                for k, v in merged.items():
                    if part[k].shape != (len(want), *v.shape[1:]):
                        raise ValueError(f"{k} has shape {part[k].shape}")
                    v[want] = part[k]
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"{path}: not a scoring part of this run ({exc})") from None
    for path in run_dir.glob(SCORE_PARTS):
        path.unlink(missing_ok=True)
    return merged
