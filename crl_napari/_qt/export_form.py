"""The export form: write the cleaned dataset of a reviewed run (:func:`crl_napari.export.export`). One class,
used as the Export dock (:mod:`.export_widget`) and inside the Review dock.

The engine refuses unsafe destinations (inside the source data or the run folder, non-empty folders) before
writing anything; its message is shown as a notification. The export runs in a thread worker so copying a
large dataset never freezes the viewer.
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton

from ..export import export
from ..review import default_unreviewed
from ..review_file import ReviewError, read_unreviewed
from ..rounds import suspicions
from ..runs import RunError, RunFolder
from ..scoring import DEFAULT_UNREVIEWED, recommended_threshold
from ..settings import TrainingError
from ._common import info, report_error, run_link, start_function

__all__ = ["ExportForm", "POLICIES", "policy_label"]

#: Label shown -> ``unreviewed`` argument of export().
POLICIES = {
    "keep the original mask": "keep",
    "accept the correction above a score": "accept_above",
}


def policy_label(unreviewed: str) -> str:
    """The words shown for an export policy (scoring.UNREVIEWED)."""
    return next(k for k, v in POLICIES.items() if v == unreviewed)


class ExportForm(Container):
    """Choose a run, a destination and what happens to unreviewed (and flagged) images; Export. Excluded
    images are left out and listed in the manifest."""

    def __init__(self, viewer: napari.viewer.Viewer, follow_runs: bool = True) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.worker = None
        self.report = None  # the last ExportReport
        self.last_error: str | None = None
        self.run_dir = FileEdit(label="Run folder", mode="d", tooltip="the reviewed run folder")
        self.dest = FileEdit(label="Destination", mode="d",
                             tooltip="a new or empty folder outside the source data and the run folder")
        self.policy = ComboBox(label="Unreviewed images", choices=list(POLICIES),
                               value=policy_label(DEFAULT_UNREVIEWED),
                               tooltip="what the export uses for images nobody reviewed and for flagged ones: "
                               "a run's starts at what its review chose (the Review dock's Unreviewed)")
        self.threshold = FloatSpinBox(label="Score at least", value=0.5, min=0.0, max=1.0, step=0.01,
                                      tooltip="unreviewed images with a suspicion score at least this get the "
                                      "corrected mask (a run's recommended threshold once a run is chosen)")
        self._threshold_of: tuple[Path, float] | None = None  # the run whose recommended threshold the field shows
        self.threshold.native.setDecimals(3)
        self.cleanup = CheckBox(text="Clean up corrections", value=True,
                                tooltip="drop pieces below 1 % of a corrected mask and fill its holes (the "
                                "benchmark removed every such island at no cost in Dice)")
        self.export_btn = PushButton(text="Export cleaned dataset")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.run_dir, self.dest, self.policy, self.threshold, self.cleanup, self.export_btn,
                     self.status])
        self.policy.changed.connect(self._update)
        self.run_dir.changed.connect(self._recommend_threshold)
        self.export_btn.clicked.connect(self.run_export)
        link = run_link(viewer)
        if follow_runs:
            if link.path:
                self.run_dir.value = link.path
            link.changed.connect(self._on_run_changed)
            link.reviewed.connect(self._on_reviewed)
        self._update()

    def _on_run_changed(self, path: str) -> None:
        if self.worker is None:
            self.run_dir.value = path

    def _on_reviewed(self, path: str, policy: str, threshold: float) -> None:
        """The review of ``path`` opened it (after a round: new scores) or chose ``policy`` for unreviewed images:
        shown, with the recommended ``threshold``, when this form exports that run."""
        run = self._path(self.run_dir)
        if self.worker is None and run is not None and run.resolve() == Path(path).resolve():
            self.show_recommended(run, threshold, policy)

    def _update(self, *_args) -> None:
        self.threshold.visible = POLICIES[self.policy.value] == "accept_above"

    def _recommend_threshold(self, *_args) -> None:
        """A run was chosen: the policy starts at what its review chose for unreviewed images (or what it would by
        default: review.default_unreviewed) and the score at its recommended threshold (scoring.recommended_threshold
        of its scores), what the command line's export uses when given neither and what the Review dock's "accept
        above" starts at, so the two ways to export give the same set. Anything else in the field (a folder that is
        not a scored run, one being typed) leaves the form as it is."""
        path = self._path(self.run_dir)
        if path is None or (self._threshold_of and path.resolve() == self._threshold_of[0].resolve()) \
                or not RunFolder.is_run(path):
            return
        review = run_link(self.viewer).review_widget
        if review is not None and review.session is not None and review.session.run_dir.resolve() == path.resolve() \
                and review.clean_below is not None:  # the review open on it has read its scores: not read twice
            self.show_recommended(path, review.clean_below, review.session.unreviewed)
            return
        try:
            run = RunFolder(path)
            if not run.has_scores:
                return
            scores = suspicions(run)
            threshold = recommended_threshold(scores)
            unreviewed = read_unreviewed(path) or default_unreviewed(scores)
        except (RunError, ReviewError, TrainingError, OSError, ValueError):
            return  # unreadable: the export itself names the file when pressed
        self.show_recommended(path, threshold, unreviewed)

    def show_recommended(self, run: Path, threshold: float, unreviewed: str | None = None) -> None:
        """The score field shows ``run``'s recommended threshold (rounded; exported as shown, the exact one), and
        the policy the review chose for images nobody reviewed (``unreviewed``, ReviewSession.unreviewed: its queue
        was ordered for it) when given."""
        if unreviewed is not None:
            self.policy.value = policy_label(unreviewed)
        self._threshold_of = (Path(run), float(threshold))
        self.threshold.value = round(float(threshold), 3)
        self.threshold.tooltip = (f"unreviewed images with a suspicion score at least this get the corrected mask; "
                                  f"recommended for this run: {threshold:.3f} (Otsu's split of its scores)")

    @staticmethod
    def _path(w: FileEdit) -> Path | None:
        text = str(w.value).strip() if w.value is not None else ""
        return Path(text).expanduser() if text and text != "." else None

    def run_export(self) -> None:
        """Export in a worker; the result (or the engine's refusal) is shown when it is done."""
        if self.worker is not None:
            return
        run, dest = self._path(self.run_dir), self._path(self.dest)
        if run is None or dest is None:
            self._fail(ValueError("choose the run folder and a destination folder first"))
            return
        policy = POLICIES[self.policy.value]
        threshold = float(self.threshold.value) if policy == "accept_above" else None
        if (threshold is not None and self._threshold_of is not None
                and self._threshold_of[0].resolve() == run.resolve() and threshold == round(self._threshold_of[1], 3)):
            threshold = None  # the field shows the run's recommended one, rounded: the engine uses it exactly
        self.report, self.last_error = None, None
        self.status.value = f"Exporting to {dest}…"
        self.export_btn.enabled = False
        self.worker = start_function(export, run, dest, unreviewed=policy, threshold=threshold,
                                     cleanup=bool(self.cleanup.value), on_return=self._on_done_ok,
                                     on_error=self._fail, on_done=self._on_done)

    def _on_done_ok(self, report) -> None:
        self.report = report
        self.status.value = report.summary()
        info(f"crl-napari: {report.summary()}")

    def _fail(self, exc: BaseException) -> None:
        self.last_error = report_error(exc, "export")
        self.status.value = self.last_error

    def _on_done(self) -> None:
        self.worker = None
        self.export_btn.enabled = True

    @property
    def busy(self) -> bool:
        return self.worker is not None
