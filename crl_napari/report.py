"""The summary figure of a run: the most suspicious images with the given and corrected contours, the
training curves and the score histogram. Drawn with matplotlib's Agg canvas directly (no pyplot, no GUI
backend), so it works on a server and never touches Qt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runs import SUMMARY, RunFolder


def summary_figure(run_dir: Path | str, out: Path | str | None = None, n_images: int = 6,
                   corrupted: dict[str, bool] | None = None, threshold: float | None = None) -> Path:
    """Write RUN/summary.png (or ``out``) and return its path.

    ``corrupted`` (id -> bool) colours the histogram when the truth is known from elsewhere (the sample set's
    noise.csv); a run with simulated noise carries it in scores.csv already. ``threshold``: the export's
    suspicion threshold (corrections accepted at or above it), marked on the histogram.
    """
    run = RunFolder(run_dir)
    out = Path(out) if out is not None else run.path / SUMMARY
    summary_plot(run, n_images, corrupted, threshold).savefig(out)
    return out


def summary_plot(run: RunFolder, n_images: int = 6, corrupted: dict[str, bool] | None = None,
                 threshold: float | None = None):
    """The matplotlib Figure :func:`summary_figure` saves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scores = sorted(run.scores(), key=lambda r: -(r["suspicion"] or 0.0))  # the queue (rank) is another order
    hist = run.history()
    cols = min(n_images, len(scores))
    fig = Figure(figsize=(3 * max(cols, 3), 6.4), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, max(cols, 3), height_ratios=[1.2, 1])
    if corrupted is not None:
        for r in scores:
            if r["id"] in corrupted:
                r["corrupted"] = "1" if corrupted[r["id"]] else "0"
    for j, row in enumerate(scores[:cols]):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(run.image(row["id"]), cmap="gray")
        ax.contour(run.given(row["id"]), levels=[0.5], colors="#ff4040", linewidths=1)
        ax.contour(run.corrected(row["id"]), levels=[0.5], colors="#40ff60", linewidths=1)
        flag = " (corrupted)" if row.get("corrupted") == "1" else ""
        ax.set_title(f"#{row['rank']} {row['id']}{flag}\nsuspicion {row['suspicion']:.2f}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, : max(cols, 3) // 2])
    if hist:
        epochs = [int(h["epoch"]) + 1 for h in hist]
        for key in ("loss_0", "loss_1", "loss_2"):
            vals = [float(h[key]) for h in hist if h.get(key) not in (None, "")]
            if len(vals) == len(epochs):
                ax.plot(epochs, vals, label=f"net {key[-1]}")
        sel = [float(h["selected"]) for h in hist]
        ax2 = ax.twinx()
        ax2.plot(epochs, sel, "k--", label="selected fraction")
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("fraction trained on given labels", fontsize=8)
        stage2 = next((e for e, h in zip(epochs, hist, strict=True) if str(h.get("stage")) == "2"), None)
        if stage2 is not None:
            ax.axvline(stage2 - 0.5, color="#8a5cc7", linestyle=":", linewidth=1.2, label="stage 2 begins")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7, loc="upper center")
    ax.set_title("training losses and selected fraction", fontsize=9)
    fig.suptitle("most suspicious masks first — red: given mask, green: corrected mask", fontsize=10)
    ax = fig.add_subplot(grid[1, max(cols, 3) // 2 :])
    susp = np.array([r["suspicion"] for r in scores])
    corrupted = np.array([r.get("corrupted") == "1" for r in scores])
    bins = np.linspace(0, max(susp.max(initial=0), 1e-3), 25)
    if corrupted.any():
        ax.hist(susp[~corrupted], bins=bins, alpha=0.7, label="clean masks")
        ax.hist(susp[corrupted], bins=bins, alpha=0.7, label="corrupted masks")
    else:
        ax.hist(susp, bins=bins)
    marked = threshold is not None and bool(np.isfinite(threshold))
    if marked:
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1,
                   label=f"export threshold {threshold:g} (accepted at or above)")
    if corrupted.any() or marked:
        ax.legend(fontsize=7)
    ax.set_xlabel("suspicion = 1 - Dice(given, corrected)")
    ax.set_ylabel("images")
    fig.tight_layout()
    return fig
