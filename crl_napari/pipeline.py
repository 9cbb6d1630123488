"""Folder of image/mask pairs -> a complete run folder: the one path the command line and the plugin share.

``train_run`` loads the data, optionally simulates the paper's label noise, trains, scores and writes the run
folder, yielding the training events (plus ``ScoresReady``) so each face shows progress its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cascade, noise, runs, scoring
from .atomic import remove_stale_temps
from .cascade import CheckpointSaved, EpochEnd, Finished, Started, TrainConfig, TrainingError
from .data import Dataset, load_dataset
from .runs import RunError, RunFolder
from .settings import check_size


@dataclass(frozen=True)
class ScoresReady:
    path: Path
    metrics: dict


def _resolve_data(data: Path | str | Dataset, size: int, skip_bad: bool, max_pixels: int | None = None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    return load_dataset(data, size=size, on_error="skip" if skip_bad else "raise", max_pixels=max_pixels)


def train_run(
    data: Path | str | Dataset,
    out: Path | str,
    config: TrainConfig | None = None,
    size: int = 256,
    simulate_noise: float = 0.0,
    noise_seed: int = 0,
    noise_footprint: str = "cross",
    resume: bool = False,
    skip_bad: bool = False,
    max_pixels: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator:
    """Train on the training split of ``data`` (all cases when it has no split) into the run folder ``out``.

    ``simulate_noise`` corrupts that ratio of the training masks (noise.simulate); the clean masks stay on
    disk, so ``evaluate``/``scoring`` can measure against them. ``resume`` continues the run in ``out`` with
    the settings in its config.json (a ``config`` that differs is refused; runs.open_for_resume); a run
    stopped or killed before its first checkpoint starts over in the same folder. The run's writer lock is
    held throughout: a second writer is refused naming this one. Temporary files a killed writer left are
    removed.
    """
    out = Path(out)
    if not resume:  # a size the U-Net cannot take is refused before any folder is made
        check_size(config or TrainConfig(), size)
    if resume and not RunFolder.is_run(out):
        raise RunError(f"{out}: nothing to resume (no run folder here); start without --resume")
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with runs.writer_lock(out, "train --resume" if resume else "train"):
        try:
            yield from _train_locked(data, out, config, size, simulate_noise, noise_seed, noise_footprint, resume,
                                     skip_bad, should_stop, max_pixels)
        except BaseException:  # failed before writing anything (bad data, say): leave no folder behind
            if created and [p.name for p in out.iterdir()] == [runs.LOCK]:
                (out / runs.LOCK).unlink(missing_ok=True)
                out.rmdir()
            raise


def _train_locked(data, out: Path, config, size, simulate_noise, noise_seed, noise_footprint, resume, skip_bad,
                  should_stop, max_pixels=None):
    restart = False  # resume asked, but no epoch was finished: train from epoch 1 in the same folder
    history: list[dict] = []
    if resume:
        plan = runs.open_for_resume(out, config)  # again under the lock: what another writer left is seen
        config, restart = plan.config, plan.start_epoch == 0
        size, simulate_noise, noise_seed = (plan.data[k] for k in ("size", "simulate_noise", "noise_seed"))
        noise_footprint = plan.data.get("noise_footprint", "cross")  # runs made before the option: the cross
        history = [h.as_dict() for h in plan.history]
        if not restart:
            _remove_temps(plan.run)
            plan.run.write_history(history)  # rows beyond the checkpoint's epoch go: the weights lead
    elif any(p.name != runs.LOCK for p in out.iterdir()) and not _never_trained(out):
        raise RunError(f"{out}: already exists and is not empty; choose another --out or pass --resume")
    elif any(p.name != runs.LOCK for p in out.iterdir()):
        restart = True  # a run that failed or was killed before its first checkpoint: start it over
    config = TrainConfig() if config is None else config
    ds = _resolve_data(data, size, skip_bad, max_pixels)
    train_ds = ds.subset("train") if any(c.split == "train" for c in ds) else ds
    if len(train_ds) < 2:
        raise TrainingError(f"{ds.root}: needs at least 2 training images, found {len(train_ds)}")
    images, clean = train_ds.images(), train_ds.masks()
    given, records = clean, None
    if simulate_noise > 0:
        given, records = noise.simulate(clean, train_ds.ids, simulate_noise, seed=noise_seed,
                                        reference_size=256, footprint=noise_footprint)
    if resume and not restart:
        run = RunFolder(out)
        listed = [r.id for r in run.case_rows()]
        if listed != list(train_ds.ids):
            raise RunError(f"{out / runs.CASES}: lists other training cases than {ds.root} holds now "
                           f"({len(listed)} listed, {len(train_ds)} found); resume with the data it was made from")
    else:
        if restart and RunFolder.is_run(out):
            RunFolder(out).remove_history()
        if restart:
            _remove_temps_in(out)
        run = RunFolder.create(out, config, {
            "root": str(Path(ds.root).resolve()) if ds.root else None, "size": int(size),
            "simulate_noise": float(simulate_noise), "noise_seed": int(noise_seed), "noise_footprint": noise_footprint,
            "skipped": [{"path": str(p), "reason": r} for p, r in ds.skipped], "warnings": list(ds.warnings),
        })
        rows = []
        for i, c in enumerate(train_ds):
            row = _case_row(c, "train")
            if records is not None:
                row.update(corrupted=int(records[i].corrupted), noise_op=records[i].op, noise_n=records[i].n)
            rows.append(row)
        run.write_cases(rows, images[:, 0], given)
        train_ids = set(train_ds.ids)
        held_out = [c for c in ds if c.id not in train_ids]
        if held_out:
            run.write_held_out([_case_row(c, "test") for c in held_out])
        history = []
    models = None
    for event in record_history(cascade.train(images, given, config, run_dir=out, resume=resume and not restart,
                                              should_stop=should_stop), run, history):
        if isinstance(event, Finished):
            models = event.models
            if event.stopped:
                yield event
                return
        yield event
    metrics = write_scores(run, models, images, given, clean if records is not None else None,
                           [r.corrupted for r in records] if records is not None else None)
    yield ScoresReady(run.scores_path, metrics)


def record_history(events: Iterator, run: RunFolder, history: list[dict]) -> Iterator:
    """Pass training events on, writing ``run``'s history.csv as epochs are checkpointed: an epoch's row waits
    for its checkpoint, so history never runs ahead of the weights (``history``: the rows kept so far)."""
    pending = None
    for event in events:
        if isinstance(event, Started):
            history = [h for h in history if int(h["epoch"]) < event.start_epoch]
        elif isinstance(event, EpochEnd):
            pending = {"epoch": event.epoch, "stage": event.stage, "selected": round(event.selected, 4),
                       "lr": event.lr, "seconds": round(event.seconds, 3), "val_dice": event.val_dice}
            pending.update({f"loss_{i}": round(v, 6) for i, v in enumerate(event.losses)})
        elif isinstance(event, CheckpointSaved) and pending is not None:
            history.append(pending)
            run.write_history(history)
            pending = None
        yield event


def _case_row(case, default_split: str) -> dict:
    """The columns cases.csv and held_out.csv share: where the originals are and their size."""
    return {"id": case.id, "split": case.split or default_split, "image_path": str(case.image_path),
            "mask_path": str(case.mask_path), "orig_h": case.original_shape[0], "orig_w": case.original_shape[1]}


def _remove_temps(run: RunFolder) -> None:
    _remove_temps_in(run.path)


def _remove_temps_in(out: Path) -> None:
    """Temporary files a killed writer left in the run folder."""
    for folder in (out, out / runs.IMAGES, out / runs.GIVEN, out / runs.CORRECTED):
        remove_stale_temps(folder)


def _never_trained(out: Path) -> bool:
    """A run folder holding nothing a new run would lose: only what a run writes before its first checkpoint
    (what an out-of-memory error at the first step, or a kill before the first epoch ended, leaves)."""
    try:
        RunFolder(out)
    except (RunError, TrainingError):
        return False
    return all(p.name in runs.BEFORE_TRAINING or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in out.iterdir())


def write_scores(run: RunFolder, models, images: np.ndarray, given: np.ndarray, clean: np.ndarray | None = None,
                 corrupted: list | None = None, keep_maps: frozenset[str] = frozenset()) -> dict:
    """Score every training image with the trained nets and write scores.csv and corrected/ (the maps of the
    ids in ``keep_maps`` stay as they are: corrections a reviewer accepted in an earlier round)."""
    probs = cascade.peer_probs(models, images)
    scores = scoring.score_probs(probs, given, run.train_config.T)
    ids = [r.id for r in run.case_rows()]
    run.write_scores(ids, scores, corrupted, keep_maps)
    metrics = {"n_images": len(ids), "mean_suspicion": float(scores.suspicion.mean())}
    if clean is not None and corrupted is not None:
        metrics.update(scoring.flagging_metrics(scores, clean, np.asarray(corrupted, dtype=bool)))
    return metrics


def score_run(run_dir: Path | str) -> dict:
    """(Re)compute scores.csv and corrected/ of a trained run from its checkpoint and saved masks, holding
    the run's writer lock (a run still training is refused, naming the process)."""
    run = RunFolder(run_dir)
    with runs.writer_lock(run.path, "score"):
        models = _load_models(run)
        rows = run.case_rows()
        size = run.config["data"]["size"]
        images = np.stack([_input_image(run, r, size) for r in rows])[:, None]
        given = np.stack([run.given(r.id) for r in rows]).astype(np.uint8)
        corrupted = [bool(r.corrupted) for r in rows] if rows and rows[0].corrupted is not None else None
        clean = _clean_masks(run, rows, size) if corrupted is not None else None
        return write_scores(run, models, images, given, clean, corrupted)


def _clean_masks(run: RunFolder, rows: list, size: int) -> np.ndarray | None:
    """The original masks (from the run's data root only), for the flagging metrics; None when one is gone."""
    from .data import DataError, read_mask, resize_mask

    masks = []
    for r in rows:
        path, _ = run.original(r.mask_path, "masks")
        if path is None:
            return None
        try:
            masks.append(resize_mask(read_mask(path), size))
        except DataError:
            return None
    return np.stack(masks).astype(np.uint8)


def _load_models(run: RunFolder) -> list:
    """The run's nets; a checkpoint that belongs to other settings than config.json (copied from another
    run, say) is refused rather than scored or evaluated silently."""
    models, config = cascade.load_models(run.path)
    runs.check_belongs(run, config)
    return models


def _input_image(run: RunFolder, row, size: int) -> np.ndarray:
    """The network input as training saw it: from the original file (only inside the run's data root), or
    from the run's display copy when the run folder moved to a machine without the data."""
    from .data import DataError, read_image, resize_image, zscore

    path, _ = run.original(row.image_path, "images")
    if path is not None:
        try:
            return zscore(resize_image(read_image(path), size))
        except (DataError, OSError):
            pass
    return zscore(run.image(row.id).astype(np.float32) / 255)


def evaluate_run(run_dir: Path | str, data: Path | str | Dataset | None = None, split: str = "test",
                 masks: str | None = None) -> dict:
    """Dice of the ensemble prediction against the masks of ``data``, on ``split`` when the data has one (all
    cases otherwise). ``masks`` says which masks those are (recorded). Writes RUN/evaluation.json."""
    run = RunFolder(run_dir)
    models = _load_models(run)
    root = data if data is not None else run.config["data"]["root"]
    if root is None:
        raise RunError(f"{run.path / runs.CONFIG}: no data folder recorded; pass --data")
    ds = _resolve_data(root, run.config["data"]["size"], skip_bad=False)
    has_split = any(c.split == split for c in ds)
    sub = ds.subset(split) if has_split else ds
    prob = cascade.predict(models, sub.images())
    dice = cascade.dice_score(prob, sub.masks())
    result = {"split": split if has_split else "all", "n": len(sub), "masks": masks, "dice_mean": float(dice.mean()),
              "dice_std": float(dice.std()), "per_image": dict(zip(sub.ids, map(float, dice), strict=True))}
    run.write_evaluation(result)
    return result


def next_round(run_dir: Path | str, *, warm_epochs: int | None = None, from_scratch: bool = False,
               should_stop: Callable[[], bool] | None = None) -> Iterator:
    """Train a reviewed run's next round with the reviewer's decisions, then rescore it: crl_napari.rounds."""
    from .rounds import next_round as _next_round

    return _next_round(run_dir, warm_epochs=warm_epochs, from_scratch=from_scratch, should_stop=should_stop)


def summary(run_dir: Path | str) -> dict:
    """A short description of a run folder for the command line and the plugin."""
    return RunFolder(run_dir).summary()
