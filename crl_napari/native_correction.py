"""The correction a radiologist reviews and the export writes, at the radiograph's own size: one function, so
that what the Review widget shows is what the export writes.

With the border fit (the default) the run keeps the nets' own probability beside the correction's
(runs NETS16), and the correction at the original size moves the border of the mask the annotator drew at that
size (crl_napari.border_fit.native_logit): what they drew finer than a training pixel stays. Otherwise (a run
scored without the fit or before it kept the nets' map, or an original mask that cannot be read) the
training-size correction is resampled smoothly (crl_napari.native.native_mask), as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .border_fit import native_logit
from .native import mask_from_logit, native_mask

__all__ = ["corrected_mask", "uses_original"]


def uses_original(run, id_: str, shape: tuple[int, int]) -> bool:
    """Whether :func:`corrected_mask` at ``shape`` uses the case's original mask (so a caller reads it only when it
    counts): the run kept the nets' map, ``shape`` is not the training size, and the original mask is what
    training was given (with simulated noise it is the truth the noise was drawn from)."""
    size = int(run.config["data"]["size"])  # the training size (square)
    return (not run.noise_simulated and (int(shape[0]), int(shape[1])) != (size, size)
            and run.has_nets_prob(id_))


def corrected_mask(run, id_: str, shape: tuple[int, int], given_native: np.ndarray | None = None,
                   cleanup: bool | Mapping[str, Any] = True) -> np.ndarray:
    """The corrected mask of case ``id_`` of ``run`` (a runs.RunFolder) at ``shape`` (H, W), uint8 {0, 1}.
    ``given_native``: the case's original mask file at that shape (None: not at hand, so the training-size
    correction resampled; ignored where :func:`uses_original` says no). At the training size it is the run's own
    correction, thresholded and cleaned."""
    prob = run.prob(id_)  # the run's correction: read (and refused, naming its file) whichever way is made here
    shape = (int(shape[0]), int(shape[1]))
    if given_native is not None and np.shape(given_native) == shape and uses_original(run, id_, shape):
        nets = run.nets_prob(id_)
        if nets is not None and nets.shape == prob.shape:
            return mask_from_logit(native_logit(nets, run.given(id_), given_native), cleanup)
    return native_mask(prob, shape, cleanup=cleanup)
