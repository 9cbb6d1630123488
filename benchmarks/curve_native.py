"""cleaning_curve.py --native: the cleaning curve where the user sees it, at the radiograph's own size.

The noise is drawn on Shenzhen's 256 px masks (the paper's protocol, as benchmarks/native_noise.py draws it), and
the nets the curve starts from are native_noise.py's finished cell of the same noise and seed: the product's
default crl trained at 64 px on those masks shrunk as the data loader shrinks them. The queue is scored at 64 px
as the product scores it; the corrections the reviewer is shown and the recommended policy exports are made at
256 px from the original masks (native_correction's border_fit.native_logit, cleaned up: what the export
writes); the simulated reviewer decides at 256 px, and the exported set is measured at 256 px against the true
masks. Order d's vanilla U-Net trains on the same shrunk noisy masks (kept beside native_noise's runs); order f's
rounds train at 64 px on the exported set shrunk the same way, the reviewed masks trusted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import native_noise
import numpy as np
from cleaning_curve import VANILLA, Context, _finished, _now

from crl_napari import cascade, scoring, second_pass
from crl_napari.border_fit import native_logit
from crl_napari.data import load_dataset
from crl_napari.image_files import resize_mask
from crl_napari.native import mask_from_logit


class NativeContext(Context):
    """Context at 256 px: ``given`` and ``truth`` (what the reviewer and the exported set see) are the 256 px
    masks; the nets are scored at the training size against the given masks shrunk."""

    def __init__(self, train, test, prof_name: str, prof: dict, ratio: float, seed: int, threads: int,
                 results: dict, data: Path, default_nets: bool = False, calibrate: bool = False):
        self.train, self.test, self.prof_name, self.prof = train, test, prof_name, prof
        self.ratio, self.seed, self.threads, self.results = ratio, seed, threads, results
        self.border_fit = True
        self.calibrate = calibrate  # the size calibration (TrainConfig.size_calibration) in every scoring
        probe = {"size_calibration": 1} if calibrate else None  # the second pass trained on calibrated corrections
        self.images = train.images()
        big = load_dataset(data, size=256).subset("train")
        assert big.ids == train.ids, "the 64 px and 256 px data sets list different cases"
        self.truth = big.masks()
        self.given, self._given_small, _ = native_noise.noisy(self.truth, train.ids, ratio, seed, prof["size"])
        done = native_noise.RESULTS / "native_noise.json"  # the cell's seconds per epoch: the first round's time
        cells = json.loads(done.read_text())["cells"] if done.is_file() else {}
        mode = self._default_second_mode(cells, ratio, seed) if default_nets else None
        second = mode is not None
        run_dir = native_noise.RUNS / native_noise.run_name(ratio, seed, second, probe if second else None,
                                                            mode=mode or second_pass.EVERY)
        if not _finished(run_dir, prof["epochs"]):
            raise SystemExit(f"{run_dir}: no finished native_noise cell; train it first: python "
                             f"benchmarks/native_noise.py --threads 1 --noise {ratio} --seeds {seed}"
                             + (f" --second --second-mode {mode}" if second else "")
                             + (" --set size_calibration=1" if second and calibrate else ""))
        self.first_checkpoint = run_dir / cascade.CHECKPOINT
        self._second, self._base_labels = mode, None
        models, self.crl_cfg = cascade.load_models(run_dir)
        self.scores = self.score(models, self.given, self.crl_cfg.T)
        self.test_dice = float(cascade.dice_score(cascade.predict(models, test.images()), test.masks()).mean())
        # the first round is the training the user waited for: with the default's second pass, both passes
        passes = [native_noise.cell_key(ratio, seed)] + (
            [native_noise.cell_key(ratio, seed, True, probe, mode=mode)] if second else [])
        per_epoch = [cells.get(k, {}).get("sec_per_epoch") for k in passes]
        self._sec_per_epoch = None if None in per_epoch else sum(per_epoch)

    @staticmethod
    def _default_second_mode(cells: dict, ratio: float, seed: int) -> int | None:
        """The second pass the product's default (second_pass AUTO) trains for this noise and seed (its labels'
        mode; None: none), as native_noise.py recorded it from the first pass's scores (cells decided before the
        mode was recorded: every correction)."""
        first = cells.get(native_noise.cell_key(ratio, seed), {})
        if "auto_second" not in first:
            raise SystemExit(f"native_noise.json has not decided the default's path at noise {ratio}, seed {seed}: "
                             f"python benchmarks/native_noise.py --threads 1 --remeasure --noise {ratio} --seeds "
                             f"{seed}")
        return native_noise.default_mode(first)

    @property
    def given_small(self) -> np.ndarray:
        return self._given_small

    def training_masks(self, final: np.ndarray) -> np.ndarray:
        return np.stack([resize_mask(m, self.prof["size"]) for m in final])

    def score(self, models, given: np.ndarray, T: float) -> scoring.ImageScores:
        """Scored at the training size against ``given`` (256 px) shrunk; the corrections made at 256 px from
        ``given`` itself, as the export makes them."""
        small = self.training_masks(given)
        sc = scoring.score_probs(cascade.peer_probs(models, self.images), small, T, border_fit=True,
                                 calibrate=self.calibrate)
        corrected = np.stack([mask_from_logit(native_logit(n, s, g)) > 0
                              for n, s, g in zip(sc.nets_prob, small, given, strict=True)])
        return replace(sc, corrected=corrected)

    def models(self, method: str):
        """Order d's vanilla U-Net, trained (once) on the same shrunk noisy masks as the crl nets."""
        assert method == VANILLA
        cfg = cascade.TrainConfig(strategy="vanilla", epochs=self.prof["epochs"], batch_size=self.prof["batch_size"],
                                  lr=self.prof["lr"], lr_decay=self.prof["lr_decay"], width=self.prof["width"],
                                  depth=self.prof["depth"], seed=self.seed)
        run_dir = native_noise.RUNS / f"vanilla_{native_noise.run_name(self.ratio, self.seed)}"
        if not _finished(run_dir, self.prof["epochs"]):
            print(f"[{_now()}] training vanilla on the shrunk noisy masks", flush=True)
            native_noise.native_res.train_models(self.images, self._given_small, cfg, run_dir)
        return cascade.load_models(run_dir)

    def base_labels(self) -> np.ndarray:
        """What the first round's nets trained on (order g): after the default's second pass, every correction of
        the first pass (as native_noise.py --second made them); elsewhere the given masks shrunk."""
        if not self._second:
            return self._given_small
        if self._base_labels is None:
            models, cfg = cascade.load_models(native_noise.RUNS / native_noise.run_name(self.ratio, self.seed))
            sc = scoring.score_probs(cascade.peer_probs([m.eval() for m in models], self.images), self._given_small,
                                     cfg.T, border_fit=True, calibrate=self.calibrate)
            self._base_labels = second_pass.training_labels(self._given_small, sc.corrected, sc.suspicion,
                                                            self._second)
        return self._base_labels

    def pending_labels(self, order: str) -> np.ndarray | None:
        """As Context's; after the default's second pass on every correction (mode 2), the tool's rounds (f, k) train
        the images nobody reviewed on its labels as g does (rounds.pending_labels); p, q and r as f."""
        if order in ("f", "k", "p", "q", "r") and self._second == second_pass.EVERY:
            return self.base_labels()
        return super().pending_labels(order)

    def first_round_seconds(self) -> float | None:
        """The first training's seconds (native_noise.py's cells): with --default-nets where the default trains a
        second pass, the first pass's and the second pass's together, as the user waits for both."""
        return None if not self._sec_per_epoch else self._sec_per_epoch * self.prof["epochs"]
