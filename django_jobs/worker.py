"""The worker: a claim loop, a pool of threads running jobs, a heartbeat, and a graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from asgiref.sync import async_to_sync
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)
from django.dispatch import Signal
from django.utils import timezone

from . import claiming, notify
from .api import check_json
from .conf import settings
from .exceptions import UnknownJob
from .models import Job, JobRun
from .models import Worker as WorkerRecord
from .registry import JobDefinition, registry
from .signals import job_failed, job_started, job_succeeded
from .sync import sync_recurring

logger = logging.getLogger(__name__)

DB_ERROR_BACKOFF_MAX = 30.0  # seconds between attempts to reach a database that is down
HAND_OFF_PAUSE = 0.0001  # seconds the claim loop yields after handing jobs to the pool
RETENTION_EVERY = 3600.0  # seconds between two purges of old history by one worker
# SQLite's clock ('now') has millisecond resolution: a job due at 10:00:00.1234 is not due by
# it until 10:00:00.124, so a worker that woke at its due time would find nothing to claim.
DB_CLOCK_RESOLUTION = 0.001  # seconds


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def class_path(exc: BaseException) -> str:
    """The import path of an exception's class, as Django's tasks framework records it."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def resolve(job: Job) -> tuple[Callable[[Job], Any], JobDefinition | None]:
    """The code a row may run: only a registered definition (or a tasks-framework task)."""
    if job.task_backend:
        from .backend import resolve_task

        return resolve_task(job)
    definition = registry.get(job.name)
    if definition is None:
        raise UnknownJob(
            f"No job named {job.name!r} is registered, so it was not run. "
            f"Registered jobs: {registry.names_text()}."
        )
    func = definition.func
    if definition.is_async:
        return async_to_sync(func), definition
    return func, definition


@dataclass
class Running:
    """A job this worker holds, with its history row once it has started."""

    job: Job
    run: JobRun | None = None
    lock_lifetime: float = 30.0
    started: float = field(default_factory=time.monotonic)
    outcome: claiming.Outcome | None = None  # set when the job is over, until it is written
    recorded: threading.Event = field(default_factory=threading.Event)
    # The key in Worker._running: the job and the claim's lock token, taken when it is claimed
    # (writing the outcome clears the token on the job instance).
    key: tuple[int, str] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.job.pk, self.job.lock_token or "")


class Worker:
    """One `runjobs` process: claims due jobs and runs them on `concurrency` threads."""

    def __init__(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 1,
        poll_interval: float | None = None,
        burst: bool = False,
        max_jobs: int | None = None,
        worker_id: str | None = None,
        lock_lifetime: float | None = None,
        grace_period: float | None = None,
        using: str | None = None,
    ) -> None:
        self.queues = list(queues or [])
        self.concurrency = concurrency
        self.poll_interval = settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.burst = burst
        self.max_jobs = max_jobs
        self.worker_id = worker_id or default_worker_id()
        self.lock_lifetime = settings.LOCK_LIFETIME if lock_lifetime is None else lock_lifetime
        self.heartbeat_interval = settings.HEARTBEAT_INTERVAL or self.lock_lifetime / 3
        self.grace_period = settings.GRACE_PERIOD if grace_period is None else grace_period
        self.using = using or settings.DATABASE
        self.claimed_count = 0
        self._running: dict[tuple[int, str], Running] = {}
        # Ended runs waiting for the claim loop to write them, several in one transaction.
        self._outcomes: list[Running] = []
        # Held while outcomes are written and while locks are extended, so the heartbeat
        # never extends (and reports lost) the lock of a job whose outcome was just written.
        self._writing = threading.Lock()
        self._listener: notify.ClaimListener | None = None
        self._lock = threading.Lock()
        self._wake = notify.Wakeup()
        self._stopping = threading.Event()
        self._interrupts = 0
        self._record: WorkerRecord | None = None
        self._pool: ThreadPoolExecutor | None = None

    # Lifecycle

    def run(self) -> int:
        """Work until stopped (or, with burst/max_jobs, until done); returns the exit status."""
        previous_handlers = self._install_signal_handlers()
        try:
            self._register()
            sync_recurring(self.using)
            logger.info(
                "Worker %s started: queues=%s concurrency=%d lock_lifetime=%ss",
                self.worker_id,
                ",".join(self.queues) or "*",
                self.concurrency,
                self.lock_lifetime,
            )
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="django_jobs")
            beat = threading.Thread(target=self._heartbeat_loop, name="django_jobs-heartbeat")
            beat.daemon = True
            beat.start()
            if settings.NOTIFY and notify.supported(self.using):
                self._listener = notify.ClaimListener(self.using, self.queues)
                self._wake.open()
            if settings.RETENTION is not None:
                threading.Thread(
                    target=self._retention_loop, name="django_jobs-retention", daemon=True
                ).start()
            try:
                self._loop()
            finally:
                self._shutdown()
                self._wake.close()
        finally:
            # A worker run in-process (call_command, a test) must not leave its handlers behind:
            # they would make the host process ignore SIGTERM once this worker has stopped.
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return 0

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period to finish."""
        self._stopping.set()
        self._wake.set()

    def _install_signal_handlers(self) -> dict[int, Any]:
        """Route SIGTERM and SIGINT to a graceful stop; returns the handlers they replace."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.signal(signum, self._on_signal)
            if handler is not None:  # None: set outside Python, so it cannot be put back
                previous[signum] = handler
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self._stopping.is_set():
            # A second Ctrl-C: leave now; the locks expire and other workers recover the jobs.
            logger.warning("Worker %s: second interrupt, exiting at once.", self.worker_id)
            os._exit(1)
        logger.info(
            "Worker %s: %s received, finishing running jobs (up to %ss).",
            self.worker_id,
            signal.Signals(signum).name,
            self.grace_period,
        )
        self.stop()

    def _register(self) -> None:
        self._record, _ = WorkerRecord.objects.using(self.using).update_or_create(
            worker_id=self.worker_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "started_at": timezone.now(),
                "last_heartbeat_at": timezone.now(),
            },
        )

    # The claim loop

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._write_outcomes()
                since = timezone.now()
                claimed = self._claim()
                failures = 0
            except DatabaseError as exc:
                failures += 1
                delay = min(2**failures * 0.1, DB_ERROR_BACKOFF_MAX)
                logger.warning(
                    "Worker %s: database error (%s); reconnecting in %.1fs.",
                    self.worker_id,
                    str(exc).strip(),
                    delay,
                )
                close_old_connections_for(self.using)
                self._stopping.wait(delay)
                continue
            with self._lock:
                busy = len(self._running)
                ended = bool(self._outcomes)
            if self._max_jobs_reached() and not busy:
                logger.info("Worker %s ran its %d jobs; stopping.", self.worker_id, self.max_jobs)
                return
            if ended:
                continue  # write them, then fill the slots they free
            if claimed and busy < self.concurrency and not self._max_jobs_reached():
                continue  # there may be more due jobs for the free slots
            sleep = self._sleep_time(busy, since)
            if self.burst and not claimed and not busy and sleep >= self.poll_interval:
                # Nothing is due, nor coming due within a poll interval (e.g. a quick retry).
                logger.info("Worker %s: nothing is due; stopping (--burst).", self.worker_id)
                return
            try:
                self._sleep(sleep, full=busy >= self.concurrency)
            except DatabaseError as exc:
                # The connection was lost while idle: the next claim reconnects (or backs off).
                logger.warning(
                    "Worker %s: database error while waiting for jobs (%s); reconnecting.",
                    self.worker_id,
                    str(exc).strip(),
                )
                close_old_connections_for(self.using)

    def _sleep(self, timeout: float, full: bool) -> None:
        """Wait for a wake-up, a notification for our queues, or `timeout` seconds.

        With every thread busy only an ended job gives the loop work, so it waits for that
        alone; notifications wait in the connection until a thread is free.
        """
        listener = self._listener
        if listener is None or full:
            self._wake.wait(timeout)
            self._wake.clear()
            return
        if listener.listen():
            # A new connection: what was notified before LISTEN is lost; look for work first.
            logger.info("Worker %s: listening for new jobs.", self.worker_id)
            return
        deadline = time.monotonic() + timeout
        while not listener.heard():
            if self._wake.is_set():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining, listener.fileno())
        self._wake.clear()

    def _max_jobs_reached(self) -> bool:
        return self.max_jobs is not None and self.claimed_count >= self.max_jobs

    def _saturated_names(self) -> set[str]:
        """Names whose per-process concurrency limit is already in use."""
        counts: dict[str, int] = {}
        with self._lock:
            for entry in self._running.values():
                counts[entry.job.name] = counts.get(entry.job.name, 0) + 1
        saturated = set()
        for name, count in counts.items():
            definition = registry.get(name)
            if definition and definition.concurrency and count >= definition.concurrency:
                saturated.add(name)
        return saturated

    def _claim(self) -> list[Job]:
        with self._lock:
            free = self.concurrency - len(self._running)
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self.claimed_count)
        if free <= 0:
            return []
        saturated = self._saturated_names()
        claimed = claiming.claim_and_start(
            worker_id=self.worker_id,
            queues=self.queues,
            limit=free,
            lock_lifetime=self.lock_lifetime,
            exclude_names=saturated,
            using=self.using,
        )
        started = []
        for job, run in claimed:
            if self._over_limit(job):
                # The batch held more of this name than its concurrency allows: hand it back.
                claiming.release(job, run, reason="", discard_run=True)
                continue
            self.claimed_count += 1
            started.append(job)
            entry = Running(job, run, lock_lifetime=self._lifetime(job))
            with self._lock:
                self._running[entry.key] = entry
            assert self._pool is not None
            self._pool.submit(self._execute, entry)
        if started:
            # Let a pool thread take the GIL and start the job now: otherwise it waits until
            # this thread has built its next claim and blocks on the database (W2 latency).
            time.sleep(HAND_OFF_PAUSE)
        return started

    def _write_outcomes(self) -> None:
        """Write the runs that ended since the last pass, in one transaction, and free slots."""
        with self._lock:
            batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        with self._writing:
            try:
                claiming.finish_many(
                    [entry.outcome for entry in batch if entry.outcome], using=self.using
                )
            except (OperationalError, InterfaceError):
                with self._lock:
                    self._outcomes[:0] = batch  # written after the reconnection
                raise
            except Exception:
                # One outcome the database refuses (a DataError, say) must not hold back the
                # others: write them one by one.
                logger.exception("Worker %s could not write a batch of outcomes.", self.worker_id)
                self._write_one_by_one(batch)
            with self._lock:
                for entry in batch:
                    self._running.pop(entry.key, None)
        for entry in batch:
            entry.recorded.set()

    def _write_one_by_one(self, batch: list[Running]) -> None:
        for number, entry in enumerate(batch):
            if entry.outcome is None:
                continue
            try:
                claiming.finish_many([entry.outcome], using=self.using)
            except (OperationalError, InterfaceError):
                with self._lock:
                    self._outcomes[:0] = batch[number:]
                raise
            except Exception:
                logger.exception(
                    "Could not record the outcome of job %s; its lock will expire and it will "
                    "be recovered as an orphaned run.",
                    entry.job,
                )

    def _record_outcome(self, entry: Running, outcome: claiming.Outcome, signal: Signal) -> None:
        """Hand an ended run to the claim loop; wait for it to be written if `signal` has
        receivers, so they see the job's new state."""
        entry.outcome = outcome
        with self._lock:
            self._outcomes.append(entry)
        self._wake.set()
        if signal.has_listeners(Job):
            entry.recorded.wait()

    def _over_limit(self, job: Job) -> bool:
        definition = registry.get(job.name)
        if not definition or not definition.concurrency:
            return False
        with self._lock:
            same = sum(1 for e in self._running.values() if e.job.name == job.name)
        return same >= definition.concurrency

    def _lifetime(self, job: Job) -> float:
        definition = registry.get(job.name)
        if definition and definition.lock_lifetime:
            return definition.lock_lifetime.total_seconds()
        return self.lock_lifetime

    def _sleep_time(self, busy: int, since: datetime) -> float:
        """Sleep until the earliest due job we know of, but no longer than the poll interval.

        `since` is when the last claim began: a job that came due after it is due now.
        """
        if busy >= self.concurrency:
            return self.poll_interval
        try:
            nxt = (
                Job.objects.using(self.using)
                .scheduled()
                # A job due within the clock's resolution before the claim may not have been
                # due by the database's clock yet: still count it as coming.
                .filter(
                    enabled=True,
                    next_run_at__gt=since - timedelta(seconds=DB_CLOCK_RESOLUTION),
                )
                .filter(**({"queue__in": self.queues} if self.queues else {}))
                .order_by("next_run_at")
                .values_list("next_run_at", flat=True)
                .first()
            )
        except DatabaseError:
            return self.poll_interval
        if nxt is None:
            return self.poll_interval
        wait = (nxt - timezone.now()).total_seconds() + DB_CLOCK_RESOLUTION
        return max(0.0, min(self.poll_interval, wait))

    # Running one job (on a pool thread)

    def _execute(self, entry: Running) -> None:
        close_old_connections()
        job, run = entry.job, entry.run
        definition = None
        try:
            try:
                func, definition = resolve(job)
            except UnknownJob as exc:
                logger.error("Job %s failed: %s", job, exc)
                failure = claiming.Failure(str(exc), retry=False, error_class=class_path(exc))
                self._record_outcome(entry, claiming.Outcome(job, run, failure=failure), job_failed)
                send_signal(job_failed, job=job, run=run, exception=exc, will_retry=False)
                return
            send_signal(job_started, job=job, run=run)
            try:
                result = func(job)
                check_json(result, "the return value")
            except Exception as exc:
                will_retry = job.attempts < job.max_attempts
                delay = definition.retry_delay(job.attempts) if definition else timedelta(0)
                logger.warning(
                    "Job %s attempt %d/%d failed: %s: %s",
                    job,
                    job.attempts,
                    job.max_attempts,
                    type(exc).__name__,
                    exc,
                )
                failure = claiming.Failure(
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                    error_class=class_path(exc),
                )
                outcome = claiming.Outcome(job, run, failure=failure, retry_delay=delay)
                self._record_outcome(entry, outcome, job_failed)
                send_signal(job_failed, job=job, run=run, exception=exc, will_retry=will_retry)
                return
            elapsed = time.monotonic() - entry.started
            self._record_outcome(entry, claiming.Outcome(job, run, result=result), job_succeeded)
            logger.info("Job %s succeeded in %.3fs", job, elapsed)
            send_signal(job_succeeded, job=job, run=run, result=result)
        except Exception:
            logger.exception("Worker %s could not run %s", self.worker_id, job)
        finally:
            close_old_connections()
            if entry.outcome is None:
                # Nothing to write (an error above): free the slot; the lock expires and
                # another worker recovers the job.
                with self._lock:
                    self._running.pop(entry.key, None)
                self._wake.set()

    # Heartbeat (its own thread and database connection)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.heartbeat_interval):
            self.beat()
        connections.close_all()

    def _retention_loop(self) -> None:
        # Spread the purges of workers that started together.
        wait = random.uniform(0, 60)
        while not self._stopping.wait(wait):
            self.apply_retention()
            wait = RETENTION_EVERY
        connections.close_all()

    def apply_retention(self) -> int:
        """Delete history older than DJANGO_JOBS["RETENTION"]; returns how many rows went."""
        from .retention import parse_age, purge

        if settings.RETENTION is None:
            return 0
        try:
            result = purge(parse_age(settings.RETENTION), using=self.using, pause=0.05)
        except DatabaseError as exc:
            logger.warning("Worker %s: purging old history failed (%s).", self.worker_id, exc)
            close_old_connections_for(self.using)
            return 0
        return result.jobs + result.runs

    def beat(self) -> None:
        """Mark this worker alive, extend its jobs' locks, recover jobs of dead workers."""
        try:
            assert self._record is not None
            if not claiming.heartbeat(self._record):
                self._register()  # presumed dead after a long pause: come back
            with self._writing:
                with self._lock:
                    entries = list(self._running.values())
                by_lifetime: dict[float, list[Job]] = {}
                for entry in entries:
                    by_lifetime.setdefault(entry.lock_lifetime, []).append(entry.job)
                for lifetime, jobs in by_lifetime.items():
                    lost = claiming.extend_locks(jobs, lifetime, using=self.using)
                    for pk in lost:
                        logger.warning(
                            "Worker %s lost the lock of job %s; its result will be discarded.",
                            self.worker_id,
                            pk,
                        )
            claiming.recover_stale(self.using)
            claiming.delete_dead_workers(settings.stale_worker_after, using=self.using)
        except DatabaseError as exc:
            logger.warning("Worker %s: heartbeat failed (%s).", self.worker_id, exc)
            close_old_connections_for(self.using)

    # Stopping

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.grace_period
        while True:
            try:
                self._write_outcomes()
            except DatabaseError as exc:
                logger.warning("Worker %s: cannot write outcomes (%s).", self.worker_id, exc)
                close_old_connections_for(self.using)
            with self._lock:
                left = list(self._running.values())
            if not left or time.monotonic() >= deadline:
                break
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
        self._stopping.set()
        if self._listener is not None:
            self._listener.unlisten()
        for entry in left:
            if entry.outcome is not None:
                # It ran, but the database could not be told: its lock expires and the run is
                # recorded as orphaned, rather than handed back as if it had not run.
                logger.error("Could not record the outcome of job %s.", entry.job)
                continue
            reason = (
                f"Worker {self.worker_id} stopped before the job finished "
                f"(grace period {self.grace_period}s); it was handed back to run again."
            )
            try:
                claiming.release(entry.job, entry.run, reason=reason)
                logger.warning("Released job %s: %s", entry.job, reason)
            except DatabaseError:
                logger.exception("Could not release job %s; its lock will expire.", entry.job)
        try:
            WorkerRecord.objects.using(self.using).filter(worker_id=self.worker_id).delete()
        except DatabaseError:
            logger.exception("Could not remove the row of worker %s.", self.worker_id)
        logger.info("Worker %s stopped after %d job(s).", self.worker_id, self.claimed_count)
        if left:
            # Threads still inside a job cannot be interrupted; their jobs were handed back.
            logging.shutdown()
            os._exit(0)
        assert self._pool is not None
        self._pool.shutdown(wait=True)


def send_signal(signal: Signal, **kwargs: Any) -> None:
    """Send a job signal; a receiver that raises is logged and cannot break the run."""
    # With a plain send(), a failing job_started receiver would leave the job running until
    # its lock expired and then record it as orphaned. send_robust() logs the traceback to
    # "django.dispatch"; this says which job it was.
    for receiver, response in signal.send_robust(sender=Job, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "Receiver %s of a django_jobs signal raised %s: %s (job %s).",
                getattr(receiver, "__qualname__", receiver),
                type(response).__name__,
                response,
                kwargs.get("job"),
            )


def close_old_connections_for(using: str) -> None:
    """Drop a broken connection so the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connections[using].close()
