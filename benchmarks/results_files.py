"""How a small benchmark ends: its command line as the results quote it, and its JSON and markdown written
atomically beside each other (the markdown printed too), so every script reports the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from crl_napari.atomic import atomic_write_json, atomic_write_text


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """``python benchmarks/<script>`` with the arguments it was run with."""
    return f"python benchmarks/{script}" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))


def write(out: Path, results: dict, markdown: Callable[[dict], str]) -> int:
    """``out`` (JSON) and ``out`` with .md; the markdown is printed. The exit status of a finished run: 0."""
    atomic_write_json(out, results)
    atomic_write_text(out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0
