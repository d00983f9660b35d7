"""Keeping claims alive and taking back those of dead workers: locks, heartbeats, recovery."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

from django.db import DatabaseError
from django.db.models import F

from ..db import DbNow, db_now_plus, write_transaction
from ..models import Job, JobRun, JobState, RunOutcome, Worker, new_run
from .outcomes import class_path, finished_fields, held_by, rescheduled_fields
from .sql import database_now

logger = logging.getLogger(__name__)


class Extension(NamedTuple):
    """What extend_locks() did: the ids whose lock was lost, and those another transaction
    held, left for the next beat (neither extended nor lost)."""

    lost: set[int]
    held: set[int]


def extend_locks(jobs: Iterable[Job], lock_lifetime: float, using: str = "default") -> Extension:
    """Push back the lock expiry of jobs this worker runs.

    It never waits for a row: one that another transaction holds (this worker's own outcome
    write, an admin action, a project's select_for_update()) is skipped (SKIP LOCKED) and
    left for the next beat, so one held row cannot hold back the locks of all the others,
    and two writers can never deadlock on them. SQLite has no row locks: there, a writer
    waits for the database as a whole, as every other statement does.
    """
    jobs = list(jobs)
    if not jobs:
        return Extension(set(), set())
    with write_transaction(using):
        # Locked by primary key alone: InnoDB locks every index record a plan reads, so a
        # plan through another index could take (or pass over) the rows of other jobs.
        # SQLite has no row locks (Django drops FOR UPDATE there): its transaction waits for
        # the one write lock, and every row is read.
        locked = {
            pk: (token, state)
            for pk, token, state in Job.objects.using(using)
            .filter(pk__in={job.pk for job in jobs})
            .select_for_update(skip_locked=True)
            .order_by("pk")
            .values_list("pk", "lock_token", "state")
        }
        kept = {
            (job.pk, job.lock_token)
            for job in jobs
            if locked.get(job.pk) == (job.lock_token, JobState.RUNNING)
        }
        if kept:
            Job.objects.using(using).filter(pk__in={pk for pk, _ in kept}).update(
                locked_until=db_now_plus(lock_lifetime)
            )
    # Match on the token too: after a long pause this worker may hold a row twice, under its
    # old claim (lost) and a new one. A row not locked is held by another transaction, or
    # lost: held if its committed row still names this claim.
    lost = {job.pk for job in jobs if job.pk in locked and (job.pk, job.lock_token) not in kept}
    absent = [job for job in jobs if job.pk not in locked]
    if not absent:
        return Extension(lost, set())
    still = set(
        Job.objects.using(using)
        .filter(held_by(absent), state=JobState.RUNNING)
        .values_list("pk", "lock_token")
    )
    held = {job.pk for job in absent if (job.pk, job.lock_token) in still}
    lost |= {job.pk for job in absent if job.pk not in held}
    return Extension(lost, held)


# The columns recovery reads: never the data or the result, which a bad row may hold in a
# form that cannot be decoded; one such row must not stop the recovery of all the others.
RECOVERY_FIELDS = (
    "pk",
    "name",
    "queue",
    "attempts",
    "max_attempts",
    "lock_token",
    "locked_by",
    "last_started_at",
    "schedule",
    "timezone",
    "next_run_at",
)


def cancel_requests(jobs: Iterable[Job], using: str = "default") -> dict[int, str]:
    """Of `jobs` (held by this worker), those someone asked to cancel: {id: who asked}."""
    held = held_by(jobs)
    if not held:
        return {}
    return dict(
        Job.objects.using(using)
        .filter(held, cancel_requested_at__isnull=False)
        .values_list("pk", "cancel_requested_by")
    )


def recover_stale(using: str = "default", limit: int = 100) -> int:
    """Take back running jobs whose lock expired: record the orphaned run, retry or finish them.

    Every time written is the database's. A row that cannot be read or written is failed on
    its own with the reason, and the others are recovered all the same.
    """
    recovered = 0
    stale = Job.objects.using(using).stale().order_by("locked_until")
    for pk, token in list(stale.values_list("pk", "lock_token")[:limit]):
        try:
            recovered += _recover_one(using, pk, token)
        except DatabaseError:
            raise  # the connection is gone: the caller reconnects and tries again later
        except Exception as exc:
            logger.exception("Could not recover job #%s; failing it.", pk)
            recovered += _fail_unreadable(using, pk, token, exc)
    return recovered


def _recover_one(using: str, pk: int, token: str | None) -> int:
    job = Job.objects.using(using).only(*RECOVERY_FIELDS).get(pk=pk)
    reason = (
        f"Worker {job.locked_by} stopped renewing its lock (it died or lost the database); "
        "the run was abandoned."
    )
    now = database_now(using)
    if job.attempts < job.max_attempts:
        fields = rescheduled_fields(DbNow(), now, finished=False)
    else:
        fields = finished_fields(job, state=JobState.FAILED, now=now)
    # A lost worker raised nothing: clear the class of an earlier failure (as the run's).
    fields.update(
        last_error=reason,
        last_error_class="",
        last_traceback="",
        failure_count=F("failure_count") + 1,
    )
    with write_transaction(using):
        touched = Job.objects.using(using).stale().filter(pk=pk, lock_token=token).update(**fields)
        if touched:
            orphaned = (
                JobRun.objects.using(using)
                .filter(job_id=pk, lock_token=token, outcome=RunOutcome.RUNNING)
                .update(outcome=RunOutcome.ORPHANED, finished_at=now, error=reason)
            )
            if not orphaned:
                # The worker died between its claim and writing the run row: record the
                # attempt anyway, so the history shows every attempt the job used.
                new_run(
                    job,
                    worker_id=job.locked_by or "",
                    lock_token=token or "",
                    started_at=job.last_started_at or now,
                    outcome=RunOutcome.ORPHANED,
                    finished_at=now,
                    error=reason,
                ).save(using=using)
    if touched:
        logger.warning("Recovered job %s from %s: %s", job, job.locked_by, reason)
    return touched


def _fail_unreadable(using: str, pk: int, token: str | None, exc: Exception) -> int:
    """Fail a stale row that recovery could not handle, with the reason, for good."""
    reason = (
        f"django_jobs could not recover this job after its worker was lost "
        f"({type(exc).__name__}: {str(exc)[:500]}); it was failed and will not run again."
    )
    with write_transaction(using):
        touched = (
            Job.objects.using(using)
            .stale()
            .filter(pk=pk, lock_token=token)
            .update(
                state=JobState.FAILED,
                next_run_at=None,
                unique_key=None,
                locked_by=None,
                lock_token=None,
                locked_until=None,
                last_error=reason,
                last_error_class=class_path(exc),
                last_finished_at=DbNow(),
                updated_at=DbNow(),
                failure_count=F("failure_count") + 1,
            )
        )
        JobRun.objects.using(using).filter(
            job_id=pk, lock_token=token, outcome=RunOutcome.RUNNING
        ).update(outcome=RunOutcome.ORPHANED, finished_at=DbNow(), error=reason)
    return touched


def heartbeat(worker: Worker, expires_after: float) -> bool:
    """Mark the worker alive until `expires_after` seconds from now (database clock); False
    if its row was deleted (it was presumed dead)."""
    return bool(
        Worker.objects.using(worker._state.db)
        .filter(pk=worker.pk)
        .update(last_heartbeat_at=DbNow(), expires_at=db_now_plus(expires_after))
    )


def delete_dead_workers(using: str = "default") -> int:
    """Delete the rows of workers whose own expiry has passed (database clock)."""
    deleted, _ = Worker.objects.using(using).dead().delete()
    return deleted
