"""Folder of image/mask pairs -> a complete run folder: the one path the command line and the plugin share.

``train_run`` loads the data, optionally simulates the paper's label noise, trains, scores and writes the run
folder, yielding the training events (plus ``ScoresReady``) so each face shows progress its own way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import cascade, distributed, heap, noise, run_data, runs, scoring, size_calibration
from .atomic import remove_stale_temps
from .cache import CacheProgress, open_cache
from .cascade import CheckpointSaved, EpochEnd, Finished, Started, TrainConfig, TrainingError
from .data import Dataset
from .evaluation import EvalCases, evaluate, split_cases
from .events import run_to_end
from .review_file import ReviewError, read_statuses
from .runs import RunError, RunFolder
from .settings import check_size
from .sources import CacheSource


@dataclass(frozen=True)
class ScoresReady:
    path: Path
    metrics: dict


@dataclass(frozen=True)
class ScoringStopped:
    """A stop was asked while the run was scored: ``done`` of ``total`` images are scored and kept
    (runs.ScoreProgress), no scores.csv yet; resuming the run goes on from them."""

    path: Path  # the run folder
    done: int
    total: int


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

    Under torchrun rank 0 does all of this and writes the run folder; the other ranks wait until it has
    prepared the run, then train beside it on the same inputs and score their share (distributed.py).
    """
    out = Path(out)
    if not distributed.is_writer():
        yield from _follow_training(out, should_stop)
        return
    lead = distributed.Lead()
    try:
        yield from _lead_training(data, out, config, size, simulate_noise, noise_seed, noise_footprint, resume,
                                  skip_bad, max_pixels, should_stop, lead)
    except BaseException as exc:  # before the other ranks were told how to go on: they stop with this error
        lead.fail(exc)
        raise


def _lead_training(data, out: Path, config, size, simulate_noise, noise_seed, noise_footprint, resume, skip_bad,
                   max_pixels, should_stop, lead: distributed.Lead) -> Iterator:
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
                                     skip_bad, should_stop, max_pixels, lead)
        except BaseException:  # failed before writing anything (bad data, say): leave no folder behind
            if created and {p.name for p in out.iterdir()} <= {runs.LOCK, runs.CACHE}:
                if (out / runs.CACHE).is_dir() and not (out / runs.CACHE).is_symlink():
                    shutil.rmtree(out / runs.CACHE)  # only what this call decoded: derived data
                (out / runs.LOCK).unlink(missing_ok=True)
                out.rmdir()
            raise


def _train_locked(data, out: Path, config, size, simulate_noise, noise_seed, noise_footprint, resume, skip_bad,
                  should_stop, max_pixels=None, lead: distributed.Lead | None = None):
    restart = False  # resume asked, but no epoch was finished: train from epoch 1 in the same folder
    history: list[dict] = []
    if resume:
        _check_unfinished(out)
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
    distributed.check_setup(config)  # before the cache is built or a run file written
    if isinstance(data, Dataset):
        rd = run_data.from_dataset(data)
    else:  # decoded once into the run's cache (progress yielded), then streamed
        rd = yield from run_data.from_folder(out, data, size, skip_bad, max_pixels)  # decoded by cache.decode_threads
    n_train = len(rd.train)
    if n_train < 2:
        raise TrainingError(f"{rd.root}: needs at least 2 training images, found {n_train}")
    distributed.check_shards(n_train, config.batch_size)
    records = None
    if simulate_noise > 0:
        records = noise.plan(rd.ids, n_train, rd.size, simulate_noise, seed=noise_seed, reference_size=256,
                             footprint=noise_footprint)
    for i in range(n_train):
        rd.given[i] = rd.clean(i) if records is None else noise.corrupt(rd.clean(i), records[i], noise_footprint)
    rd.flush()
    if resume and not restart:
        run = RunFolder(out)
        listed = [r.id for r in run.case_rows()]
        if listed != rd.ids:
            raise RunError(f"{out / runs.CASES}: lists other training cases than {rd.root} holds now "
                           f"({len(listed)} listed, {n_train} found); resume with the data it was made from")
    else:
        if restart and RunFolder.is_run(out):
            RunFolder(out).remove_history()
        if restart:
            _remove_temps_in(out)
        run = RunFolder.create(out, config, {
            "root": str(Path(rd.root).resolve()) if rd.root else None, "size": int(size),
            "simulate_noise": float(simulate_noise), "noise_seed": int(noise_seed), "noise_footprint": noise_footprint,
            "skipped": [{"path": str(p), "reason": r} for p, r in rd.skipped], "warnings": list(rd.warnings),
        })
        rows = []
        for i, c in enumerate(rd.train):
            row = _case_row(c, "train")
            if records is not None:
                row.update(corrupted=int(records[i].corrupted), noise_op=records[i].op, noise_n=records[i].n)
            rows.append(row)
        t0 = time.perf_counter()
        cases = ((c.id, rd.image(i), rd.given[i]) for i, c in enumerate(rd.train))
        for done in run.write_case_files_from(cases):  # minutes at N = 50,000: say how far it is
            yield CacheProgress(done, n_train, done, time.perf_counter() - t0, n_train - done,
                                what="writing the run folder:")
        run.write_case_table(rows)
        train_ids = set(rd.ids)
        held_out = [c for c in rd.cases if c.id not in train_ids]
        if held_out:
            run.write_held_out([_case_row(c, "test") for c in held_out])
        history = []
    if lead is not None:  # under torchrun: the run folder is ready, the other ranks may start
        lead.tell({"resume": resume and not restart, "config": asdict(config)})
    events = cascade.train_from(rd.source(), config, run_dir=out, resume=resume and not restart,
                                should_stop=should_stop)
    models = yield from trained_models(record_history(events, run, history))
    if models is None:
        return

    def read(idx):
        return (rd.images(idx), np.asarray(rd.given[idx[0]:idx[-1] + 1]),
                np.stack([rd.clean(i) for i in idx]) if records is not None else None)

    keep = accepted_corrections(run) if resume else frozenset()  # a reviewed run's scoring that was stopped
    metrics = yield from score_batches(run, models, n_train, read,
                                       [r.corrupted for r in records] if records is not None else None,
                                       keep_maps=keep, should_stop=should_stop)
    if metrics is not None:
        yield ScoresReady(run.scores_path, metrics)


def _check_unfinished(out: Path) -> None:
    """Resume only what did not finish: scoring a trained and scored run again here would rewrite its maps, the
    corrections a reviewer accepted among them."""
    run = RunFolder(out)
    if run.has_scores and not run.scores_stale:
        raise RunError(f"{out}: trained and scored: nothing to resume (`crl-napari score` scores it again, "
                       "`crl-napari next-round` trains a review round)")


def trained_models(events: Iterator) -> Generator[object, None, list | None]:
    """Pass training events on; the trained nets (``models = yield from trained_models(events)``), or None
    when training was stopped (its Finished event passed on first)."""
    for event in events:
        yield event
        if isinstance(event, Finished):
            return None if event.stopped else event.models
    return None


def record_history(events: Iterator, run: RunFolder, history: list[dict]) -> Iterator:
    """Pass training events on, writing ``run``'s history.csv as epochs are checkpointed: an epoch's row waits
    for its checkpoint, so history never runs ahead of the weights (``history``: the rows kept so far)."""
    pending = None
    for event in events:
        if isinstance(event, Started):
            history = [h for h in history if int(h["epoch"]) < event.start_epoch]
        elif isinstance(event, EpochEnd):
            pending = runs.epoch_line(event)
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
    (what an out-of-memory error at the first step, or a kill before the first epoch ended, leaves), or only
    the cache of a build stopped before the run folder was made."""
    if {p.name for p in out.iterdir()} <= {runs.LOCK, runs.CACHE}:
        return True
    try:
        RunFolder(out)
    except (RunError, TrainingError):
        return False
    return all(p.name in runs.BEFORE_TRAINING or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in out.iterdir())


SCORE_CHUNK_PIXELS = 1 << 22  # pixels of one scoring chunk (1,024 images at 64 px, 64 at 256 px)


def score_batches(run: RunFolder, models, n: int, read: Callable, corrupted: list | None = None,
                  keep_maps: frozenset[str] = frozenset(), should_stop: Callable[[], bool] | None = None
                  ) -> Generator[CacheProgress | ScoringStopped, None, dict | None]:
    """Score the run's ``n`` training images chunk by chunk: ``read(idx)`` gives (images (B, 1, H, W), given
    (B, H, W), clean masks or None) of consecutive cases ``idx``; the maps are written as they come, scores.csv
    (ranked over all) last; returns the metrics. Memory holds one chunk (and with the size calibration the nets'
    maps it kept, :data:`CALIBRATION_KEEP_BYTES`). Yields progress after each chunk
    (CacheProgress, what "scoring"): at 256 px scoring takes hours for 50,000 images. A scoring that was stopped
    or killed goes on from the chunks it finished (runs.ScoreProgress). ``should_stop`` is asked between chunks
    (in one process): a stop yields ScoringStopped and returns None. Flagging metrics when ``corrupted`` and
    every clean mask are known. Under torchrun each rank scores and writes the maps of its block of the cases;
    rank 0 gathers the scores and writes scores.csv (the other ranks return no metrics)."""
    import torch

    heap.map_large_blocks()  # peak memory flat in the number of chunks (heap.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(run.train_config.n_threads)  # as training: one thread per core was 3-10x slower on a
    try:  # busy machine
        return (yield from _score_batches(run, models, n, read, corrupted, keep_maps, should_stop))
    finally:
        torch.set_num_threads(threads)


def _score_batches(run: RunFolder, models, n: int, read: Callable, corrupted: list | None,
                   keep_maps: frozenset[str], should_stop: Callable[[], bool] | None
                   ) -> Generator[CacheProgress | ScoringStopped, None, dict | None]:
    ids = [r.id for r in run.case_rows()]
    size = int(run.config["data"]["size"])
    chunk = max(16, SCORE_CHUNK_PIXELS // (size * size) // 16 * 16)
    keys = ("suspicion", "uncertainty", "disagreement", "dice_given_corrected")
    parts: dict[str, list] = {k: [] for k in runs.score_progress.COLUMNS}
    known = corrupted is not None
    settings = {"size": size, "tta": run.train_config.tta, "T": run.train_config.T, "keep_maps": sorted(keep_maps),
                "clean_known": known}
    if run.train_config.border_fit:  # only then: the chunks a scoring without it kept still match their own
        settings["border_fit"] = run.train_config.border_fit
        settings["nets_maps"] = 1  # chunks scored before the nets' maps were kept (NETS16) are scored again
    mine = distributed.block(n, distributed.rank(), distributed.world_size())
    first, end = (int(mine[0]), int(mine[-1]) + 1) if len(mine) else (0, 0)
    size_offset = None
    seen: dict[tuple[int, int], np.ndarray] = {}  # the calibration's maps of chunks, scored from them below
    if run.train_config.size_calibration:  # the offset over all the images first: every correction is made with it
        runs.ScoreProgress(run.path, "").prepare()  # a link or a file in the progress folder's place: refused first
        stop = should_stop if distributed.world_size() == 1 else None
        with distributed.Together("size calibration"):
            chunks = frozenset((s, min(end, s + chunk)) for s in range(first, end, chunk))  # what this process scores
            size_offset = yield from _calibration_offset(run, models, n, read, chunk, stop, seen, chunks)
        if size_offset is None:  # stopped before any correction was made: nothing to keep
            yield ScoringStopped(run.path, 0, end - first)
            return None
        settings["size_offset"] = size_offset  # a scoring that found another offset kept chunks of other corrections
    progress = runs.ScoreProgress(run.path, runs.fingerprint(models, ids, settings))
    progress.prepare()
    starts = range(first, end, chunk)
    found = {s: progress.load(s, min(end, s + chunk) - s) for s in starts}
    before = sum(min(end, s + chunk) - s for s, v in found.items() if v is not None)
    what = f"scoring (going on after a stop: {before} scored before)" if before else "scoring"
    t0, scored = time.perf_counter(), 0
    yield CacheProgress(before, end - first, 0, 0.0, end - first - before, what=what)
    with distributed.Together("scoring"):  # under torchrun a rank that fails here stops every rank
        for start in starts:
            idx = list(range(start, min(end, start + chunk)))
            columns = found[start]
            if columns is None and should_stop is not None and distributed.world_size() == 1 and should_stop():
                yield ScoringStopped(run.path, before + scored, end - first)
                return None
            if columns is None:
                columns = _score_chunk(run, models, ids, idx, read, keep_maps, known, size_offset,
                                       seen.pop((idx[0], idx[-1] + 1), None))
                progress.save(start, columns)
                scored += len(idx)
                yield CacheProgress(before + scored, end - first, scored, time.perf_counter() - t0,
                                    end - first - before - scored, what=what)
            for k, v in columns.items():
                parts[k].append(v)
    columns = {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in parts.items()}
    columns = distributed.gather(run.path, n, columns)
    if columns is None:
        return {}
    scores = scoring.ImageScores(**{k: columns[k] for k in keys}, corrected=None, prob=None, pixel_uncertainty=None)
    run.write_score_table(ids, scores, corrupted, [int(e) for e in columns["extra_pieces"]], size_offset)
    progress.clear()
    share = scoring.noise_share(scores.suspicion) if len(ids) else None  # how many given masks look wrong
    metrics = {"n_images": len(ids), "mean_suspicion": float(scores.suspicion.mean()), "noise_share": share,
               "suggested_keep_ratio": scoring.keep_from_share(share, run.keep_ratio)}
    if size_offset is not None:
        metrics["size_offset"] = size_offset
    d_corr = columns["correction_dice"]
    if corrupted is not None and not np.isnan(d_corr).any():
        metrics.update(scoring.flagging_from(scores.suspicion, scores.uncertainty, d_corr, corrupted))
    return metrics


def _score_chunk(run: RunFolder, models, ids: list[str], idx: list[int], read: Callable,
                 keep_maps: frozenset[str], known: bool, size_offset: float | None = None,
                 probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Score the consecutive cases ``idx`` and write their maps; their per-image numbers (runs.score_progress).
    ``size_offset``: the size calibration's offset, found over every image (:func:`_calibration_offset`);
    ``probs``: the nets' probabilities of these cases where the calibration kept them (else inferred here)."""
    images, given, clean = read(idx)
    if probs is None:
        probs = cascade.peer_probs(models, images, tta=run.train_config.tta)
    sc = scoring.score_probs(probs, given, run.train_config.T, border_fit=bool(run.train_config.border_fit),
                             calibrate=size_offset is not None, size_offset=size_offset)
    chunk_ids = ids[idx[0]:idx[-1] + 1]
    scoring.keep_corrections(sc, given, {j: run.corrected(i) for j, i in enumerate(chunk_ids) if i in keep_maps})
    extra = np.asarray(run.write_score_maps(chunk_ids, sc, keep_maps), dtype=np.int64)
    d_corr = scoring.correction_dice(sc, clean) if known and clean is not None else np.full(len(idx), np.nan)
    return {"suspicion": sc.suspicion, "uncertainty": sc.uncertainty, "disagreement": sc.disagreement,
            "dice_given_corrected": sc.dice_given_corrected, "extra_pieces": extra,
            "correction_dice": np.asarray(d_corr, dtype=np.float64)}


#: Size calibration looks at every image of a set up to this many, else at this many in evenly spread blocks
CALIBRATION_SAMPLE = 1024
_CALIBRATION_BLOCKS = 16
#: The calibration keeps the nets' probabilities of the scoring's own chunks it meets, up to this many bytes, and
#: the scoring that follows makes those chunks' corrections from them instead of running the nets again: inference
#: was most of a scoring's time, and a set of at most CALIBRATION_SAMPLE images went through the nets twice
#: (Shenzhen's 385 training images at 256 px, width 16, 2 cores: `score` took 242 s, 152 s with the maps kept).
#: 256 MB holds 3 nets' maps of every image of a 1,024-image set at 128 px, of 320 at 256 px (five chunks of 64).
CALIBRATION_KEEP_BYTES = 1 << 28


def _calibration_offset(run: RunFolder, models, n: int, read: Callable, chunk: int,
                        should_stop: Callable[[], bool] | None = None,
                        keep: dict[tuple[int, int], np.ndarray] | None = None,
                        chunks: frozenset[tuple[int, int]] = frozenset()
                        ) -> Generator[CacheProgress, None, float | None]:
    """The size calibration's offset (crl_napari.size_calibration) found before any correction is made: the nets
    see every image (at most :data:`CALIBRATION_SAMPLE`, in evenly spread consecutive blocks, of a larger set), and
    the given masks of the fifth that look most right set the size. Every rank of a torchrun finds the same one.
    None when ``should_stop`` says so between two blocks. ``keep`` receives the probabilities of the cases
    ``range(a, b)`` under the key ``(a, b)`` where that is one of the scoring's ``chunks`` (this process's; a larger
    set's sample blocks rarely are), while they fit in :data:`CALIBRATION_KEEP_BYTES`."""
    if n <= CALIBRATION_SAMPLE:
        blocks = [(0, n)]
    else:
        size = CALIBRATION_SAMPLE // _CALIBRATION_BLOCKS
        blocks = [(int(a), int(a) + size) for a in np.linspace(0, n - size, _CALIBRATION_BLOCKS).round()]
    spans = [(a, min(b, a + chunk)) for lo, b in blocks for a in range(lo, b, chunk)]
    total = sum(b - a for a, b in spans)
    suspicion, bands, areas = [], [], []
    t0 = time.perf_counter()
    yield CacheProgress(0, total, 0, 0.0, total, what="size calibration")
    for a, b in spans:
        if should_stop is not None and should_stop():
            return None
        images, given, _ = read(list(range(a, b)))
        probs = cascade.peer_probs(models, images, tta=run.train_config.tta)
        if (keep is not None and (a, b) in chunks
                and sum(p.nbytes for p in keep.values()) + probs.nbytes <= CALIBRATION_KEEP_BYTES):
            keep[(a, b)] = probs
        s, band = scoring.calibration_view(probs, given, run.train_config.T)
        suspicion.append(s)
        bands += band
        areas.append(np.asarray(given).reshape(len(given), -1).astype(bool).sum(1))
        done = len(bands)
        yield CacheProgress(done, total, done, time.perf_counter() - t0, total - done, what="size calibration")
    chosen = size_calibration.lowest(np.concatenate(suspicion) if suspicion else np.zeros(0))
    return size_calibration.offset_from_bands([bands[i] for i in chosen],
                                              np.concatenate(areas)[chosen] if areas else np.zeros(0))


def score_run(run_dir: Path | str, progress: Callable[[CacheProgress], object] | None = None) -> dict:
    """(Re)compute scores.csv and corrected/ of a trained run from its checkpoint and saved masks, holding
    the run's writer lock (a run still training is refused, naming the process). The images come from the
    run's cache when it holds them, else from the original files or the run's display copies. Corrections a
    reviewer accepted (review.json) keep their maps, as a review round keeps them: the masks they saw. A
    scoring that was stopped or killed goes on where it was; ``progress`` gets score_batches' records."""
    run = RunFolder(run_dir)
    with distributed.writer_lock(run.path, "score"):
        keep = accepted_corrections(run)
        return run_to_end(score_saved(run, _load_models(run), keep), progress)


def score_saved(run: RunFolder, models, keep_maps: frozenset[str] = frozenset(),
                should_stop: Callable[[], bool] | None = None
                ) -> Generator[CacheProgress | ScoringStopped, None, dict | None]:
    """Score a run's training cases with ``models`` (score_batches), reading them as training did
    (run_data.image_reader) with the given masks the run saved; the maps of ``keep_maps`` ids stay."""
    rows = run.case_rows()
    size = run.config["data"]["size"]
    image = run_data.image_reader(run, rows, size)
    corrupted = [bool(r.corrupted) for r in rows] if rows and rows[0].corrupted is not None else None

    def read(idx):
        return (np.stack([image(i) for i in idx])[:, None],
                np.stack([run.given(rows[i].id) for i in idx]).astype(np.uint8),
                run_data.clean_masks(run, [rows[i] for i in idx], size) if corrupted is not None else None)

    return (yield from score_batches(run, models, len(rows), read, corrupted, keep_maps, should_stop))


def accepted_corrections(run: RunFolder) -> frozenset[str]:
    """Ids whose correction a reviewer accepted in review.json and that is on disk: rescoring leaves those maps
    alone. An unreadable review.json is refused, naming it, rather than rewriting what was accepted in it."""
    try:
        statuses = read_statuses(run.path)
    except ReviewError as exc:
        raise RunError(f"{exc}; fix or move it first: scoring would rewrite the corrections accepted in it") from None
    return frozenset(i for i, s in statuses.items()
                     if s == "accepted" and run.file(runs.CORRECTED, f"{i}.png").is_file())


def _follow_training(out: Path, should_stop) -> Iterator:
    """A rank other than 0 under torchrun: once rank 0 has prepared the run folder and its cache (given masks
    included), or stopped with its error, train beside it on the same cache; score its block of the cases."""
    plan = distributed.follow()
    run = RunFolder(out)
    rows = run.case_rows()
    cache = open_cache(run.path)
    slots = {c.id: c.slot for c in cache.cases()}
    source = CacheSource(cache.folder, len(cache), cache.size, [slots[r.id] for r in rows],
                         cache.folder / runs.CACHE_GIVEN)
    events = cascade.train_from(source, TrainConfig.from_dict(plan["config"]), run_dir=out, resume=plan["resume"],
                                should_stop=should_stop)
    models = yield from trained_models(events)
    if models is None:
        return
    noisy = rows[0].corrupted is not None if rows else False

    def read(idx):
        return (source.images(idx), source.labels(idx),
                np.stack([cache.mask(slots[rows[i].id]) for i in idx]) if noisy else None)

    corrupted = [bool(r.corrupted) for r in rows] if noisy else None
    yield ScoresReady(run.scores_path, (yield from score_batches(run, models, len(rows), read, corrupted)))


def _load_models(run: RunFolder) -> list:
    """The run's nets; a checkpoint that belongs to other settings than config.json (copied from another
    run, say) is refused rather than scored or evaluated silently."""
    models, config = cascade.load_models(run.path)
    runs.check_belongs(run, config)
    return models


def evaluate_run(run_dir: Path | str, data: Path | str | Dataset | EvalCases | None = None, split: str = "test",
                 masks: str | None = None) -> dict:
    """Dice of the ensemble prediction against the masks of ``data``, on ``split`` when the data has one (all
    cases otherwise), decoded chunk by chunk (evaluation.py). ``masks`` says which masks those are (recorded).
    Writes RUN/evaluation.json."""
    run = RunFolder(run_dir)
    models = _load_models(run)
    root = data if data is not None else run.config["data"]["root"]
    if root is None:
        raise RunError(f"{run.path / runs.CONFIG}: no data folder recorded; pass --data")
    cases = root if isinstance(root, EvalCases) else split_cases(root, run.config["data"]["size"], split)
    result = evaluate(models, cases, masks, tta=run.train_config.tta)
    run.write_evaluation(result)
    return result


def summary(run_dir: Path | str) -> dict:
    """A short description of a run folder for the command line and the plugin."""
    return RunFolder(run_dir).summary()
