"""SIGTERM and SIGINT that arrive while runjobs starts, before the Worker handles them.

`runjobs` installs these handlers first thing; a stop asked for then makes the worker exit 0
without starting, as a stop asked for later does after its jobs end. (A signal that arrives
before Django has loaded the command at all ends the process as Python does by default.)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested = threading.Event()
_replaced: dict[int, Any] = {}


def install() -> None:
    """Catch SIGTERM and SIGINT from now on (main thread only), remembering what they replace."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        previous = signal.signal(signum, _on_signal)
        if previous is not _on_signal:
            _replaced[signum] = previous


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _requested.set()


def requested() -> bool:
    """True once a stop was asked for before the worker handled signals itself."""
    return _requested.is_set()


def original(signum: int, handler: Any) -> Any:
    """The handler to put back when a worker stops: the one before install(), not ours."""
    if handler is _on_signal:
        return _replaced.get(signum, signal.SIG_DFL)
    return handler
