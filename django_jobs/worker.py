"""The worker: a claim loop, a pool of threads running jobs, a heartbeat, and a graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any

from asgiref.sync import async_to_sync
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from . import claiming
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


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def resolve(job: Job) -> tuple[Callable[[Job], Any], JobDefinition | None]:
    """The code a row may run: only a registered definition (or a tasks-framework task)."""
    if job.task_backend:
        from .backend import resolve_task

        return resolve_task(job), None
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
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._interrupts = 0
        self._record: WorkerRecord | None = None
        self._pool: ThreadPoolExecutor | None = None

    # Lifecycle

    def run(self) -> int:
        """Work until stopped (or, with burst/max_jobs, until done); returns the exit status."""
        self._install_signal_handlers()
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
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period to finish."""
        self._stopping.set()
        self._wake.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

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
                claimed = self._claim()
                failures = 0
            except DatabaseError as exc:
                failures += 1
                delay = min(2**failures * 0.1, DB_ERROR_BACKOFF_MAX)
                logger.warning(
                    "Worker %s: database error while claiming (%s); retrying in %.1fs.",
                    self.worker_id,
                    exc,
                    delay,
                )
                close_old_connections_for(self.using)
                self._stopping.wait(delay)
                continue
            with self._lock:
                busy = len(self._running)
            if self._max_jobs_reached() and not busy:
                logger.info("Worker %s ran its %d jobs; stopping.", self.worker_id, self.max_jobs)
                return
            if claimed and busy < self.concurrency and not self._max_jobs_reached():
                continue  # there may be more due jobs for the free slots
            sleep = self._sleep_time(busy)
            if self.burst and not claimed and not busy and sleep >= self.poll_interval:
                # Nothing is due, nor coming due within a poll interval (e.g. a quick retry).
                logger.info("Worker %s: nothing is due; stopping (--burst).", self.worker_id)
                return
            self._wake.wait(sleep)
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
        jobs = claiming.claim(
            worker_id=self.worker_id,
            queues=self.queues,
            limit=free,
            lock_lifetime=self.lock_lifetime,
            exclude_names=saturated,
            using=self.using,
        )
        started = []
        for job in jobs:
            if self._over_limit(job):
                # The batch held more of this name than its concurrency allows: hand it back.
                claiming.release(job, None, reason="")
                continue
            self.claimed_count += 1
            started.append(job)
            with self._lock:
                self._running[_key(job)] = Running(job, lock_lifetime=self._lifetime(job))
            assert self._pool is not None
            self._pool.submit(self._execute, job)
        return started

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

    def _sleep_time(self, busy: int) -> float:
        """Sleep until the earliest due job we know of, but no longer than the poll interval."""
        if busy >= self.concurrency:
            return self.poll_interval
        try:
            nxt = (
                Job.objects.using(self.using)
                .scheduled()
                .filter(enabled=True, next_run_at__gt=timezone.now())
                .filter(**({"queue__in": self.queues} if self.queues else {}))
                .order_by("next_run_at")
                .values_list("next_run_at", flat=True)
                .first()
            )
        except DatabaseError:
            return self.poll_interval
        if nxt is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, (nxt - timezone.now()).total_seconds()))

    # Running one job (on a pool thread)

    def _execute(self, job: Job) -> None:
        close_old_connections()
        entry = self._running[_key(job)]
        run = None
        definition = None
        try:
            run = claiming.start_run(job, self.worker_id)
            entry.run = run
            try:
                func, definition = resolve(job)
            except UnknownJob as exc:
                logger.error("Job %s failed: %s", job, exc)
                claiming.finish(job, run, failure=claiming.Failure(str(exc), retry=False))
                job_failed.send(sender=Job, job=job, run=run, exception=exc, will_retry=False)
                return
            job_started.send(sender=Job, job=job, run=run)
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
                failure = claiming.Failure(f"{type(exc).__name__}: {exc}", traceback.format_exc())
                claiming.finish(job, run, failure=failure, retry_delay=delay)
                job_failed.send(sender=Job, job=job, run=run, exception=exc, will_retry=will_retry)
                return
            claiming.finish(job, run, result=result)
            logger.info("Job %s succeeded in %.3fs", job, time.monotonic() - entry.started)
            job_succeeded.send(sender=Job, job=job, run=run, result=result)
        except Exception:
            # The database went away mid-run: the lock expires and another worker recovers it.
            logger.exception("Worker %s could not record the outcome of %s", self.worker_id, job)
        finally:
            with self._lock:
                self._running.pop(_key(job), None)
            close_old_connections()
            self._wake.set()

    # Heartbeat (its own thread and database connection)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.heartbeat_interval):
            self.beat()
        connections.close_all()

    def beat(self) -> None:
        """Mark this worker alive, extend its jobs' locks, recover jobs of dead workers."""
        try:
            assert self._record is not None
            if not claiming.heartbeat(self._record):
                self._register()  # presumed dead after a long pause: come back
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
            with self._lock:
                left = list(self._running.values())
            if not left or time.monotonic() >= deadline:
                break
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
        self._stopping.set()
        for entry in left:
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


def _key(job: Job) -> tuple[int, str]:
    return (job.pk, job.lock_token or "")


def close_old_connections_for(using: str) -> None:
    """Drop a broken connection so the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connections[using].close()
