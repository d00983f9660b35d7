"""Running one job on a pool thread: resolve its code, call it, turn what happened into an
Outcome. Knows nothing of claiming or batching; the Worker hands the outcome on."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created
from django.dispatch import Signal

from .. import claiming, instruments
from ..conf import settings
from ..exceptions import JobStopped, UnknownJob
from ..models import Job, JobRun, RunOutcome
from ..registry import JobDefinition, registry
from ..signals import job_failed, job_started, job_succeeded, send_signal
from ..states import STOP_CANCEL
from ..validation import check_json
from . import isolation, stopping

logger = logging.getLogger("django_jobs.worker")
# A line per finished job (report.JOBS_LOGGER): off (WARNING) unless `runjobs -v 2` or the
# project's LOGGING turns it on; each success checks isEnabledFor() before building anything.
jobs_logger = logging.getLogger("django_jobs.jobs")

# Reports an ended run to whoever writes it; waits for the write when `signal` has receivers.
Report = Callable[["Running", claiming.Outcome, Signal], None]


@dataclass
class Running:
    """A job this worker holds, with its history row once it has started."""

    job: Job
    run: JobRun | None = None
    lock_lifetime: float = 30.0
    started: float = field(default_factory=time.monotonic)
    # Monotonic time its lock was last set: by the claim (`started`), then by each extension.
    lock_set: float = field(init=False)
    outcome: claiming.Outcome | None = None  # set when the job is over, until it is written
    begun: float | None = None  # monotonic time a thread began to run it
    ended: float | None = None  # monotonic time the outcome was handed on
    # Set once it is written, for a reporter that waits for that (signal receivers).
    recorded: threading.Event | None = None
    retrying: bool = False  # a failed attempt that will run again (for the worker's summary)
    watch: instruments.RunWatch | None = None  # its span and metrics, if anything observes
    # Set at its timeout or when it is cancelled (stopping.py); "process": runs in a child.
    stop: stopping.StopRequest = field(default_factory=stopping.StopRequest)
    isolation: str = "thread"
    # The key in Worker._running: the job and the claim's lock token, taken when it is claimed
    # (writing the outcome clears the token on the job instance).
    key: tuple[int, str] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.job.pk, self.job.lock_token or "")
        self.lock_set = self.started

    def now(self) -> datetime | None:
        """The database's clock now: the claim's database time plus the time run since.

        Hosts with skewed clocks agree on it, and a run's duration is never negative.
        None when the claim's time is unknown (the outcome writer then asks the database).
        """
        claimed_at = self.job.last_started_at
        if not isinstance(claimed_at, datetime):
            return None
        return claimed_at + timedelta(seconds=time.monotonic() - self.started)


def resolve(job: Job) -> tuple[Callable[[Job], Any], JobDefinition | None]:
    """The code a row may run: only a registered definition (or a tasks-framework task)."""
    if job.task_backend:
        from ..backend import resolve_task

        return resolve_task(job)
    definition = registry.get(job.name)
    if definition is None:
        raise UnknownJob(
            f"No job named {job.name!r} is registered, so it was not run. "
            f"Registered jobs: {registry.names_text()}."
        )
    func = definition.func
    if definition.is_async:
        return stopping.run_coroutine(func), definition
    return func, definition


class UnreadableJob(UnknownJob):
    """A claimed row whose stored values cannot be decoded, so it is never run."""


def execute(entry: Running, report: Report) -> None:
    """Run the job of `entry` and report its outcome; never raises.

    Every exception the job raises is a failed attempt with its class and traceback, and so
    is every other BaseException: SystemExit (sys.exit() in a job) and KeyboardInterrupt
    included, since a job runs on a pool thread where neither can stop the worker (Ctrl-C
    reaches the worker through its signal handler on the main thread, never through a job).
    """
    entry.begun = time.monotonic()
    _close_old_connections()
    job, run = entry.job, entry.run
    entry.watch = instruments.watch(job, entry.started)
    try:
        try:
            func, definition = _runnable(job)
        except UnknownJob as exc:
            jobs_logger.error("Job %s failed: %s", job, exc)
            failure = claiming.Failure(str(exc), retry=False, error_class=claiming.class_path(exc))
            _report(entry, report, job_failed, failure=failure)
            send_signal(job_failed, job=job, run=run, exception=exc, will_retry=False)
            return
        send_signal(job_started, job=job, run=run)
        error: BaseException | None = None
        timeout = definition.timeout_seconds() if definition else settings.DEFAULT_TIMEOUT
        with stopping.Watched(job, entry.stop, timeout):
            try:
                if entry.isolation == "process":
                    result = isolation.run_in_child(job, entry.stop)
                else:
                    result = func(job)
                check_json(result, "the return value")
            except BaseException as exc:  # see the docstring: a job cannot stop the worker
                error = exc
            stopped = entry.stop.close()
        if stopped:
            _stopped(entry, report, definition, error)
            return
        if error is not None:
            _failed(entry, report, definition, error)
            return
        elapsed = time.monotonic() - entry.started
        _report(entry, report, job_succeeded, result=result)
        if jobs_logger.isEnabledFor(logging.INFO):
            jobs_logger.info(
                "Job %s succeeded in %.3fs (attempt %d/%d).",
                job,
                elapsed,
                job.attempts,
                job.max_attempts,
            )
        send_signal(job_succeeded, job=job, run=run, result=result)
    except Exception:
        logger.exception("Could not run %s", job)
    finally:
        if entry.watch is not None:
            entry.watch.close()
        _close_old_connections()


_thread = threading.local()  # .connected: this thread may hold an open connection


def _connected(**kwargs: Any) -> None:
    _thread.connected = True


connection_created.connect(_connected, dispatch_uid="django_jobs.executor.connected")


def _close_old_connections() -> None:
    """Django's close_old_connections(), as around a request: a connection the job broke, or
    one past CONN_MAX_AGE, is closed before and after each run. Skipped while this thread has
    no connection open (Django tells each new one through connection_created), so a job that
    never queries costs it nothing."""
    if not getattr(_thread, "connected", False):
        return
    close_old_connections()
    _thread.connected = any(
        conn.connection is not None for conn in connections.all(initialized_only=True)
    )


def _runnable(job: Job) -> tuple[Callable[[Job], Any], JobDefinition | None]:
    problem = getattr(job, "decode_error", None)
    if problem:
        raise UnreadableJob(
            f"Job #{job.pk} could not be read from the database ({problem}), so it was not "
            "run; fix or delete its row."
        )
    return resolve(job)


def _failed(
    entry: Running, report: Report, definition: JobDefinition | None, exc: BaseException
) -> None:
    elapsed = time.monotonic() - entry.started
    if isinstance(exc, isolation.JobProcessError):  # raised in the job's own process
        failure = claiming.Failure(exc.message, exc.traceback_text, error_class=exc.error_class)
    else:
        failure = claiming.Failure(
            f"{type(exc).__name__}: {exc}",
            "".join(traceback.format_exception(exc)),
            error_class=claiming.class_path(exc),
        )
    _attempt_failed(
        entry,
        report,
        definition,
        failure,
        exc,
        f"failed: {type(exc).__name__}: {exc}",
        f"after {elapsed:.3f}s; ",
    )


def _attempt_failed(
    entry: Running,
    report: Report,
    definition: JobDefinition | None,
    failure: claiming.Failure,
    exc: BaseException,
    what: str,
    after: str = "",
) -> None:
    """A failed attempt (an error or a timeout): logged, reported with its retry delay, and
    sent to job_failed's receivers with whether it will run again."""
    job = entry.job
    will_retry = job.attempts < job.max_attempts
    entry.retrying = will_retry
    delay = definition.retry_delay(job.attempts) if definition else timedelta(0)
    jobs_logger.warning(
        "Job %s attempt %d/%d %s (%s%s).",
        job,
        job.attempts,
        job.max_attempts,
        what,
        after,
        f"retry in {delay.total_seconds():g}s" if will_retry else "no attempts left",
    )
    _report(entry, report, job_failed, failure=failure, retry_delay=delay)
    send_signal(job_failed, job=job, run=entry.run, exception=exc, will_retry=will_retry)


def _stopped(
    entry: Running, report: Report, definition: JobDefinition | None, error: BaseException | None
) -> None:
    """A run stopped at its timeout or by a cancel, however the job's code ended."""
    job, stop = entry.job, entry.stop
    elapsed = time.monotonic() - entry.started
    ignored = "" if error is not None else " It did not stop when asked; its result was dropped."
    if stop.reason == STOP_CANCEL:
        who = f" by {stop.by}" if stop.by else ""
        message = f"Cancelled{who} while running (after {elapsed:.3f}s).{ignored}"
        jobs_logger.warning("Job %s: %s", job, message)
        failure = claiming.Failure(
            message, retry=False, error_class=JOB_STOPPED, outcome=RunOutcome.CANCELLED
        )
        _report(entry, report, job_failed, failure=failure)
        return
    message = (
        f"Timed out: still running after its timeout of {stop.timeout:g}s (stopped after "
        f"{elapsed:.3f}s).{ignored}"
    )
    failure = claiming.Failure(
        message,
        "".join(traceback.format_exception(error)) if error is not None else "",
        error_class=JOB_STOPPED,
        outcome=RunOutcome.TIMED_OUT,
    )
    exc = error if error is not None else JobStopped(message)
    _attempt_failed(entry, report, definition, failure, exc, message[0].lower() + message[1:])


JOB_STOPPED = f"{JobStopped.__module__}.{JobStopped.__qualname__}"


def _report(entry: Running, report: Report, signal: Signal, **outcome: Any) -> None:
    ended = claiming.Outcome(entry.job, entry.run, finished_at=entry.now(), **outcome)
    if entry.watch is not None:
        entry.watch.ended(ended)
    report(entry, ended, signal)
