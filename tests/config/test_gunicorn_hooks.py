"""The web workers' signal hooks: ending streams never imports inside a signal handler."""

import sys
from types import SimpleNamespace

from config import gunicorn_hooks


def test_a_worker_that_never_streamed_stops_without_importing(monkeypatch):
    monkeypatch.delitem(sys.modules, "assignments.streaming", raising=False)
    gunicorn_hooks._stop_streams()
    assert "assignments.streaming" not in sys.modules


def test_a_half_imported_streaming_module_is_left_alone(monkeypatch):
    """A second SIGTERM landing while the first handler's import runs found the module without
    `stop` (CI's web.log: AttributeError, exit code 255)."""
    monkeypatch.setitem(sys.modules, "assignments.streaming", SimpleNamespace())
    gunicorn_hooks._stop_streams()


def test_a_worker_that_streamed_ends_its_streams(monkeypatch):
    stopped = []
    module = SimpleNamespace(stop=lambda: stopped.append(True))
    monkeypatch.setitem(sys.modules, "assignments.streaming", module)
    gunicorn_hooks._stop_streams()
    assert stopped == [True]
