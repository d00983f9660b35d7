"""What `runjobs` prints: its console logging, the start banner, and the summaries of its work.

Everything goes through the `django_jobs` loggers, so a project's LOGGING decides where it
goes. runjobs only fills in what LOGGING leaves out (configure_logging()): a console handler
when no handler would receive django_jobs' records, and the levels that -v sets when the
project set none. docs/worker.md ("What runjobs prints") states the rule for users.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from django.db import connections

if TYPE_CHECKING:
    from .executor import Running

logger = logging.getLogger("django_jobs.worker")

LOGGER = "django_jobs"
# One line per finished job: INFO for a success, WARNING for a failed attempt, ERROR for a job
# that could not run. runjobs sets it to INFO at -v 2 and WARNING below, unless LOGGING does.
JOBS_LOGGER = "django_jobs.jobs"
CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
CONSOLE_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
SUMMARY_EVERY = 60.0  # seconds between two summaries of a worker that ran jobs


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler runjobs adds when the project's LOGGING gives django_jobs none."""


def _has_handlers(name: str) -> bool:
    """True if a record of logger `name`, or of a logger below it, would reach a handler
    (the root's included; logging's lastResort, used when there is none, is not counted)."""
    if logging.getLogger(name).hasHandlers():
        return True
    prefix = name + "."
    return any(
        isinstance(child, logging.Logger) and child.handlers
        for child_name, child in list(logging.Logger.manager.loggerDict.items())
        if child_name.startswith(prefix)
    )


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Make django_jobs' loggers print as -v asks, where LOGGING leaves them unset.

    - No handler on `django_jobs`, its child loggers or its ancestors (the root's included):
      a console handler (stderr) is added to `django_jobs`.
    - `django_jobs` without a level: WARNING at -v 0, INFO at -v 1 and 2, DEBUG at -v 3.
    - `django_jobs.jobs` without a level: INFO at -v 2 and 3 (a line per finished job),
      WARNING below (failed attempts only).

    Returns a function that undoes it (for runjobs run in-process by call_command()).
    """
    base = logging.getLogger(LOGGER)
    jobs = logging.getLogger(JOBS_LOGGER)
    undo: list[Callable[[], None]] = []
    if not _has_handlers(LOGGER):
        handler = ConsoleHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, CONSOLE_DATE_FORMAT))
        base.addHandler(handler)
        undo.append(lambda: base.removeHandler(handler))
    if base.level == logging.NOTSET:
        level = (
            logging.WARNING if verbosity < 1 else logging.DEBUG if verbosity > 2 else logging.INFO
        )
        base.setLevel(level)
        undo.append(lambda: base.setLevel(logging.NOTSET))
    if jobs.level == logging.NOTSET:
        jobs.setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)
        undo.append(lambda: jobs.setLevel(logging.NOTSET))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


def database_text(using: str) -> str:
    """The database a worker uses, as the banner names it: never a user or password."""
    connection = connections[using]
    settings_dict = connection.settings_dict
    text = f"{connection.vendor} {using!r} ({settings_dict.get('NAME') or '?'}"
    host = settings_dict.get("HOST")
    if host:
        port = settings_dict.get("PORT")
        text += f" on {host}:{port}" if port else f" on {host}"
    return text + ")"


def seconds_text(seconds: float) -> str:
    """5s, 0.5s, 1.25s: as few digits as the value needs."""
    return f"{seconds:g}s"


def banner(
    worker_id: str,
    *,
    queues: Sequence[str],
    concurrency: int,
    using: str,
    listening: bool,
    poll_interval: float,
    lock_lifetime: float,
    pid: int,
    process: tuple[int, int] | None = None,
) -> str:
    """The line a worker logs when it has started."""
    from .. import __version__

    parts = [f"process {process[0]} of {process[1]}"] if process else []
    parts += [
        f"pid {pid}",
        f"queues {','.join(queues) or '*'}",
        f"concurrency {concurrency}",
        f"database {database_text(using)}",
        "wake-up "
        + ("LISTEN/NOTIFY" if listening else f"polling every {seconds_text(poll_interval)}"),
        f"lock lifetime {seconds_text(lock_lifetime)}",
        f"django_jobs {__version__}",
    ]
    return f"Worker {worker_id} started: {', '.join(parts)}."


def duration_text(seconds: float) -> str:
    """3.4s, 12m 05s, 2h 07m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m {int(seconds % 60):02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def period_text(seconds: float) -> str:
    """'the last minute', 'the last 3 minutes'."""
    minutes = round(seconds / 60)
    return "the last minute" if minutes <= 1 else f"the last {minutes} minutes"


class Tally:
    """Counts of the runs a worker has written: for its periodic summary and its last line.

    Used by the claim loop's thread alone, so it needs no lock.
    """

    def __init__(self, worker_id: str, every: float = SUMMARY_EVERY) -> None:
        self.worker_id = worker_id
        self.every = every
        self.started = time.monotonic()
        self.window_started = self.started
        self.window = [0, 0, 0]  # succeeded, failed, retried since window_started
        self.total = [0, 0, 0]
        self.handed_back = 0

    def add(self, entries: Iterable[Running]) -> None:
        """Count runs whose outcomes were just written."""
        window = self.window
        for entry in entries:
            outcome = entry.outcome
            if outcome is None:
                continue
            if outcome.failure is None:
                window[0] += 1
            elif entry.retrying:
                window[2] += 1
            else:
                window[1] += 1

    def tick(self, now: float) -> None:
        """Log a summary once a period has passed with jobs run in it."""
        if now - self.window_started < self.every:
            return
        if any(self.window):
            logger.info(
                "Worker %s: %s in %s.",
                self.worker_id,
                counts_text(self.window),
                period_text(now - self.window_started),
            )
        self._close_window(now)

    def _close_window(self, now: float) -> None:
        for index, count in enumerate(self.window):
            self.total[index] += count
        self.window = [0, 0, 0]
        self.window_started = now

    def stopped(self) -> None:
        """Log the worker's last line: what it did in its whole life."""
        now = time.monotonic()
        self._close_window(now)
        ran = sum(self.total)
        lived = duration_text(now - self.started)
        text = f"Worker {self.worker_id} stopped after {ran} job(s) in {lived}"
        if ran:
            text += f": {counts_text(self.total)}"
        if self.handed_back:
            text += f"; {self.handed_back} handed back to run again"
        logger.info("%s.", text)


def counts_text(counts: Sequence[int]) -> str:
    succeeded, failed, retried = counts
    return f"{succeeded} succeeded, {failed} failed, {retried} retried"
