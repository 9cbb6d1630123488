"""The Export dock: the export form (:class:`.export_form.ExportForm`, also embedded in the Review dock) on its
own. The engine refuses unsafe destinations (inside the source data or the run folder, non-empty folders) before
writing anything; the export runs in a thread worker so copying a large dataset never freezes the viewer.
"""

from __future__ import annotations

from .export_form import POLICIES, ExportForm

__all__ = ["ExportWidget", "POLICIES"]


class ExportWidget(ExportForm):
    """Export cleaned dataset (the dock napari's plugin menu opens)."""
