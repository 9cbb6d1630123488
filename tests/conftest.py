"""Fixtures shared by the GUI tests."""

import pytest


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
