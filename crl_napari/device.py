"""Which device trains, and the one place that asks torch what this machine has.

The Train widget's device list, ``device="auto"``, mixed precision and the memory release after an
out-of-memory error all ask the same question; asking it here keeps their answers the same.
"""

from __future__ import annotations

import gc

import torch


def accelerators() -> list[str]:
    """The accelerators torch can use here: "cuda" and/or "mps", best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def available_devices() -> list[str]:
    """What a user may choose: "auto", "cpu" and every accelerator present."""
    return ["auto", "cpu", *accelerators()]


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu — or the device named."""
    if name != "auto":
        return torch.device(name)
    return torch.device((accelerators() or ["cpu"])[0])


def amp_dtype(device: torch.device, asked: bool) -> torch.dtype | None:
    """The mixed-precision dtype training uses on ``device``, or None for float32.

    Only cuda: bfloat16 where the GPU has it (no loss scaling needed), else float16. Elsewhere autocast is
    slower than float32 or unsupported, so ``amp`` is ignored there (Started.amp says which happened).
    """
    if not asked or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error of cuda, mps or the CPU allocator."""
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def release_memory() -> None:
    """Free what a failed run held, so the process (a napari viewer) can retry at once."""
    gc.collect()
    kinds = accelerators()
    if "cuda" in kinds:
        torch.cuda.empty_cache()
    if "mps" in kinds:
        torch.mps.empty_cache()
