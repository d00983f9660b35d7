"""The child side of `runjobs --isolation process` (see worker/isolation.py).

Outside the worker package, whose import needs Django set up: this module sets it up.

Imported once by the fork server, which sets Django up here, so every child forked from it
starts with the project loaded and no database connection (it opens its own).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from importlib import import_module
from typing import Any

import django
from django.apps import apps


def _setup() -> None:
    for entry in reversed(os.environ.get("DJANGO_JOBS_CHILD_SYS_PATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    if not apps.ready and os.environ.get("DJANGO_SETTINGS_MODULE"):
        django.setup()
        # What every child imports, imported once in the fork server: a child then starts
        # in milliseconds instead of importing the worker anew (~70 ms).
        import_module("django_jobs.worker.executor")


with contextlib.suppress(Exception):
    # In the fork server. A failure here comes back in each child, reported by main().
    _setup()


def ready() -> None:
    """The warm-up child of worker/isolation.py's start_fork_server(): forked once the fork
    server has loaded the project, it does nothing."""


def main(row: tuple[str, list[str], list[Any]], sender: Any) -> None:
    """Run the job whose row the parent sent (its alias, field names and values), then send
    ("ok", result) or ("error", class path, message, traceback)."""
    from django.db import connections

    try:
        _setup()
        from .exceptions import JobStopped
        from .models import Job

        using, names, values = row
        job = Job.from_db(using, names, values)
        from .states import STOP_TIMEOUT
        from .validation import check_json
        from .worker.executor import resolve
        from .worker.stopping import StopRequest

        stop = StopRequest()
        job._stop = stop  # type: ignore[attr-defined]  # read by Job.stop_requested

        def stopped(signum: int, frame: Any) -> None:
            stop.request(STOP_TIMEOUT)  # job.stop_requested turns true for code that looks
            raise JobStopped(f"Job {job} was stopped (SIGTERM from its worker).")

        signal.signal(signal.SIGTERM, stopped)
        func, _ = resolve(job)
        result = func(job)
        check_json(result, "the return value")
        message: tuple[Any, ...] = ("ok", result)
    except BaseException as exc:  # sys.exit() in the job too: the parent records it
        error_class = f"{type(exc).__module__}.{type(exc).__qualname__}"
        text = f"{type(exc).__name__}: {exc}"
        message = ("error", error_class, text, "".join(traceback.format_exception(exc)))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(Exception):
            connections.close_all()
    with contextlib.suppress(Exception):
        sender.send(message)
        sender.close()
