"""Keep scoring's peak memory flat in the number of images: large blocks of the C heap mapped apart.

glibc's malloc serves a large block from the heap once a block that large has been freed (its mmap threshold
follows the largest block freed, up to 32 MiB), and a heap fragmented by the small allocations made between the
large ones grows instead of reusing its holes. Scoring allocates and frees a chunk's arrays (tens of megabytes)
chunk after chunk, so its peak memory grew with the number of chunks (0.66 GB at 1,000 images, 2.1 GB at 50,000,
64 px) although it holds one chunk at a time. With the threshold fixed, every block of 4 MiB or more is its own
mapping, returned to the system when freed. Measured on the 10,000-image scale run (peak RSS after chunks 1-5):
741, 829, 908, 908, 924 MB before; 626, 626, 636, 636 MB after (chunks 1-4). ``malloc_trim`` after each chunk
instead kept the memory between chunks low but not the peak (713, 748, 781, 829 MB).

The setting is the whole process's, so in the plugin it stays with the napari viewer once a Train or a retrain
scored there. Left so on purpose: measured with the Review widget on 3000 x 3000 originals in fresh viewer
processes (benchmarks/heap_viewer.py, two trials of each kind alternating, load 7), row switches took 102.6 ms
(median of the trials' medians) with the threshold fixed against 110.5 ms without, and the viewer held 521 against
553 MB after the switches (peak 834 MB both). glibc cannot hand the threshold back to its own rule once set.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["LARGE_BLOCK", "map_large_blocks"]

LARGE_BLOCK = 4 << 20  # bytes: a scoring chunk's arrays are larger, a forward pass's smaller tensors mostly not
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (blocks that large are mapped apart and
    unmapped when freed; the threshold no longer follows the largest block freed). False where the C library has
    no mallopt (macOS, Windows) or refuses it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
