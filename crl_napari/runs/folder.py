"""RunFolder: the only code that knows a run folder's files (their names are in names.py).

Every file is written atomically, so a reader (the plugin while the command line still trains, say) always
sees a whole file. Everything read is checked (checks.py, rows.py); every write resolves inside the run and
refuses a symbolic link among the run's own entries (``corrected/`` pointing at the source masks, say).
Reading one case's files (originals from the data root, the run's display copies and maps) is case_files.CaseFiles,
which RunFolder extends.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import AtomicBatch, atomic_write_json, atomic_write_text, encode_png
from ..data import MAX_PIXELS
from ..ids import check_id
from ..native import encode_prob
from ..postprocess import clean_mask, extra_pieces
from ..settings import TrainConfig
from . import rows as _rows
from .case_files import CaseFiles
from .checks import check_data, check_train
from .errors import RunError
from .json_file import read_json
from .names import (
    CASE_FIELDS,
    CASES,
    CHECKPOINT,
    CONFIG,
    CORRECTED,
    DATA_ROOT,
    EDITS,
    EVALUATION,
    GIVEN,
    HELD_OUT,
    HELD_OUT_FIELDS,
    HISTORY,
    HISTORY_FIELDS,
    IMAGES,
    NETS16,
    PROB16,
    REVIEW,
    SCORE_FIELDS,
    SCORES,
    SCORING,
)

MAX_CONFIG_BYTES = 4 << 20
CASE_BATCH = 256  # cases whose two files write_case_files makes durable together (atomic.AtomicBatch)
CASE_THREADS = min(4, os.cpu_count() or 1)  # threads encoding the cases' PNGs (write_case_files_from)


def versions() -> dict:
    """Package versions recorded with every run, to explain differences between machines."""
    import torch

    from .. import __version__

    return {"crl_napari": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool or a.max(initial=0) <= 1 and a.dtype != np.float32:
        return (np.asarray(a) > 0).astype(np.uint8) * 255
    return np.clip(np.round(np.asarray(a, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def _plain_name(part: str) -> bool:
    """One entry's own name: not empty, ".", "..", and without a separator."""
    return part not in ("", ".", "..") and "/" not in part and (os.sep not in part) and \
        (os.altsep is None or os.altsep not in part)


def inside(root: Path, *parts: str) -> Path:
    """``root/parts...`` for writing: RunError when any entry below ``root`` on the way is a symbolic link or
    the result resolves outside ``root`` (the root itself may be a link: the user chose it)."""
    path = Path(root)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise RunError(f"{path}: is a symbolic link; refusing to write through it (a run folder's entries "
                           "must be plain files and folders inside it)")
    if all(_plain_name(p) for p in parts):  # no link on the way and no "..": inside by construction
        return path
    real_root = Path(root).resolve()
    if real_root not in path.resolve().parents and path.resolve() != real_root:
        raise RunError(f"{path}: resolves outside the run folder {real_root}; refusing to write there")
    return path


def read_score_rows(run_dir: Path | str) -> list[_rows.ScoreRow]:
    """scores.csv of ``run_dir`` checked and sorted by rank; needs no config.json (a review opens on a folder
    holding only its scores and masks)."""
    path = Path(run_dir) / SCORES
    if not path.is_file():
        raise RunError(f"{path}: missing; the run has not been scored yet (finish training or score it)")
    return _rows.score_rows(path)


class RunFolder(CaseFiles):
    """A checked run folder: read access, and the writers the pipeline uses to fill it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"{self.path}: not a run folder (no such directory)")
        cfg_path = self.path / CONFIG
        if not cfg_path.is_file():
            raise RunError(f"{self.path}: not a run folder ({CONFIG} missing)")
        config = read_json(cfg_path, MAX_CONFIG_BYTES, "invalid run configuration")
        if not isinstance(config, dict):
            raise RunError(f"{cfg_path}: invalid run configuration (expected a JSON object)")
        self.train_config = check_train(config.get("train"), cfg_path)
        config["data"] = check_data(config.get("data"), cfg_path, self.train_config.depth)
        self.config = config
        self._moved_root: Path | None | bool = False  # not read yet (see moved_root)
        self._case_files = AtomicBatch()  # case files written but not renamed yet: write_case_table commits

    # --- what a face asks of a bare path ---------------------------------------------------------------
    @staticmethod
    def is_run(path: Path | str) -> bool:
        """Whether ``path`` looks like a run folder (cheap: no file is read)."""
        return (Path(path) / CONFIG).is_file()

    @staticmethod
    def is_scored(path: Path | str) -> bool:
        """A run with scores: reviewable."""
        return (Path(path) / CONFIG).is_file() and (Path(path) / SCORES).is_file()

    @staticmethod
    def can_resume(path: Path | str) -> bool:
        """A run with a checkpoint and no scores yet: training stopped before its end."""
        p = Path(path)
        return (p / CHECKPOINT).is_file() and not (p / SCORES).is_file()

    # --- paths -------------------------------------------------------------------------------------------
    def file(self, *parts: str) -> Path:
        """A path inside the run for writing (see :func:`inside`)."""
        return inside(self.path, *parts)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES

    @property
    def review_path(self) -> Path:
        return self.path / REVIEW

    @property
    def evaluation_path(self) -> Path:
        return self.file(EVALUATION)

    def edit_path(self, image_id: str) -> Path:
        return self.file(EDITS, f"{check_id(image_id, self.path / EDITS)}.png")

    @property
    def data_root(self) -> Path | None:
        root = self.config["data"].get("root")
        return Path(root) if root else None

    @property
    def moved_root(self) -> Path | None:
        """The data folder the reviewer pointed at when the data moved (``RUN/data_root.json``), or None.
        RunError naming the file when it is not ``{"root": "<folder>"}``."""
        if self._moved_root is False:
            self._moved_root = self._read_moved_root()
        return self._moved_root

    def _read_moved_root(self) -> Path | None:
        path = self.path / DATA_ROOT
        if not path.is_file():
            return None
        obj = read_json(path, MAX_CONFIG_BYTES, "unreadable data folder setting")
        if not isinstance(obj, dict) or not isinstance(obj.get("root"), str) or not obj["root"].strip():
            raise RunError(f"{path}: expected {{\"root\": \"<data folder>\"}}")
        return Path(obj["root"])

    def remember_data_root(self, root: Path | str) -> Path:
        """Remember where the originals are now (the data moved): ``RUN/data_root.json``, read by
        :meth:`original` from then on (review and export). RunError, and nothing written, unless ``root`` holds
        ``images/`` with this run's first image."""
        root = Path(root).expanduser()
        if not (root / IMAGES).is_dir():
            raise RunError(f"{root}: not a data folder (no {IMAGES}/ folder in it)")
        rows = self.case_rows() if self.has_cases else []
        if rows and self._find(rows[0].image_path, IMAGES, root)[0] is None:
            name = rows[0].image_path.replace("\\", "/").rsplit("/", 1)[-1]
            raise RunError(f"{root}: not this run's data folder ({IMAGES}/{name} is not there)")
        resolved = root.resolve()
        atomic_write_json(self.file(DATA_ROOT), {
            "root": str(resolved), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self._moved_root = resolved
        return resolved

    @property
    def data_settings(self) -> dict:
        """size, simulate_noise, noise_seed as the run was made."""
        return {k: self.config["data"][k] for k in ("size", "simulate_noise", "noise_seed")}

    @property
    def noise_simulated(self) -> bool:
        """Whether training corrupted the masks itself (simulate_noise): then an original mask file is the truth
        the noise was drawn from, not the mask training was given."""
        return float(self.config["data"].get("simulate_noise") or 0) > 0

    # --- creating ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | str, train: TrainConfig, data: dict) -> RunFolder:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # what is written is what opening accepts: a run this package makes always opens again
        check_train(asdict(train), path / CONFIG)
        check_data(data, path / CONFIG, train.depth)
        # config.json first: a process killed at any point leaves either an empty folder (a new run may
        # start there) or a run folder that `--resume` recognises, never an unrecognisable non-empty one
        atomic_write_json(inside(path, CONFIG), {
            "format": 1,
            "train": asdict(train),
            "data": data,
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        for sub in (IMAGES, GIVEN, CORRECTED):
            inside(path, sub).mkdir(exist_ok=True)
        return cls(path)

    def write_cases(self, rows: list[dict], images: np.ndarray, given: np.ndarray) -> None:
        """cases.csv plus display images and the given masks (the ones training saw)."""
        for r, img, m in zip(rows, images, given, strict=True):
            self.write_case_files(r["id"], img, m)
        self.write_case_table(rows)

    def write_case_files(self, id_: str, image: np.ndarray, given: np.ndarray) -> None:
        """One case's display image (from the z-scored training image) and given mask. They are made durable
        and take their names in batches of CASE_BATCH cases, the last batch by :meth:`write_case_table` (each
        file still appears whole or not at all; a kill leaves temporary files, swept when the run restarts)."""
        self._stage(self._case_pngs(id_, image, given))

    def write_case_files_from(self, cases: Iterable[tuple[str, np.ndarray, np.ndarray]],
                              workers: int = CASE_THREADS) -> Iterator[int]:
        """:meth:`write_case_files` for a stream of ``(id, image, given)``, CASE_BATCH cases at a time, their PNGs
        encoded by ``workers`` threads (Pillow's encoder lets go of the GIL; one thread takes minutes at
        N = 50,000); yields how many cases are written after each batch."""
        done, it = 0, iter(cases)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            while batch := list(islice(it, CASE_BATCH)):
                for files in pool.map(lambda case: self._case_pngs(*case), batch):
                    self._stage(files)
                done += len(batch)
                yield done

    def _stage(self, files: list[tuple[Path, bytes]]) -> None:
        """Stage one case's files; every CASE_BATCH cases they are made durable and take their names together."""
        for path, data in files:
            self._case_files.add(path, data)
        if len(self._case_files) >= 2 * CASE_BATCH:
            self._case_files.commit()

    def _case_pngs(self, id_: str, image: np.ndarray, given: np.ndarray) -> list[tuple[Path, bytes]]:
        """A case's two files, encoded (what write_case_files writes)."""
        id_ = check_id(id_, self.path / CASES)
        lo, hi = np.percentile(image, [0.5, 99.5])
        disp = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
        return [(self.file(IMAGES, f"{id_}.png"), encode_png(_to_uint8(disp.astype(np.float32)))),
                (self.file(GIVEN, f"{id_}.png"), encode_png(_to_uint8(given > 0)))]

    def write_case_table(self, rows: list[dict]) -> None:
        """cases.csv, after every case's files (write_case_files, whose last batch is committed first)."""
        self._case_files.commit()
        atomic_write_text(self.file(CASES), _rows.csv_text(rows, CASE_FIELDS))

    def write_held_out(self, rows: list[dict]) -> None:
        """The data set's other cases (its test split): never trained on or scored, but part of the data set,
        so an export of the cleaned set carries them over with their original masks."""
        for r in rows:
            check_id(r["id"], self.path / HELD_OUT)
        atomic_write_text(self.file(HELD_OUT), _rows.csv_text(rows, HELD_OUT_FIELDS))

    def write_history(self, rows: list[dict]) -> None:
        atomic_write_text(self.file(HISTORY), _rows.csv_text(rows, HISTORY_FIELDS))

    def remove_history(self) -> None:
        self.file(HISTORY).unlink(missing_ok=True)

    def write_scores(self, ids: list[str], scores, corrupted: list | None = None,
                     keep_maps: frozenset[str] = frozenset()) -> None:
        """The corrected masks, probability and uncertainty maps, then scores.csv (sorted by rank) last, so
        a scores.csv always describes maps that are there. The maps of ``keep_maps`` ids are left as they are
        (a review round keeps the corrections a reviewer accepted)."""
        extra = self.write_score_maps(ids, scores, keep_maps)
        self.write_score_table(ids, scores, corrupted, extra)

    def write_score_maps(self, ids: list[str], scores, keep_maps: frozenset[str] = frozenset()) -> list[int]:
        """The maps of ``scores`` (ImageScores of these ``ids``, a batch or all), except those of ``keep_maps``
        ids; the extra pieces of each corrected mask, for :meth:`write_score_table`. Written as one
        atomic.AtomicBatch: each file whole or not at all, a few fsync transactions for the whole batch."""
        corr_dir = self.file(CORRECTED)
        corr_dir.mkdir(exist_ok=True)
        with AtomicBatch() as batch:
            for i, id_ in enumerate(ids):
                check_id(id_, self.path / CASES)
                if id_ in keep_maps:
                    continue
                prob, unc = scores.prob[i].astype(np.float32), scores.pixel_uncertainty[i].astype(np.float32)
                batch.add(self.file(CORRECTED, f"{id_}.png"), encode_png(_to_uint8(scores.corrected[i])))
                batch.add(self.file(CORRECTED, f"{id_}_prob.png"), encode_png(_to_uint8(prob)))
                batch.add(self.file(CORRECTED, f"{id_}{PROB16}"), encode_png(encode_prob(scores.prob[i])))
                if scores.nets_prob is not None:
                    batch.add(self.file(CORRECTED, f"{id_}{NETS16}"), encode_png(encode_prob(scores.nets_prob[i])))
                else:  # a scoring without the border fit: no stale map of an earlier one beside the new correction
                    self.file(CORRECTED, f"{id_}{NETS16}").unlink(missing_ok=True)
                batch.add(self.file(CORRECTED, f"{id_}_unc.png"), encode_png(_to_uint8(unc)))
        return [extra_pieces(clean_mask(scores.corrected[i])) for i in range(len(ids))]

    def write_score_table(self, ids: list[str], scores, corrupted: list | None, extra: list[int],
                          size_offset: float | None = None) -> None:
        """scores.csv from the per-image numbers of ``scores`` (suspicion, uncertainty, disagreement,
        dice_given_corrected, rank: arrays over all ``ids``), sorted by rank; after every map is written, and after
        scoring.json (``size_offset``: the size calibration's, None where the run does not calibrate)."""
        atomic_write_json(self.file(SCORING), {"size_offset": size_offset})
        rank = scores.rank()
        rows = [
            {"id": id_, "rank": int(rank[i]), "suspicion": f"{scores.suspicion[i]:.6f}",
             "uncertainty": f"{scores.uncertainty[i]:.6f}", "disagreement": f"{scores.disagreement[i]:.6f}",
             "dice_given_corrected": f"{scores.dice_given_corrected[i]:.6f}",
             "corrupted": "" if corrupted is None else int(bool(corrupted[i])),
             "extra_pieces": extra[i]}
            for i, id_ in enumerate(ids)
        ]
        rows.sort(key=lambda r: r["rank"])
        atomic_write_text(self.file(SCORES), _rows.csv_text(rows, SCORE_FIELDS))

    @property
    def size_offset(self) -> float | None:
        """The size calibration's logit offset the scores on top were made with (scoring.json; None where the run
        does not calibrate or was scored before the file existed). RunError naming the file when it holds anything
        else than what a scoring writes."""
        path = self.file(SCORING)
        if not path.is_file():
            return None
        data = read_json(path, 1 << 16, "not a readable scoring file")
        if not isinstance(data, dict):
            raise RunError(f"{path}: expected an object with size_offset, got {type(data).__name__}")
        value = data.get("size_offset")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise RunError(f"{path}: size_offset must be a finite number or null, got {value!r}")
        return float(value)

    def write_evaluation(self, result: dict) -> Path:
        atomic_write_json(self.evaluation_path, result)
        return self.evaluation_path

    # --- reading ----------------------------------------------------------------------------------------
    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    @property
    def has_scores(self) -> bool:
        return (self.path / SCORES).is_file()

    @property
    def has_cases(self) -> bool:
        return (self.path / CASES).is_file()

    @property
    def scores_stale(self) -> bool:
        """scores.csv older than the checkpoint: training went on after scoring (score the run again)."""
        try:
            return self.has_scores and self.has_checkpoint and (
                (self.path / CHECKPOINT).stat().st_mtime_ns > (self.path / SCORES).stat().st_mtime_ns)
        except OSError:
            return False

    def case_rows(self, held_out: bool = False) -> list[_rows.CaseRow]:
        """cases.csv (the training cases), and held_out.csv after them when ``held_out`` and it exists."""
        seen: set[str] = set()
        out = _rows.case_rows(self.path / CASES, seen, MAX_PIXELS)
        if held_out and (self.path / HELD_OUT).is_file():
            out += _rows.case_rows(self.path / HELD_OUT, seen, MAX_PIXELS)
        return out

    def score_rows(self) -> list[_rows.ScoreRow]:
        return read_score_rows(self.path)

    def history_rows(self) -> list[_rows.HistoryRow]:
        if not (self.path / HISTORY).is_file():
            return []
        return _rows.history_rows(self.path / HISTORY, self.train_config.epochs)

    @property
    def keep_ratio(self) -> float:
        """The keep ratio the run's nets were trained with: TrainConfig.keep_ratio, or with keep_auto the last
        estimate its history holds (crl_napari.keep_estimate; the setting's own where there is none or it is not a
        ratio below it). The advice weighs a suggested keep ratio against this one."""
        cfg = self.train_config
        rows = self.history_rows() if cfg.keep_auto else []
        try:
            keep = float(rows[-1].raw.get("keep") or "nan") if rows else float("nan")
        except ValueError:
            keep = float("nan")
        return keep if 0 < keep <= cfg.keep_ratio else cfg.keep_ratio

    def cases(self) -> list[dict]:
        return [r.as_dict() for r in self.case_rows()]

    def history(self) -> list[dict]:
        return [r.as_dict() for r in self.history_rows()]

    def scores(self) -> list[dict]:
        return [{"id": s.id, "rank": s.rank, "suspicion": s.suspicion, "uncertainty": s.uncertainty,
                 "disagreement": s.disagreement, "dice_given_corrected": s.dice_given_corrected,
                 "corrupted": "" if s.corrupted is None else str(int(s.corrupted)), "extra_pieces": s.extra_pieces}
                for s in self.score_rows()]

    def summary(self) -> dict[str, Any]:
        """A short description for the command line and the plugin."""
        from . import score_progress  # it writes through this module's inside()

        return {"path": str(self.path), "strategy": self.train_config.strategy,
                "epochs_done": len(self.history_rows()), "epochs": self.train_config.epochs,
                "scored": self.has_scores, "scores_stale": self.scores_stale,
                # images a stopped scoring finished: `score` (or `train --resume`) goes on from them
                "scoring_kept": score_progress.kept(self.path),
                "n_cases": len(self.case_rows()) if self.has_cases else 0,
                "config": json.loads(json.dumps(asdict(self.train_config)))}
