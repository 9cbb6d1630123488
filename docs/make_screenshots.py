"""Regenerate the README screenshots (``make screenshots``) by driving the real napari viewer.

The workflow a radiologist follows, with only the plugin's widgets as napari loads them from the manifest:

1. File > Open Sample > Chest X-ray phantom (``viewer.open_sample``);
2. Plugins > CRL lung mask cleaning > Train: the built-in sample set, a tiny CPU training run to the end
   (``docs/screenshot-train.png``);
3. "Open in review" (the Review panel in a tab beside Train, the sample layers hidden, the view fitted): the
   queue made for the recommended export first (Unreviewed), one decision by key, the next row shown with its
   original and corrected contours
   (``docs/screenshot-review.png``); D starts an edit (``docs/screenshot-edit.png``);
4. Plugins > CRL lung mask cleaning > Export cleaned dataset: a destination, Export (``docs/screenshot-export.png``).

Needs a display: ``xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python docs/make_screenshots.py``.
Every run and export folder lives in a temporary directory. Any failed step (an exception, an error
notification, a wait that times out) ends the script with a non-zero exit status.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PLUGIN = "crl-napari"
SAMPLE = "chest_xray_phantoms"  # the sample_data key in plugin_manifest/napari.yaml
REVIEWER = "dr. demo"
WINDOW = (1400, 900)  # logical pixels of the whole napari window
MAX_PNG_BYTES = 400_000
#: the tiny training run: seconds on one CPU thread, but long enough for the loss plot to show a trend
TRAIN = {"strategy": "crl", "epochs": 10, "batch_size": 8, "lr": 0.01, "width": 8, "depth": 3}
TRAIN_SIZE = 64
TRAIN_TIMEOUT_S = 150
STEP_TIMEOUT_S = 30
WATCHDOG_S = 300  # the whole script; a hung step must not hang `make screenshots`


class StepFailed(RuntimeError):
    pass


def main(tmp: Path) -> int:
    import torch

    torch.set_num_threads(1)  # small machines; the run is tiny anyway

    import napari
    import numpy as np
    from napari.utils.notifications import NotificationSeverity, notification_manager
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from crl_napari._qt._common import dock_of, run_link

    errors: list[str] = []

    def on_notification(event) -> None:
        n = getattr(event, "value", event)
        if getattr(n, "severity", None) == NotificationSeverity.ERROR:
            errors.append(str(n.message))

    notification_manager.notification_ready.connect(on_notification)

    def check(ok: bool, what: str) -> None:
        if errors:
            raise StepFailed(f"{what}: error notification: {errors[-1]}")
        if not ok:
            raise StepFailed(what)

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)

    def wait_until(predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if errors:
                check(False, what)
            if time.monotonic() > end:
                raise StepFailed(f"{what}: still not done after {timeout:.0f} s")
            QApplication.processEvents()
            time.sleep(0.02)

    def press(key: str, shift: bool = False) -> None:
        """A real key press on the canvas: napari's key bindings, as a reviewer would type."""
        mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
        QTest.keyClick(viewer.window._qt_viewer.canvas.native, getattr(Qt.Key, f"Key_{key}"), mod)
        pump(0.1)

    def shot(name: str) -> Path:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in list(NapariQtNotification._instances):  # the pop-ups would hide part of the image
            toast.close()
        pump(0.6)  # let matplotlib's draw_idle and the canvas catch up
        img = viewer.screenshot(canvas_only=False, flash=False)
        check(img.shape[0] >= WINDOW[1] * 0.9 and img.shape[1] >= WINDOW[0] * 0.9,
              f"{name}: screenshot of {img.shape[1]}x{img.shape[0]}, expected about {WINDOW[0]}x{WINDOW[1]}")
        path = DOCS / name
        save_png(img, path)
        print(f"  wrote {path.relative_to(DOCS.parent)} ({path.stat().st_size // 1024} KB)", flush=True)
        return path

    def click(button) -> None:
        """Click a magicgui or Qt button (its ``native`` QPushButton for magicgui)."""
        getattr(button, "native", button).click()
        pump(0.05)

    t0 = time.monotonic()
    viewer = napari.Viewer(title="crl-napari", show=True)
    viewer.window.resize(*WINDOW)
    viewer.window._qt_window.setFixedSize(*WINDOW)  # stable images, whatever the screen
    pump(0.5)

    # 1. File > Open Sample > Chest X-ray phantom
    print("open sample", flush=True)
    sample_layers = viewer.open_sample(PLUGIN, SAMPLE)
    check(len(sample_layers) == 3, f"the sample should add 3 layers, got {len(sample_layers)}")

    # 2. Plugins > CRL lung mask cleaning > Train, on the built-in sample set
    print("train", flush=True)
    train_dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    click(train.sample_btn)
    check(Path(str(train.data_dir.value)).is_dir(), "'Use the built-in sample set' should fill the data folder")
    run_dir = tmp / "run"
    train.out_dir.value = run_dir
    train.size.value = TRAIN_SIZE
    train.device.value = "cpu"
    for name, value in TRAIN.items():
        train.cfg[name].value = value
    click(train.start_btn)
    check(train.running, f"training did not start: {train.status.value}")
    wait_until(lambda: not train.running, TRAIN_TIMEOUT_S, "training")
    check(train.last_outcome == "finished", f"training ended as {train.last_outcome}: {train.last_error}")
    check(len(train.plot.epochs) == TRAIN["epochs"], "the loss plot should have one point per epoch")
    check(train.review_btn.enabled, "'Open in review' should be enabled after a finished run")
    print(f"  trained in {time.monotonic() - t0:.0f} s: {train.status.value}", flush=True)
    shot("screenshot-train.png")

    # 3. Open in review: the reviewer works on the run just trained. The Review panel opens in a tab beside
    #    Train, the 256 px sample layers are hidden (not removed) and the view fits the run's 64 px images.
    print("review", flush=True)
    click(train.review_btn)
    review = run_link(viewer).review_widget
    check(review is not None and review.session is not None and Path(review.session.run_dir) == run_dir,
          f"the review should open {run_dir}: {getattr(review, 'last_message', 'no Review widget')}")
    review_dock = dock_of(review)
    check(review_dock in viewer.window._qt_window.tabifiedDockWidgets(train_dock),
          "the Review panel should be a tab beside Train")
    check(all(layer in viewer.layers and not layer.visible for layer in sample_layers),
          "the sample layers should be hidden, not removed")
    review.reviewer_edit.setText(REVIEWER)  # recorded with every decision
    review.reviewer_edit.editingFinished.emit()
    pump(0.3)
    ids = review.session.ids
    review.table.selectRow(0)  # the queue's first mask
    check(review.current_id == ids[0], "selecting the first row should show the queue's first mask")
    # the queue is made for the recommended export (Unreviewed): its first masks are those just under the run's
    # recommended score, which the export keeps; a look decides, and here the reviewer keeps the mask by key
    check(review.session.unreviewed == "accept_above", f"the sample run's queue: {review.session.unreviewed}")
    press("K")  # keep the original mask; the next pending image is shown
    decisions = review.session.counts()
    check(decisions["kept"] == 1 and review.session.status(ids[0]) == "kept",
          f"K should keep {ids[0]}: {decisions}; {review.last_message}")
    check((run_dir / "review.json").is_file(), "the decision should be in review.json")
    check(review.current_id == ids[1], "after a decision the next image should be shown")
    check(review.layer("original") is not None and review.layer("corrected") is not None,
          "both contours should be shown")
    shot("screenshot-review.png")

    # 3b. Edit mode: D seeds an editable mask from the correction; paint a stroke; S saves it
    print("edit", flush=True)
    press("D")
    edit = review.layer("edit")
    check(edit is not None and edit.mode == "paint", "D should open an editable mask in paint mode")
    # a brush stroke along the lower edge of the left lung, one pixel below the seeded mask
    mask = np.asarray(edit.data) > 0
    cols = [x for x in range(mask.shape[1] // 2) if mask[:, x].any()]
    for x in cols[len(cols) // 4: 3 * len(cols) // 4]:
        edit.paint((int(np.nonzero(mask[:, x])[0].max()) + 1, x), 1, refresh=False)
    edit.refresh()
    check(review.session.decision(ids[1]) is None, "an edit is not a decision until it is saved")
    shot("screenshot-edit.png")
    press("S")
    check(review.session.status(ids[1]) == "edited", f"S should save the edit of {ids[1]}")
    check(review.session.decision(ids[1])["reviewer"] == REVIEWER, "the decision should name the reviewer")

    # 4. Plugins > CRL lung mask cleaning > Export cleaned dataset
    print("export", flush=True)
    export_dock, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export cleaned dataset", tabify=True)
    export_dock.raise_()
    check(Path(str(export.run_dir.value)) == run_dir, "the export widget should follow the run under review")
    dest = tmp / "lungs-cleaned"
    export.dest.value = dest
    click(export.export_btn)
    wait_until(lambda: not export.busy, STEP_TIMEOUT_S, "export")
    check(export.report is not None, f"export failed: {export.last_error}")
    check((dest / "manifest.csv").is_file(), "the export should write manifest.csv")
    print(f"  {export.status.value}", flush=True)
    shot("screenshot-export.png")

    viewer.close()
    print(f"done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


def save_png(img, path: Path) -> None:
    """RGB PNG at full size when it fits MAX_PNG_BYTES; else palette-quantized, then also downscaled."""
    from PIL import Image

    rgb = Image.fromarray(img[..., :3])
    tmp = path.with_name(f".{path.name}.tmp")
    for scale in (None, 1.0, 0.85, 0.7, 0.55):
        pil = rgb
        if scale is not None:
            if scale < 1:
                pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.Resampling.LANCZOS)
            pil = pil.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pil.save(tmp, format="PNG", optimize=True)
        if tmp.stat().st_size <= MAX_PNG_BYTES:
            break
    os.replace(tmp, path)


def _watchdog() -> None:
    import faulthandler

    # dump every thread's stack and exit 1 if the whole script hangs (a worker that never finishes)
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)


if __name__ == "__main__":
    _watchdog()
    with tempfile.TemporaryDirectory(prefix="crl-screenshots-") as tmpdir:
        # napari's settings in the temporary folder: the default theme and layout, nothing saved to ~/.config
        os.environ["NAPARI_CONFIG"] = str(Path(tmpdir) / "napari-settings.yaml")
        try:
            code = main(Path(tmpdir))
        except Exception:
            traceback.print_exc()
            print("make_screenshots: FAILED", file=sys.stderr)
            code = 1
    sys.exit(code)
