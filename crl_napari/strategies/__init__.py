"""The four training strategies, one small stepper class each, chosen by name through ``STEPPERS``.

vanilla.py, coteaching.py, ss.py and crl.py each say what one mini-batch teaches a strategy's nets; the loop
(cascade.train) is the same for all of them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..settings import STRATEGIES, TrainConfig
from .base import Stepper, drop_fraction, peers
from .coteaching import CoTeaching
from .crl import CRL
from .ss import SampleSelection
from .vanilla import Vanilla

STEPPERS: dict[str, type[Stepper]] = {"vanilla": Vanilla, "coteaching": CoTeaching, "ss": SampleSelection,
                                      "crl": CRL}
assert tuple(STEPPERS) == STRATEGIES

__all__ = ["CRL", "STEPPERS", "CoTeaching", "SampleSelection", "Stepper", "Vanilla", "drop_fraction",
           "make_stepper", "peers"]


def make_stepper(config: TrainConfig, models, optims, device: torch.device | str,
                 run_dir: Path | None = None) -> Stepper:
    """The stepper of ``config.strategy`` over its nets and their optimisers."""
    return STEPPERS[config.strategy](config, models, optims, device, run_dir)
