"""The Worker: a claim loop, a pool of threads running jobs, a heartbeat, and a graceful stop.

Running one job is executor.py's; writing ended runs in batches is outbox.py's. Every time
the worker writes is the database's (see django_jobs.db), and no exception, in the claim
loop or the heartbeat, ends either: each is logged and retried after a back-off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import Any, TypeVar

from django.db import DatabaseError, connections
from django.dispatch import Signal

from .. import alerts, claiming, notify, stats
from ..conf import settings
from ..db import DbNow, db_now_plus
from ..models import Job
from ..models import Worker as WorkerRecord
from ..registry import registry
from ..states import STOP_CANCEL
from ..sync import sync_recurring
from . import early_stop, isolation, report
from .executor import Running, execute
from .outbox import Outbox
from .threads import JobThreads

logger = logging.getLogger("django_jobs.worker")

ERROR_BACKOFF_MAX = 30.0  # seconds between attempts after repeated errors (database down)
# A worker that declares no limits looks for limited jobs (lock keys) at every claim for this
# long after it last saw one, and otherwise once a poll interval: the ordinary claim stays one
# statement for projects that use no limits.
LIMITED_SEEN_FOR = 60.0  # seconds
HAND_OFF_PAUSE = 0.0001  # seconds the claim loop yields after handing jobs to the pool
RETENTION_EVERY = 3600.0  # seconds between two purges of old history by one worker
# SQLite's clock ('now') has millisecond resolution: a job due at 10:00:00.1234 is not due by
# it until 10:00:00.124, so a worker that woke at its due time would find nothing to claim.
DB_CLOCK_RESOLUTION = 0.001  # seconds
# The heartbeat beats this many times within the shortest lock the worker holds, so one late
# or failed beat never lets a lock lapse while its job runs.
BEATS_PER_LOCK = 3
# Seconds from its claim within which a run counts as quick: a worker claims ahead of its free
# threads (CLAIM_AHEAD) only while its last written runs and its running ones are all quick.
QUICK_RUN = 0.1
# A lock extended later than this share of its lifetime after it was last set is logged: one
# beat more than two periods late (see _warn_if_late()).
LATE_EXTENSION = (BEATS_PER_LOCK - 1) / BEATS_PER_LOCK

T = TypeVar("T")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` errors in a row: 0.2, 0.4, ... up to 30."""
    return float(min(2 ** min(failures, 16) * 0.1, ERROR_BACKOFF_MAX))


class Worker:
    """One `runjobs` process: claims due jobs and runs them on `concurrency` threads."""

    def __init__(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        burst: bool = False,
        max_jobs: int | None = None,
        worker_id: str | None = None,
        lock_lifetime: float | None = None,
        grace_period: float | None = None,
        using: str | None = None,
        process: tuple[int, int] | None = None,
        isolation: str = "thread",
    ) -> None:
        self.queues = list(queues or [])
        self.isolation = isolation  # "thread", or "process": each job in a child process
        self.concurrency = settings.CONCURRENCY if concurrency is None else concurrency
        self.claim_ahead = settings.CLAIM_AHEAD
        self._quick = False  # whether the runs it wrote last were all quick (QUICK_RUN)
        self.poll_interval = settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.burst = burst
        self.max_jobs = max_jobs
        self.worker_id = worker_id or default_worker_id()
        self.lock_lifetime = settings.LOCK_LIFETIME if lock_lifetime is None else lock_lifetime
        # The heartbeat beats at least BEATS_PER_LOCK times per lock, whatever the setting.
        self.heartbeat_interval = min(
            settings.HEARTBEAT_INTERVAL or math.inf, self.lock_lifetime / BEATS_PER_LOCK
        )
        # This worker's row expires after this long without a heartbeat: the same time as
        # the locks it holds, so it shows dead when its jobs come back to the others.
        # Never less than two beats, so a live worker's row cannot expire between beats.
        self.expires_after = max(
            settings.STALE_WORKER_AFTER or self.lock_lifetime, 2 * self.heartbeat_interval
        )
        self.grace_period = settings.GRACE_PERIOD if grace_period is None else grace_period
        self.using = using or settings.DATABASE
        self.process = process  # (number, count) of a worker process in cluster mode
        self.claimed_count = 0
        self._tally = report.Tally(self.worker_id)
        self._running: dict[tuple[int, str], Running] = {}
        self._outbox = Outbox(self.using)
        self._listener: notify.ClaimListener | None = None
        self._lock = threading.Lock()
        self._wake = notify.Wakeup()
        self._beat_wake = threading.Event()
        self._cancels_asked = threading.Event()  # a STOP notification: look for cancels now
        self._stopping = threading.Event()
        self._record: WorkerRecord | None = None
        self._limited_at: float | None = None  # monotonic time a rate-limited job may start
        self._limited_seen_at = -math.inf  # monotonic time a claim last found a limited job
        self._limited_look_at = 0.0  # monotonic time to look for limited jobs again, at least
        self._pool: JobThreads[Running] | None = None

    # Lifecycle

    def run(self) -> int:
        """Work until stopped (or, with burst/max_jobs, until done); returns the exit status."""
        previous_handlers = self._install_signal_handlers()
        try:
            if early_stop.requested():
                logger.info("Worker %s: stopped before it started.", self.worker_id)
                return 0
            if not self._retry_until_stopped(self._start_up, "starting"):
                return 0
            if self.isolation == "process":
                isolation.start_fork_server()  # before the first job's timeout starts
            self._pool = JobThreads(
                self.concurrency,
                functools.partial(execute, report=self._record_outcome),
                "django_jobs",
            )
            threading.Thread(
                target=self._heartbeat_loop, name="django_jobs-heartbeat", daemon=True
            ).start()
            threading.Thread(
                target=self._recovery_loop, name="django_jobs-recovery", daemon=True
            ).start()
            if settings.NOTIFY and notify.supported(self.using):
                self._listener = notify.ClaimListener(self.using, self.queues)
                self._wake.open()
            self._tally = report.Tally(self.worker_id)  # its clock starts now
            logger.info(
                "%s",
                report.banner(
                    self.worker_id,
                    queues=self.queues,
                    concurrency=self.concurrency,
                    using=self.using,
                    listening=self._listener is not None,
                    poll_interval=self.poll_interval,
                    lock_lifetime=self.lock_lifetime,
                    pid=os.getpid(),
                    process=self.process,
                ),
            )
            if settings.RETENTION is not None:
                threading.Thread(
                    target=self._retention_loop, name="django_jobs-retention", daemon=True
                ).start()
            # job_overdue, on a thread of its own: its receivers must not delay the heartbeat.
            alerts.OverdueWatcher(self.using, self._stopping, self.heartbeat_interval).start()
            stats.StatsKeeper(self.using, self._stopping).start()  # the overview's counts
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

    def _start_up(self) -> None:
        self._register()
        sync_recurring(self.using)
        # Rows created before a limit was added to (or removed from) their definition.
        Job.objects.using(self.using).mark_limited()

    def _retry_until_stopped(self, step: Callable[[], T], what: str) -> bool:
        """Run `step` until it succeeds (True) or the worker is stopped (False)."""
        failures = 0
        while not self._stopping.is_set():
            try:
                step()
                return True
            except Exception as exc:
                failures += 1
                self._survive(exc, what, failures)
        return False

    def _survive(self, exc: Exception, what: str, failures: int) -> None:
        """Log an error of the claim loop, the heartbeat, recovery or start-up; wait a back-off."""
        delay = backoff(failures)
        if isinstance(exc, DatabaseError):
            logger.warning(
                "Worker %s: database error while %s (%s); reconnecting, retrying in %.1fs.",
                self.worker_id,
                what,
                str(exc).strip(),
                delay,
            )
            close_connection(self.using)
        else:
            logger.exception(
                "Worker %s: unexpected error while %s; retrying in %.1fs.",
                self.worker_id,
                what,
                delay,
            )
        self._stopping.wait(delay)

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period to finish."""
        self._stopping.set()
        self._wake.set()
        self._beat_wake.set()

    def _install_signal_handlers(self) -> dict[int, Any]:
        """Route SIGTERM and SIGINT to a graceful stop; returns the handlers they replace."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.signal(signum, self._on_signal)
            if handler is not None:  # None: set outside Python, so it cannot be put back
                previous[signum] = early_stop.original(signum, handler)
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
                "lock_lifetime": self.lock_lifetime,
                "started_at": DbNow(),
                "last_heartbeat_at": DbNow(),
                "expires_at": db_now_plus(self.expires_after),
            },
        )

    # The claim loop

    def _loop(self) -> None:
        failures = 0
        idle_checks = 0  # burst: looks in a row that found nothing due nor coming
        while not self._stopping.is_set():
            try:
                since = time.monotonic()
                self._tally.tick(since)
                claimed = self._write_and_claim()
                failures = 0
                if claimed:
                    idle_checks = 0
            except Exception as exc:
                failures += 1
                self._survive(exc, "claiming", failures)
                continue
            with self._lock:
                busy = len(self._running)
            if self._max_jobs_reached() and not busy:
                logger.info("Worker %s ran its %d jobs; stopping.", self.worker_id, self.max_jobs)
                return
            if self._outbox:
                continue  # write them, then fill the slots they free
            if claimed and busy < self.concurrency and not self._max_jobs_reached():
                continue  # there may be more due jobs for the free slots
            sleep = self._sleep_time(busy, since)
            if self.burst and not claimed and not busy and sleep >= self.poll_interval:
                # Nothing is due, nor coming due within a poll interval (e.g. a quick retry).
                # Look once more before leaving: a retry written just before the last claim,
                # or a look that failed, must not end the burst with work left.
                if idle_checks >= 1:
                    logger.info("Worker %s: nothing is due; stopping (--burst).", self.worker_id)
                    return
                idle_checks += 1
                continue
            idle_checks = 0
            try:
                look_again = self._hand_back_waiting()
                if look_again is not None:
                    sleep = min(sleep, look_again)
                self._sleep(sleep, full=busy >= self.concurrency)
            except Exception as exc:
                # The connection was lost while idle: the next claim reconnects (or backs off).
                logger.warning(
                    "Worker %s: %s while waiting for jobs (%s); reconnecting.",
                    self.worker_id,
                    "database error" if isinstance(exc, DatabaseError) else "error",
                    str(exc).strip(),
                )
                close_connection(self.using)

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
            if listener.stop_heard:
                # A running job was cancelled: the heartbeat thread looks for ours now.
                listener.stop_heard = False
                self._cancels_asked.set()
                self._beat_wake.set()
            if self._wake.is_set():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining, listener.fileno())
        self._wake.clear()

    def _max_jobs_reached(self) -> bool:
        return self.max_jobs is not None and self.claimed_count >= self.max_jobs

    def _running_by_name(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for entry in self._running.values():
                counts[entry.job.name] = counts.get(entry.job.name, 0) + 1
        return counts

    def _process_room(self, ending: Counter[str]) -> dict[str, int]:
        """Runs each name with a per-process concurrency may still start in this process,
        once the `ending` runs (counted by name) are written."""
        room = {}
        for name, count in self._running_by_name().items():
            definition = registry.get(name)
            if definition and definition.process_concurrency:
                room[name] = max(definition.process_concurrency - count + ending[name], 0)
        return room

    def _look_for_limited(self) -> bool:
        """Whether this claim looks for limited jobs too (see LIMITED_SEEN_FOR)."""
        if self.burst or registry.limited():
            # It runs definitions with limits, or must not leave before it has looked.
            return True
        now = time.monotonic()
        return now - self._limited_seen_at < LIMITED_SEEN_FOR or now >= self._limited_look_at

    def _write_and_claim(self) -> list[Job]:
        """Write the runs that ended since the last pass and claim due jobs for the free
        slots, theirs included. On PostgreSQL the outcomes and the ordinary claim go in one
        round trip and one transaction (claim_batch(finish=...)); elsewhere one transaction
        after the other. Limited jobs, whose claims may wait for their groups' locks, are
        claimed after that statement, so the outcomes never wait for a group. The heartbeat
        waits for none of this (beat()). The claimed jobs start once the ended runs' slots
        are free."""
        result: claiming.ClaimResult | None = None

        def finish(outcomes: list[claiming.Outcome]) -> None:
            nonlocal result
            if claiming.rides_with_claim(self.using):
                result = self._claim_batch(outcomes, limited=False)
            else:
                claiming.finish_many(outcomes, using=self.using)

        self._outbox.write(self._written, finish)
        if result is None:  # no ride: nothing had ended, another database, or written one by one
            return self._start(self._claim_batch([]))
        if self._look_for_limited():
            more = self._claim_batch([], limited=True, taken=len(result.claimed), ordinary=False)
            result = replace(more, claimed=result.claimed + more.claimed, written=result.written)
        return self._start(result)

    def _claim_batch(
        self,
        finish: list[claiming.Outcome],
        *,
        limited: bool | None = None,
        taken: int = 0,
        ordinary: bool = True,
    ) -> claiming.ClaimResult:
        """Write `finish` and claim as many due jobs as there are slots once they are
        written, less the `taken` ones claimed but not started yet."""
        with self._lock:
            slots = self.concurrency + self._ahead()
            free = slots - len(self._running) + len(finish) - taken
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self.claimed_count - taken)
        room = self._process_room(Counter(outcome.job.name for outcome in finish))
        return claiming.claim_batch(
            worker_id=self.worker_id,
            queues=self.queues,
            limit=max(free, 0),
            lock_lifetime=self.lock_lifetime,
            exclude_names={name for name, left in room.items() if left <= 0},
            using=self.using,
            room=room,
            limited=self._look_for_limited() if limited is None else limited,
            finish=finish,
            ordinary=ordinary,
        )

    def _ahead(self) -> int:
        """How many jobs to claim beyond the free threads (self._lock held): CLAIM_AHEAD
        while the runs written last were quick and every run not over yet is young; else 0.

        The jobs claimed ahead wait in the pool's queue for the next free thread, holding
        their locks (the heartbeat extends them), and their runs start at the claim. With
        no-op jobs a pass then carries 40 jobs instead of 10 (see docs/performance.md)."""
        if not self.claim_ahead or not self._quick:
            return 0
        now = time.monotonic()
        for entry in self._running.values():
            if entry.outcome is None and now - entry.started >= QUICK_RUN:
                return 0  # a long run: a job claimed now might wait behind it
        return self.claim_ahead

    def _hand_back_waiting(self) -> float | None:
        """Hand back the jobs claimed ahead that still wait for a thread once every thread
        runs a job that has turned out long (QUICK_RUN): another worker may be free.

        Returns the seconds until that may be so, or None when no job waits behind a full
        set of threads. A job handed back is due at once, its attempt not counted and its
        run row deleted: it never started."""
        pool = self._pool
        if pool is None or not pool.waiting():
            return None
        now = time.monotonic()
        with self._lock:
            begun = [
                entry.begun
                for entry in self._running.values()
                if entry.begun is not None and entry.outcome is None
            ]
        if len(begun) < self.concurrency:
            return None  # a thread is free, or about to be: the waiting jobs start now
        youngest = max(begun)
        if now - youngest < QUICK_RUN:
            return youngest + QUICK_RUN - now
        waiting = pool.withdraw()
        with self._lock:
            for entry in waiting:
                # Out of the heartbeat's hands before the release clears its lock token: a
                # beat that still extends it does not report it lost (beat()).
                self._running.pop(entry.key, None)
        self._quick = False
        for entry in waiting:
            self.claimed_count -= 1
            try:
                claiming.release(entry.job, entry.run, reason="", discard_run=True)
            except Exception:
                logger.exception("Could not hand job %s back; its lock will expire.", entry.job)
        if waiting:
            logger.info(
                "Worker %s: every thread runs a long job; %d jobs claimed ahead were handed "
                "back for other workers.",
                self.worker_id,
                len(waiting),
            )
        return None

    def _start(self, result: claiming.ClaimResult) -> list[Job]:
        """Hand the claimed jobs to the threads."""
        claimed = result.claimed
        if result.looked:
            self._limited_look_at = time.monotonic() + self.poll_interval
        if result.found_limited:
            self._limited_seen_at = time.monotonic()
        # A limited job held back by its rate limit may start then: sleep no longer.
        self._limited_at = None if result.retry_in is None else time.monotonic() + result.retry_in
        started = []
        shortest = self.lock_lifetime
        for job, run in claimed:
            if self._over_limit(job):
                # The batch held more of this name than its process_concurrency allows: hand
                # it back.
                claiming.release(job, run, reason="", discard_run=True)
                continue
            self.claimed_count += 1
            started.append(job)
            entry = Running(job, run, lock_lifetime=self._lifetime(job), isolation=self.isolation)
            shortest = min(shortest, entry.lock_lifetime)
            with self._lock:
                self._running[entry.key] = entry
                in_flight = len(self._running)
            assert self._pool is not None
            self._pool.submit(entry, in_flight)
        if shortest < self.lock_lifetime:
            self._beat_wake.set()  # the heartbeat shortens its period for this lock
        if started:
            # Let a pool thread take the GIL and start the job now: otherwise it waits until
            # this thread has built its next claim and blocks on the database (W2 latency).
            time.sleep(HAND_OFF_PAUSE)
        return started

    def _write_outcomes(self) -> None:
        """Write the runs that ended since the last pass, in one transaction, and free slots."""
        self._outbox.write(self._written)

    def _written(self, entries: list[Running]) -> None:
        if entries:
            self._quick = all(
                entry.ended is not None and entry.ended - entry.started < QUICK_RUN
                for entry in entries
            )
        with self._lock:
            for entry in entries:
                self._running.pop(entry.key, None)
        for entry in entries:
            if entry.recorded is not None:
                entry.recorded.set()
        self._tally.add(entries)

    def _record_outcome(self, entry: Running, outcome: claiming.Outcome, signal: Signal) -> None:
        """Hand an ended run to the claim loop; wait for it to be written if `signal` has
        receivers, so they see the job's new state."""
        entry.outcome = outcome
        entry.ended = time.monotonic()
        if signal.receivers and signal.has_listeners(Job):
            entry.recorded = threading.Event()  # before the claim loop can write the run
        self._outbox.put(entry)
        self._wake.set()
        if entry.recorded is not None:
            entry.recorded.wait()

    def _over_limit(self, job: Job) -> bool:
        definition = registry.get(job.name)
        if not definition or not definition.process_concurrency:
            return False
        return self._running_by_name().get(job.name, 0) >= definition.process_concurrency

    def _lifetime(self, job: Job) -> float:
        definition = registry.get(job.name)
        if definition and definition.lock_lifetime:
            return definition.lock_lifetime.total_seconds()
        return self.lock_lifetime

    def _sleep_time(self, busy: int, since: float) -> float:
        """Sleep until the earliest due job we know of, but no longer than the poll interval.

        `since` is the monotonic time the last claim began: a job that came due after it is
        due now. Both times are read from the database's clock in one query.
        """
        if busy >= self.concurrency:
            return self.poll_interval
        limit = self.poll_interval
        if self._limited_at is not None:
            limit = min(limit, max(0.0, self._limited_at - time.monotonic()))
        lookback = time.monotonic() - since + DB_CLOCK_RESOLUTION
        try:
            row = (
                Job.objects.using(self.using)
                .scheduled()
                .unpaused()
                # A job due within the clock's resolution before the claim may not have been
                # due by the database's clock yet: still count it as coming.
                .filter(enabled=True, next_run_at__gt=db_now_plus(-lookback))
                .filter(**({"queue__in": self.queues} if self.queues else {}))
                .annotate(db_now=DbNow())
                .order_by("next_run_at")
                .values_list("next_run_at", "db_now")
                .first()
            )
        except DatabaseError:
            return limit
        if row is None:
            return limit
        due_at, db_now = row
        assert due_at is not None  # filtered on next_run_at above
        wait = (due_at - db_now).total_seconds() + DB_CLOCK_RESOLUTION
        return max(0.0, min(limit, wait))

    # Heartbeat (its own thread and database connection)

    def _beat_period(self) -> float:
        """A third of the shortest lock this worker holds (or of its own lock lifetime)."""
        with self._lock:
            lifetimes = [entry.lock_lifetime for entry in self._running.values()]
        shortest = min([self.lock_lifetime, *lifetimes])
        return min(self.heartbeat_interval, shortest / BEATS_PER_LOCK)

    def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        failures = 0
        while not self._stopping.is_set():
            if self._cancels_asked.is_set():
                self._cancels_asked.clear()
                try:
                    self.stop_cancelled()
                except Exception as exc:
                    logger.warning(
                        "Worker %s: cannot look for cancelled jobs (%s).", self.worker_id, exc
                    )
            wait = last + self._beat_period() - time.monotonic()
            if wait > 0:
                # Woken early when a job with a shorter lock starts: the period is recomputed.
                self._beat_wake.wait(wait)
                self._beat_wake.clear()
                continue
            started = time.monotonic()
            try:
                self.beat()
                failures = 0
                last = started
            except Exception as exc:
                failures += 1
                # The locks were not extended: beat again after the back-off (which keeps it
                # from a tight loop against a database that is down), not a period later.
                self._survive(exc, "beating the heartbeat", failures)
        connections.close_all()

    def beat(self) -> None:
        """Extend the locks of this worker's jobs, mark it alive, look for cancels.

        Nothing else runs on this thread: recovery (_recovery_loop()) may wait for a row or
        a loaded database, and must never hold back a lock's extension. Nor does the
        extension wait for the outcome writer, or for any row: a row another transaction
        holds is extended at the next beat (claiming.extend_locks())."""
        assert self._record is not None
        with self._lock:
            entries = list(self._running.values())
        by_lifetime: dict[float, list[Job]] = {}
        for entry in entries:
            by_lifetime.setdefault(entry.lock_lifetime, []).append(entry.job)
        sent = time.monotonic()
        lost: set[int] = set()
        held: set[int] = set()
        for lifetime, jobs in by_lifetime.items():
            extension = claiming.extend_locks(jobs, lifetime, using=self.using)
            lost |= extension.lost
            held |= extension.held
        with self._lock:
            # Written since the snapshot (its outcome, or handed back): its claim is over,
            # not lost. The outcome writer says so itself if its write found the lock gone.
            lost_entries = [
                entry
                for entry in entries
                if entry.job.pk in lost
                and entry.outcome is None
                and self._running.get(entry.key) is entry
            ]
        for entry in sorted(lost_entries, key=lambda entry: entry.job.pk):
            logger.warning(
                "Worker %s lost the lock of job %s; its result will be discarded.",
                self.worker_id,
                entry.job.pk,
            )
        not_extended = lost | held
        self._warn_if_late([entry for entry in entries if entry.job.pk not in not_extended], sent)
        if not claiming.heartbeat(self._record, self.expires_after):
            self._register()  # presumed dead after a long pause: come back
        self.stop_cancelled()

    def _warn_if_late(self, extended: list[Running], sent: float) -> None:
        """Warn when a lock was extended later than LATE_EXTENSION of its lifetime after it was
        last set: a little later and it lapses, and another worker may run its job."""
        late = max(extended, key=lambda e: (sent - e.lock_set) / e.lock_lifetime, default=None)
        gap = 0.0 if late is None else sent - late.lock_set
        for entry in extended:
            entry.lock_set = sent
        if late is not None and gap > LATE_EXTENSION * late.lock_lifetime:
            logger.warning(
                "Worker %s: the lock of job %s was extended %.2fs after it was last set, "
                "%.0f%% of its %gs lifetime; past 100%% it lapses and another worker may run "
                "the job. This worker or its database was held up (a loaded machine?); a "
                "longer lock lifetime leaves more room.",
                self.worker_id,
                late.job.pk,
                gap,
                100 * gap / late.lock_lifetime,
                late.lock_lifetime,
            )

    def _recovery_loop(self) -> None:
        """Take back the jobs of dead workers and delete their rows, once a heartbeat
        interval, on a thread and connection of their own (see beat())."""
        while self._retry_until_stopped(self.recover, "recovering the jobs of dead workers"):
            self._stopping.wait(self.heartbeat_interval)
        connections.close_all()

    def recover(self) -> None:
        """Recover the jobs whose lock expired; delete the rows of expired workers."""
        claiming.recover_stale(self.using)
        claiming.delete_dead_workers(using=self.using)

    def stop_cancelled(self) -> None:
        """Stop the jobs of this worker that someone cancelled while they ran."""
        with self._lock:
            entries = [e for e in self._running.values() if e.outcome is None]
        if not entries:
            return
        asked = claiming.cancel_requests([entry.job for entry in entries], using=self.using)
        for entry in entries:
            if entry.job.pk in asked and entry.stop.request(STOP_CANCEL, by=asked[entry.job.pk]):
                logger.info(
                    "Worker %s: stopping job %s, cancelled by %s.",
                    self.worker_id,
                    entry.job,
                    asked[entry.job.pk] or "someone",
                )

    def _retention_loop(self) -> None:
        # Spread the purges of workers that started together.
        wait = random.uniform(0, 60)
        while not self._stopping.wait(wait):
            self.apply_retention()
            wait = RETENTION_EVERY
        connections.close_all()

    def apply_retention(self) -> int:
        """Delete history older than DJANGO_JOBS["RETENTION"]; returns how many rows went."""
        from ..retention import parse_age, purge

        if settings.RETENTION is None:
            return 0
        try:
            result = purge(parse_age(settings.RETENTION), using=self.using, pause=0.05)
        except Exception as exc:
            logger.warning("Worker %s: purging old history failed (%s).", self.worker_id, exc)
            close_connection(self.using)
            return 0
        return result.jobs + result.runs

    # Stopping

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.grace_period
        while True:
            try:
                self._write_outcomes()
            except Exception as exc:
                logger.warning("Worker %s: cannot write outcomes (%s).", self.worker_id, exc)
                close_connection(self.using)
            with self._lock:
                left = list(self._running.values())
            if not left or time.monotonic() >= deadline:
                break
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
        self._stopping.set()
        self._beat_wake.set()
        if left and self._pool is not None:
            # Jobs claimed ahead may still wait in the pool's queue: none of them may start
            # once it is handed back below.
            self._pool.close()
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
                self._tally.handed_back += 1
                logger.warning("Released job %s: %s", entry.job, reason)
            except Exception:
                logger.exception("Could not release job %s; its lock will expire.", entry.job)
        try:
            WorkerRecord.objects.using(self.using).filter(worker_id=self.worker_id).delete()
        except Exception:
            logger.exception("Could not remove the row of worker %s.", self.worker_id)
        self._tally.stopped()
        if left:
            # Threads still inside a job cannot be interrupted; their jobs were handed back.
            logging.shutdown()
            os._exit(0)
        assert self._pool is not None
        self._pool.shutdown()


def close_connection(using: str) -> None:
    """Drop a broken connection so the next query opens a new one."""
    with contextlib.suppress(Exception):
        connections[using].close()
