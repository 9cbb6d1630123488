"""The one resume path and the one settings diff: the command line, the pipeline and the Train widget all ask
:func:`open_for_resume`, which reads (never writes) and says where training goes on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import read_meta
from ..settings import TrainConfig, TrainingError, settings_diff
from .errors import RunError
from .folder import RunFolder
from .names import CHECKPOINT, CONFIG
from .rows import HistoryRow, history_row


def data_diff(saved: dict, asked: dict) -> dict:
    """{data setting: (saved, asked)} for the data settings given (size, simulate_noise, noise_seed)."""
    return {k: (saved.get(k), v) for k, v in asked.items() if v is not None and saved.get(k) != v}


@dataclass(frozen=True)
class Resume:
    """Where a resumed run goes on: its own settings, the first epoch to train (0: no checkpoint yet, train
    from the start in the same folder) and the history rows the checkpoint vouches for."""

    run: RunFolder
    config: TrainConfig
    data: dict
    start_epoch: int
    history: list[HistoryRow]


def checkpoint_meta(run: RunFolder) -> tuple[int, TrainConfig]:
    """(last finished epoch, settings) from the checkpoint's metadata, checked against config.json: a
    checkpoint from another run, or one claiming an epoch beyond the run's, is refused naming the file. Its
    tensors are not read (checkpoint.read_meta): the training that resumes reads and checks them, once."""
    epoch, config, _line = _meta(run)
    return epoch, config


def _meta(run: RunFolder) -> tuple[int, TrainConfig, dict | None]:
    path = run.path / CHECKPOINT
    meta = read_meta(path)
    try:
        config = TrainConfig.from_dict(meta["config"])
        epoch = meta["epoch"]
    except (KeyError, TypeError, ValueError, TrainingError) as exc:
        raise RunError(f"{path}: not a crl-napari checkpoint of this version ({exc})") from exc
    check_belongs(run, config)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < run.train_config.epochs:
        raise RunError(f"{path}: epoch {epoch!r} is not one of the run's {run.train_config.epochs} epochs")
    return epoch, config, meta["history_line"]


def check_belongs(run: RunFolder, config: TrainConfig) -> None:
    """RunError when a checkpoint's settings are not config.json's (copied in from another run, say); runtime
    settings (threads, workers) may differ: napari trains a review round with the viewer's thread count."""
    diff = settings_diff(run.train_config, config)
    if diff:
        raise RunError(f"{run.path / CHECKPOINT}: does not belong to this run; it was trained with other "
                       f"settings than {CONFIG} says ({CONFIG}, checkpoint): {diff}")


def open_for_resume(path: Path | str, config: TrainConfig | dict | None = None,
                    data_settings: dict | None = None) -> Resume:
    """Check that the run in ``path`` can go on with the settings asked (``config``: a whole TrainConfig, or
    the settings given explicitly; ``data_settings``: size / simulate_noise / noise_seed given explicitly) and
    say where. A difference is refused naming every setting; reads only."""
    path = Path(path)
    if not RunFolder.is_run(path):
        raise RunError(f"{path}: nothing to resume (no run folder here); start without --resume")
    run = RunFolder(path)
    diff = data_diff(run.data_settings, data_settings or {})
    if diff:
        raise RunError(f"{path / CONFIG}: the run was made with other data settings; a resumed run keeps its own "
                       f"(saved, asked): {diff}")
    if config is not None:
        diff = settings_diff(run.train_config, config)
        if diff:
            raise TrainingError(f"{path / CONFIG}: the run was trained with other settings; a resumed run keeps "
                                f"its own (saved, asked): {diff}")
    if run.has_cases:
        run.case_rows(held_out=True)  # a tampered case list is refused now, not after the last epoch
    start, line = 0, None
    if run.has_checkpoint:
        epoch, _config, line = _meta(run)
        start = epoch + 1
    history = [h for h in run.history_rows() if h.epoch < start]
    if start and (not history or history[-1].epoch < start - 1) and line is not None:
        # killed after the checkpoint was saved, before history.csv had its line: the checkpoint kept it
        history.append(history_row(line, f"{path / CHECKPOINT}: history line", run.train_config.epochs))
        if history[-1].epoch != start - 1:
            raise RunError(f"{path / CHECKPOINT}: its history line is of epoch {history[-1].epoch}, not of its own "
                           f"epoch {start - 1}")
    return Resume(run, run.train_config, run.data_settings, start, history)
