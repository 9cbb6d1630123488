"""A test helper: make a real run's scores say that most given masks look wrong."""

from __future__ import annotations

import csv
from pathlib import Path


def raise_suspicions(run: Path, n_raised: int | None = None) -> None:
    """Rewrite the run's real scores.csv with its first ``n_raised`` suspicions high (three quarters when None), as
    nets that find most masks wrong score them; only that column changes, and the rank follows the file."""
    with open(run / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    raised = len(rows) * 3 // 4 if n_raised is None else n_raised
    for i, row in enumerate(rows):
        row["suspicion"] = f"{0.3 + i / 100:.4f}" if i < raised else f"{0.01 + i / 1000:.4f}"
    with open(run / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
