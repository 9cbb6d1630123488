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
