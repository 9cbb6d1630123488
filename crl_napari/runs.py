"""The run folder: everything one training run leaves, so training can happen on a GPU server and review
on a laptop. Layout in docs/internals.md. Every file is written atomically, so a reader (the plugin while
the command line still trains, say) always sees a whole file.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from .atomic import atomic_write_json, atomic_write_png, atomic_write_text
from .settings import TrainConfig, TrainingError

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
CASES = "cases.csv"
HELD_OUT = "held_out.csv"  # the cases of other splits (test): not trained on, exported unchanged
HISTORY = "history.csv"
SCORES = "scores.csv"
REVIEW = "review.json"
HISTORY_FIELDS = ["epoch", "stage", "loss_0", "loss_1", "loss_2", "selected", "lr", "seconds", "val_dice"]
SCORE_FIELDS = ["id", "rank", "suspicion", "uncertainty", "disagreement", "dice_given_corrected", "corrupted"]


class RunError(ValueError):
    """A run folder is missing, incomplete or from another version; the message names the file."""


def versions() -> dict:
    """Package versions recorded with every run, to explain differences between machines."""
    import torch

    from . import __version__

    return {"crl_napari": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from exc


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool or a.max(initial=0) <= 1 and a.dtype != np.float32:
        return (np.asarray(a) > 0).astype(np.uint8) * 255
    return np.clip(np.round(np.asarray(a, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


class RunFolder:
    """Read access to a run folder, and the writers the pipeline uses to fill it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"{self.path}: not a run folder (no such directory)")
        if not (self.path / CONFIG).is_file():
            raise RunError(f"{self.path}: not a run folder ({CONFIG} missing)")
        try:
            self.config = json.loads((self.path / CONFIG).read_text())
            self.train_config = TrainConfig.from_dict(self.config["train"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, TrainingError) as exc:
            raise RunError(f"{self.path / CONFIG}: invalid run configuration ({exc})") from exc

    # --- creating ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | str, train: TrainConfig, data: dict) -> RunFolder:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # config.json first: a process killed at any point leaves either an empty folder (a new run may
        # start there) or a run folder that `--resume` recognises, never an unrecognisable non-empty one
        atomic_write_json(path / CONFIG, {
            "format": 1,
            "train": asdict(train),
            "data": data,
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        for sub in ("images", "given", "corrected"):
            (path / sub).mkdir(exist_ok=True)
        return cls(path)

    def write_cases(self, rows: list[dict], images: np.ndarray, given: np.ndarray) -> None:
        """cases.csv plus display images and the given masks (the ones training saw)."""
        fields = ["id", "split", "image_path", "mask_path", "orig_h", "orig_w", "corrupted", "noise_op", "noise_n"]
        for r, img, m in zip(rows, images, given, strict=True):
            lo, hi = np.percentile(img, [0.5, 99.5])
            disp = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
            atomic_write_png(self.path / "images" / f"{r['id']}.png", _to_uint8(disp.astype(np.float32)))
            atomic_write_png(self.path / "given" / f"{r['id']}.png", _to_uint8(m > 0))
        write_csv(self.path / CASES, rows, fields)

    def write_held_out(self, rows: list[dict]) -> None:
        """The data set's other cases (its test split): never trained on or scored, but part of the data set,
        so an export of the cleaned set carries them over with their original masks."""
        write_csv(self.path / HELD_OUT, rows, ["id", "split", "image_path", "mask_path", "orig_h", "orig_w"])

    def write_history(self, rows: list[dict]) -> None:
        write_csv(self.path / HISTORY, rows, HISTORY_FIELDS)

    def write_scores(self, ids: list[str], scores, corrupted: list | None = None) -> None:
        """scores.csv (sorted by rank) and the corrected masks, probability and uncertainty maps."""
        corr_dir = self.path / "corrected"
        corr_dir.mkdir(exist_ok=True)
        for i, id_ in enumerate(ids):
            atomic_write_png(corr_dir / f"{id_}.png", _to_uint8(scores.corrected[i]))
            atomic_write_png(corr_dir / f"{id_}_prob.png", _to_uint8(scores.prob[i].astype(np.float32)))
            atomic_write_png(corr_dir / f"{id_}_unc.png", _to_uint8(scores.pixel_uncertainty[i].astype(np.float32)))
        rank = scores.rank
        rows = [
            {"id": id_, "rank": int(rank[i]), "suspicion": f"{scores.suspicion[i]:.6f}",
             "uncertainty": f"{scores.uncertainty[i]:.6f}", "disagreement": f"{scores.disagreement[i]:.6f}",
             "dice_given_corrected": f"{scores.dice_given_corrected[i]:.6f}",
             "corrupted": "" if corrupted is None else int(bool(corrupted[i]))}
            for i, id_ in enumerate(ids)
        ]
        rows.sort(key=lambda r: r["rank"])
        write_csv(self.path / SCORES, rows, SCORE_FIELDS)

    # --- reading ----------------------------------------------------------------------------------------
    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    @property
    def has_scores(self) -> bool:
        return (self.path / SCORES).is_file()

    def cases(self) -> list[dict]:
        return read_csv(self.path / CASES)

    def history(self) -> list[dict]:
        return read_csv(self.path / HISTORY) if (self.path / HISTORY).is_file() else []

    def scores(self) -> list[dict]:
        rows = read_csv(self.path / SCORES)
        for r in rows:
            r["rank"] = int(r["rank"])
            for k in ("suspicion", "uncertainty", "disagreement", "dice_given_corrected"):
                r[k] = float(r[k])
        return sorted(rows, key=lambda r: r["rank"])

    def _png(self, sub: str, name: str) -> np.ndarray:
        path = self.path / sub / name
        try:
            return iio.imread(path)
        except FileNotFoundError:
            raise RunError(f"{path}: missing") from None
        except Exception as exc:
            raise RunError(f"{path}: unreadable image ({exc})") from exc

    def image(self, id_: str) -> np.ndarray:
        """The display image (uint8, training size)."""
        return self._png("images", f"{id_}.png")

    def given(self, id_: str) -> np.ndarray:
        """The mask training saw (bool)."""
        return self._png("given", f"{id_}.png") > 127

    def corrected(self, id_: str) -> np.ndarray:
        return self._png("corrected", f"{id_}.png") > 127

    def prob(self, id_: str) -> np.ndarray:
        """Sharpened foreground probability in [0, 1]."""
        return self._png("corrected", f"{id_}_prob.png").astype(np.float32) / 255

    def uncertainty(self, id_: str) -> np.ndarray:
        return self._png("corrected", f"{id_}_unc.png").astype(np.float32) / 255
