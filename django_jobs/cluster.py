"""Cluster mode: `runjobs --processes N` supervises N worker processes.

Each child is a full worker (its own database connections, its own Worker row and
heartbeat). The supervisor restarts a child that dies, with an exponential back-off so a
child that crashes at start does not spin; it forwards SIGTERM/SIGINT for a graceful stop and
exits once every child has stopped. A child that exits with status 0 (``--burst``,
``--max-jobs``) is done and is not restarted; without those options a child exits 0 only when
it was stopped from outside (a SIGTERM to it alone), and is replaced at once.

On Linux children are forked from the supervisor, which has set Django up and holds no
database connection (it closes them all before forking). Elsewhere they are spawned and set
Django up themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from django.db import connections

from .conf import settings

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before restarting a child that died; doubles per quick crash
RESTART_DELAY_MAX = 60.0  # seconds
STABLE_AFTER = 60.0  # seconds; a child that ran this long before dying restarts at once-ish
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A child killed by one of these was stopped from outside (an operator, the OOM killer, a
# deploy script), not crashed: it is replaced at once, with no crash-loop back-off.
OUTSIDE_KILLS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
REPLACE_DELAY = 0.1  # seconds before replacing a child killed from outside


def cpu_count() -> int:
    """The cores this process may run on (what `--processes auto` starts)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def start_method() -> str:
    """Fork where it is safe and cheap (Linux); spawn elsewhere."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


@dataclass
class Slot:
    """One of the N places for a worker process, and its restart history."""

    number: int
    process: Any = None  # multiprocessing.Process
    started_at: float = 0.0  # time.monotonic()
    quick_crashes: int = 0
    restart_at: float | None = None  # time.monotonic() of a pending restart
    done: bool = False


class Supervisor:
    """Starts `processes` workers built from `worker_options` and keeps them running."""

    def __init__(
        self,
        processes: int,
        worker_options: dict[str, Any],
        verbosity: int = 1,
        metrics: bool = False,
    ) -> None:
        if processes < 1:
            raise ValueError(f"Invalid processes={processes!r}. Use 1 or more.")
        self.processes = processes
        self.worker_options = dict(worker_options)
        self.verbosity = verbosity  # runjobs -v, for spawned children to set up their logging
        # runjobs --metrics-port: each child writes its samples where the supervisor reads them
        # (metrics.MultiprocessDirectory); the supervisor counts the database's gauges itself.
        self.metrics = metrics
        # Held while forking, and by the metrics' database counts while they query, so no
        # child inherits a connection that the supervisor's scrape thread has open.
        self.fork_lock = threading.Lock()
        self.slots = [Slot(number) for number in range(1, processes + 1)]
        self.stopping = False
        self._signals = 0
        self._told: set[int] = set()  # the children the stop was forwarded to (pids)
        self._context = multiprocessing.get_context(start_method())
        self._status = 0

    def run(self) -> int:
        """Supervise until every child has stopped; returns the exit status."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        logger.info(
            "Supervisor %d starting %d worker processes (%s): queues %s, concurrency %s each.",
            os.getpid(),
            self.processes,
            self._context.get_start_method(),
            ",".join(self.worker_options.get("queues") or []) or "*",
            self.worker_options.get("concurrency") or settings.CONCURRENCY,
        )
        try:
            for slot in self.slots:
                self._start(slot)
            self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        logger.info("Supervisor %d: all worker processes stopped.", os.getpid())
        return self._status

    def _supervise(self) -> None:
        while True:
            alive = [slot for slot in self.slots if slot.process is not None]
            pending = [slot for slot in self.slots if slot.restart_at is not None]
            if not alive and not pending:
                return
            now = time.monotonic()
            timeout = 1.0
            if pending and not self.stopping:
                timeout = max(0.0, min(timeout, *(s.restart_at - now for s in pending)))  # type: ignore[operator]
            ready = wait([slot.process.sentinel for slot in alive], timeout)
            for slot in alive:
                if slot.process.sentinel in ready:
                    self._reap(slot)
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is None:
                    continue
                if self.stopping:
                    slot.restart_at, slot.done = None, True
                elif slot.restart_at <= now:
                    slot.restart_at = None
                    self._start(slot)

    def _worker_options(self, slot: Slot) -> dict[str, Any]:
        options = dict(self.worker_options)
        if options.get("worker_id"):
            options["worker_id"] = f"{options['worker_id']}-{slot.number}"
        options["process"] = (slot.number, self.processes)  # for its banner
        return options

    def _start(self, slot: Slot) -> None:
        # A forked child must not share a connection (socket) with its parent or siblings.
        connections.close_all()
        process = self._context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(self._worker_options(slot), os.getpid(), self.verbosity, self.metrics),
            name=f"django_jobs-worker-{slot.number}",
        )
        # Signals stay blocked across the fork until the child has its own handlers, so a
        # SIGTERM in that instant cannot run this supervisor's handler inside the child.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if self.stopping:
                slot.done = True  # stopped before this child was started: start none
                return
            with self.fork_lock:
                process.start()
            # Known before the signals are unblocked: a stop signal that waited for the fork
            # is forwarded to this child too.
            slot.process, slot.started_at = process, time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        logger.info("Started worker process %d (pid %s).", slot.number, process.pid)
        if self.stopping and process.pid not in self._told:
            # The handler ran during the fork (another thread of this process, such as the
            # metrics server's, took the signal), when the child was not known to it yet.
            self._tell(process.pid, signal.SIGTERM)

    def _reap(self, slot: Slot) -> None:
        process = slot.process
        process.join()
        slot.process = None
        code = process.exitcode
        lived = time.monotonic() - slot.started_at
        ends_by_itself = bool(
            self.worker_options.get("burst") or self.worker_options.get("max_jobs")
        )
        if code == 0 and (ends_by_itself or self.stopping):
            slot.done = True
            logger.info("Worker process %d (pid %s) exited.", slot.number, process.pid)
            return
        if code == 0:
            # Without --burst or --max-jobs a child ends cleanly only when it is stopped: by
            # a SIGTERM or SIGINT to it alone, since this supervisor is not stopping.
            slot.restart_at = time.monotonic() + REPLACE_DELAY
            logger.warning(
                "Worker process %d (pid %s) was stopped from outside; replacing it in %.1fs.",
                slot.number,
                process.pid,
                REPLACE_DELAY,
            )
            return
        if self.stopping:
            slot.done = True
            self._status = 1
            logger.info(
                "Worker process %d (pid %s) exited with %s.", slot.number, process.pid, _how(code)
            )
            return
        if code is not None and code < 0 and -code in OUTSIDE_KILLS:
            delay = REPLACE_DELAY
        else:
            slot.quick_crashes = slot.quick_crashes + 1 if lived < STABLE_AFTER else 1
            delay = min(RESTART_DELAY * 2 ** (slot.quick_crashes - 1), RESTART_DELAY_MAX)
        slot.restart_at = time.monotonic() + delay
        logger.warning(
            "Worker process %d (pid %s) died (%s) after %.1fs; restarting it in %.1fs.",
            slot.number,
            process.pid,
            _how(code),
            lived,
            delay,
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        children = [slot.process for slot in self.slots if slot.process is not None]
        if not self.stopping:
            self.stopping = True
            logger.info(
                "Supervisor %d: %s received, stopping %d worker process(es) gracefully.",
                os.getpid(),
                signal.Signals(signum).name,
                len(children),
            )
            # SIGTERM, whatever came in: after a Ctrl-C the terminal has already sent the
            # children SIGINT themselves, and a second SIGINT would make them exit at once.
            forward = signal.SIGTERM
        elif signum == signal.SIGINT:
            logger.warning("Supervisor %d: second interrupt, stopping at once.", os.getpid())
            forward = signal.SIGINT  # a worker that is stopping exits at once on SIGINT
        else:
            return
        for process in children:
            self._tell(process.pid, forward)

    def _tell(self, pid: int, signum: int) -> None:
        """Forward a stop signal to a child."""
        self._told.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this child SIGTERM when the supervisor dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)  # the supervisor died before the line above


def _child_main(
    options: dict[str, Any], parent_pid: int, verbosity: int = 1, metrics: bool = False
) -> None:
    """A worker process: set up, run one Worker, exit with its status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _die_with_parent(parent_pid)
    import django
    from django.apps import apps

    if not apps.ready:  # spawned: a fresh interpreter
        django.setup()
        from .worker import report

        report.configure_logging(verbosity)  # a forked child has the supervisor's already
    if metrics:
        from . import metrics as prometheus

        prometheus.enable_worker()  # into the supervisor's directory (PROMETHEUS_MULTIPROC_DIR)
    from .worker import Worker

    sys.exit(Worker(**options).run())
