"""Fixtures shared by the tests (most of them by the GUI tests)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tiny nets: two on a busy 2-core machine (CI's) made a 0.3 s test take 10 s,
    and the GUI suite shares the machine with the viewer. Asked for with pytest.mark.usefixtures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def score_chunks_of_16(monkeypatch):
    """Scoring in chunks of 16 images of 32 px (the fewest there are), so that a tiny run is scored in several and a
    stop or a kill can land between two (pipeline.SCORE_CHUNK_PIXELS). Asked for with pytest.mark.usefixtures."""
    from crl_napari import pipeline

    monkeypatch.setattr(pipeline, "SCORE_CHUNK_PIXELS", 16 * 32 * 32)


@pytest.fixture
def errors():
    """Error notifications shown while the test runs (text)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen: list[str] = []

    def grab(event):
        n = event.value if hasattr(event, "value") else event
        if getattr(n, "severity", None) == NotificationSeverity.ERROR:
            seen.append(str(n.message))

    notification_manager.notification_ready.connect(grab)
    yield seen
    notification_manager.notification_ready.disconnect(grab)


@pytest.fixture(autouse=True)
def _private_qt_settings(tmp_path_factory):
    """The widgets' QSettings (remembered reviewer, recent runs) go to a temporary folder, never the user's."""
    try:
        from qtpy.QtCore import QSettings
    except Exception:  # no Qt binding: nothing to redirect
        yield
        return
    folder = tmp_path_factory.mktemp("qsettings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    yield
