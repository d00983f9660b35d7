"""`runjobs --isolation process`: each job runs in a child process that can be killed.

Children come from a fork server (multiprocessing's "forkserver" start method) that has
imported Django and the project once (process_child.py), so a job starts in a few milliseconds,
without the worker's threads or database connections, and with its own. The worker's
thread waits for the child. A stop (timeout, cancel) sends SIGTERM, which raises JobStopped
in the job; a child still there KILL_AFTER seconds later gets SIGKILL. Either way the thread
and the slot are free at once, and the run is recorded as timed out or cancelled.

The child runs only what the parent resolved: a registered job or task (executor.resolve).
What it returns is sent back through a pipe, so it must be JSON, as in thread mode.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from typing import Any

from ..exceptions import JobsError
from ..models import Job
from .stopping import StopRequest

SYS_PATH_VARIABLE = "DJANGO_JOBS_CHILD_SYS_PATH"
KILL_AFTER = 5.0  # seconds between SIGTERM and SIGKILL for a child that will not stop
MODES = ("thread", "process")

_context: Any = None


class JobProcessError(JobsError):
    """What a job raised in its child process, with the class and traceback it had there."""

    def __init__(self, message: str, error_class: str, traceback_text: str) -> None:
        super().__init__(message)
        self.message, self.error_class, self.traceback_text = message, error_class, traceback_text


def context() -> Any:
    """The multiprocessing context children start from (made once, on first use)."""
    global _context
    if _context is None:
        methods = multiprocessing.get_all_start_methods()
        _context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            # The fork server does not get this process's sys.path (Python 3.11 passes it
            # and drops it), so process_child.py, which it imports first, takes it from here.
            os.environ[SYS_PATH_VARIABLE] = os.pathsep.join(sys.path)
            _context.set_forkserver_preload(["django_jobs.process_child"])
    return _context


def start_fork_server() -> None:
    """Start the fork server and wait until it has imported Django and the project (a worker
    with process isolation calls this as it starts). Otherwise the first job's child waits for
    that import, about a second on a slow machine, within the job's own timeout."""
    ctx = context()
    if ctx.get_start_method() != "forkserver":
        return
    from ..process_child import ready

    warm_up = ctx.Process(target=ready, name="django_jobs fork server warm-up")
    warm_up.start()
    warm_up.join()


def run_in_child(job: Job, stop: StopRequest) -> Any:
    """Run `job` in a child process and return its result; raise what it raised there."""
    from ..process_child import main

    ctx = context()
    receiver, sender = ctx.Pipe(duplex=False)
    # The row's values, not the instance: plain values unpickle before Django is set up.
    names = [f.attname for f in job._meta.concrete_fields]
    row = (job._state.db or "default", names, [getattr(job, name) for name in names])
    process = ctx.Process(target=main, args=(row, sender), name=f"django_jobs job {job.pk}")
    process.daemon = True
    process.start()
    sender.close()
    stop.on_request(process.terminate)  # SIGTERM: JobStopped is raised in the job
    message: Any = None
    terminated_at: float | None = None
    try:
        while True:
            ready = multiprocessing.connection.wait([receiver, process.sentinel], timeout=0.5)
            if receiver in ready:
                try:
                    message = receiver.recv()
                except EOFError:
                    message = None
                break
            if process.sentinel in ready:
                break
            if stop.requested:
                terminated_at = terminated_at or time.monotonic()
                if time.monotonic() - terminated_at >= KILL_AFTER:
                    process.kill()
    finally:
        stop.forget()
        receiver.close()
        process.join(KILL_AFTER)
        if process.is_alive():
            process.kill()
            process.join()
    if message is None:
        raise JobProcessError(
            f"The job's process ended with exit code {process.exitcode} before it reported "
            "an outcome (killed, or it crashed).",
            f"{JobProcessError.__module__}.{JobProcessError.__qualname__}",
            "",
        )
    if message[0] == "ok":
        return message[1]
    _, error_class, text, traceback_text = message
    raise JobProcessError(text, error_class, traceback_text)
