"""Stopping a running job: at its timeout, or when someone cancels it.

Python cannot kill a thread, so how a job stops depends on how it runs:

- an async job is cancelled: asyncio raises CancelledError at its next await;
- a sync job in a thread (`runjobs`, the default) is asked to stop: `job.stop_requested`
  turns true and `job.check_stop()` raises JobStopped. A job that never looks keeps its
  thread, its slot and its lock until it returns, and its run is still recorded as timed
  out or cancelled (its result discarded);
- any job under `runjobs --isolation process` runs in a child process, which gets SIGTERM
  (JobStopped is raised in it) and SIGKILL KILL_AFTER seconds later if it is still there.

Each case ends the same way: the run's outcome is "timed out" (a failed attempt, retried
within max_attempts) or "cancelled" (not retried), written by the outcome writer as any
other end of a run. One watchdog thread per worker process keeps the deadlines; it starts
with the first job that has a timeout, so jobs without one cost nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import async_to_sync

from ..models import Job
from ..states import STOP_TIMEOUT

logger = logging.getLogger("django_jobs.worker")


class StopRequest:
    """One run's stop: requested at most once (the first reason wins), seen by the job.

    Made for every run, so it is light: a lock and a few attributes; an Event only for a
    caller that waits (see wait())."""

    __slots__ = ("_callbacks", "_lock", "_waiter", "by", "closed", "reason", "requested", "timeout")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []
        self._waiter: threading.Event | None = None
        self.requested = False  # read by job.stop_requested without the lock (a bool)
        self.reason = ""
        self.by = ""
        self.timeout: float | None = None  # seconds, when the run has a deadline
        self.closed = False  # the run has ended: later requests change nothing

    def request(self, reason: str, by: str = "") -> bool:
        """Ask the job to stop; False if it was asked already."""
        with self._lock:
            if self.requested or self.closed:
                return False
            self.reason, self.by = reason, by
            self.requested = True
            callbacks, self._callbacks = self._callbacks, []
            if self._waiter is not None:
                self._waiter.set()
        for callback in callbacks:
            _call(callback)
        return True

    def on_request(self, callback: Callable[[], Any]) -> None:
        """Call `callback` when a stop is requested (at once if it has been)."""
        with self._lock:
            if not self.requested:
                self._callbacks.append(callback)
                return
        _call(callback)

    def forget(self) -> None:
        """The code that registered callbacks is over: drop them (they hold an event loop or
        a process)."""
        with self._lock:
            self._callbacks = []

    def close(self) -> str:
        """The run has ended: no stop can be requested from now on. Returns the reason a stop
        was requested before that ("" if none), so a deadline that passes just after the job
        returned does not turn a success into a timeout."""
        with self._lock:
            self.closed = True
            self._callbacks = []
            return self.reason

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a stop request; True if there is one."""
        with self._lock:
            if self.requested:
                return True
            if self._waiter is None:
                self._waiter = threading.Event()
            waiter = self._waiter
        return waiter.wait(timeout)


def _call(callback: Callable[[], Any]) -> None:
    try:
        callback()
    except Exception:
        # e.g. the job's event loop closed as it ended: there is nothing left to stop.
        logger.debug("A stop callback failed", exc_info=True)


class Deadlines:
    """The timeouts of the runs of one worker process, kept by one thread."""

    COMPACT_AFTER = 1000  # ended runs left in the heap before it is rebuilt without them

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, StopRequest]] = []
        self._ended = 0
        self._counter = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, stop: StopRequest) -> None:
        """Request `stop` with STOP_TIMEOUT `seconds` from now, unless the run ends first."""
        stop.timeout = seconds
        with self._changed:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._counter), stop))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="django_jobs-deadlines", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def discard(self, stop: StopRequest) -> None:
        """The run of `stop` ended (closed): its deadline goes, at the latest when many have."""
        with self._changed:
            self._ended += 1
            if self._ended > self.COMPACT_AFTER and self._ended * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].closed]
                heapq.heapify(self._heap)
                self._ended = 0

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._heap:
                    self._changed.wait()
                deadline, _, stop = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if stop.closed:
                    self._ended = max(0, self._ended - 1)
                    continue
            stop.request(STOP_TIMEOUT)  # nothing if the run ended meanwhile (closed)


deadlines = Deadlines()


def run_coroutine(func: Callable[[Job], Coroutine[Any, Any, Any]]) -> Callable[[Job], Any]:
    """A sync callable that runs the async job `func` and cancels it on a stop request."""

    async def guarded(job: Job) -> Any:
        task = asyncio.ensure_future(func(job))
        stop: StopRequest | None = getattr(job, "_stop", None)
        if stop is not None:
            loop = asyncio.get_running_loop()
            stop.on_request(lambda: loop.call_soon_threadsafe(task.cancel))
        try:
            return await task
        finally:
            if stop is not None:
                stop.forget()

    return async_to_sync(guarded)


class Watched:
    """Let `job` see `stop` while it runs, with its deadline if it has a timeout.

    A class rather than a generator: it is entered and left once per run of every job."""

    __slots__ = ("_job", "_stop", "_timeout")

    def __init__(self, job: Job, stop: StopRequest, timeout: float | None) -> None:
        self._job, self._stop, self._timeout = job, stop, timeout

    def __enter__(self) -> StopRequest:
        self._job._stop = self._stop  # type: ignore[attr-defined]  # read by Job.stop_requested
        if self._timeout:
            deadlines.add(self._timeout, self._stop)
        return self._stop

    def __exit__(self, *exc_info: object) -> None:
        self._stop.close()
        if self._timeout:
            deadlines.discard(self._stop)
