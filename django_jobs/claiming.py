"""The worker's writes: claim due jobs, extend locks, finish, release and recover them.

Every vendor-specific statement of the app lives here. PostgreSQL and MySQL/MariaDB claim with
SELECT ... FOR UPDATE SKIP LOCKED; SQLite (and later MongoDB) with a compare-and-set UPDATE whose
WHERE clause repeats the claimable condition. Every write after the claim matches the claim's
lock token, so a worker that lost its lock cannot overwrite the state a newer owner wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import (
    DbNow,
    Job,
    JobQuerySet,
    JobRun,
    JobState,
    RunOutcome,
    Worker,
    db_now_plus,
    new_token,
)
from .schedules import get_timezone, next_run, parse_schedule

logger = logging.getLogger(__name__)

CLAIM_ORDER = ("-priority", "next_run_at", "pk")


def claimable(
    using: str, queues: Sequence[str] | None, exclude_names: Iterable[str]
) -> JobQuerySet:
    qs = Job.objects.using(using).due()
    if queues:
        qs = qs.filter(queue__in=list(queues))
    exclude = list(exclude_names)
    if exclude:
        qs = qs.exclude(name__in=exclude)
    return qs.order_by(*CLAIM_ORDER)


def _lock_fields(worker_id: str, token: str, lock_lifetime: float) -> dict[str, Any]:
    return {
        "state": JobState.RUNNING,
        "locked_by": worker_id,
        "lock_token": token,
        "locked_until": db_now_plus(lock_lifetime),
        "attempts": F("attempts") + 1,
        "last_started_at": DbNow(),
        "progress": None,
        "progress_message": "",
        "updated_at": DbNow(),
    }


def claim(
    *,
    worker_id: str,
    queues: Sequence[str] | None,
    limit: int,
    lock_lifetime: float,
    exclude_names: Iterable[str] = (),
    using: str = "default",
) -> list[Job]:
    """Lock up to `limit` due jobs for this worker, highest priority then earliest due first."""
    if limit <= 0:
        return []
    token = new_token()
    connection = connections[using]
    candidates = claimable(using, queues, exclude_names)
    if connection.features.has_select_for_update_skip_locked:
        # All selected rows stay locked until commit, so keep this transaction short.
        with transaction.atomic(using=using):
            ids = list(
                candidates.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit]
            )
            if not ids:
                return []
            Job.objects.using(using).filter(pk__in=ids).update(
                **_lock_fields(worker_id, token, lock_lifetime)
            )
    else:
        # Compare-and-set: a row another worker claimed since the SELECT no longer matches
        # the claimable condition repeated in the UPDATE, so it is skipped, not stolen.
        ids = list(candidates.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        touched = (
            Job.objects.using(using)
            .due()
            .filter(pk__in=ids)
            .update(**_lock_fields(worker_id, token, lock_lifetime))
        )
        if not touched:
            return []
    jobs = list(Job.objects.using(using).filter(lock_token=token).order_by(*CLAIM_ORDER))
    logger.debug("%s claimed %d job(s)", worker_id, len(jobs))
    return jobs


def extend_locks(jobs: Iterable[Job], lock_lifetime: float, using: str = "default") -> set[int]:
    """Push back the lock expiry of jobs this worker runs; returns the ids whose lock was lost."""
    jobs = list(jobs)
    if not jobs:
        return set()
    owned = Q()
    for job in jobs:
        owned |= Q(pk=job.pk, lock_token=job.lock_token)
    rows = Job.objects.using(using).filter(owned, state=JobState.RUNNING)
    touched = rows.update(locked_until=db_now_plus(lock_lifetime))
    if touched == len(jobs):
        return set()
    kept = set(rows.values_list("pk", flat=True))
    return {job.pk for job in jobs} - kept


def start_run(job: Job, worker_id: str) -> JobRun:
    """Record the attempt that is starting now."""
    return JobRun.objects.using(job._state.db).create(
        job=job,
        job_name=job.name,
        attempt=job.attempts,
        worker_id=worker_id,
        lock_token=job.lock_token or "",
    )


def next_slot(job: Job, now: datetime) -> datetime:
    """The next run of a recurring job after the run that was due at its next_run_at."""
    return next_run(
        parse_schedule(job.schedule),
        scheduled_at=job.next_run_at,
        now=now,
        tz=get_timezone(job.timezone),
    )


def _finished_fields(job: Job, *, succeeded: bool, now: datetime) -> dict[str, Any]:
    """Fields that end a run for good: a one-off job is done, a recurring one gets its next slot."""
    fields: dict[str, Any] = {
        "locked_by": None,
        "lock_token": None,
        "locked_until": None,
        "last_finished_at": now,
        "updated_at": now,
    }
    if job.recurring:
        fields.update(state=JobState.SCHEDULED, next_run_at=next_slot(job, now), attempts=0)
    else:
        fields.update(
            state=JobState.SUCCEEDED if succeeded else JobState.FAILED,
            next_run_at=None,
            unique_key=None,  # the key is held only while the job is pending
        )
    return fields


@dataclass
class Failure:
    """What went wrong in a run, for the job row and its history."""

    error: str
    traceback: str = ""
    retry: bool = True  # False for failures a retry cannot fix (an unknown job name)


def finish(
    job: Job,
    run: JobRun | None,
    *,
    failure: Failure | None = None,
    result: Any = None,
    retry_delay: Any = None,
) -> bool:
    """Write the outcome of a run; False when the lock was lost and nothing was written."""
    using = job._state.db or "default"
    now = timezone.now()
    if failure is None:
        fields = _finished_fields(job, succeeded=True, now=now)
        fields.update(
            result=result,
            last_error="",
            last_traceback="",
            progress=1.0 if job.progress is not None else None,
        )
        outcome = RunOutcome.SUCCEEDED
    else:
        if failure.retry and job.attempts < job.max_attempts and retry_delay is not None:
            fields = {
                "state": JobState.SCHEDULED,
                "next_run_at": now + retry_delay,
                "locked_by": None,
                "lock_token": None,
                "locked_until": None,
                "last_finished_at": now,
                "updated_at": now,
            }
            if job.recurring:
                # A retry never pushes a recurring job past its next regular slot.
                fields["next_run_at"] = min(fields["next_run_at"], next_slot(job, now))
        else:
            fields = _finished_fields(job, succeeded=False, now=now)
        fields.update(
            last_error=failure.error[:10000],
            last_traceback=failure.traceback,
            failure_count=F("failure_count") + 1,
        )
        outcome = RunOutcome.FAILED
    with transaction.atomic(using=using):
        touched = (
            Job.objects.using(using)
            .filter(pk=job.pk, lock_token=job.lock_token, state=JobState.RUNNING)
            .update(**fields)
        )
        if run is not None:
            JobRun.objects.using(using).filter(pk=run.pk, outcome=RunOutcome.RUNNING).update(
                outcome=outcome,
                finished_at=now,
                error=failure.error[:10000] if failure else "",
                traceback=failure.traceback if failure else "",
            )
    if not touched:
        logger.warning(
            "Job %s lost its lock before it finished (another worker recovered it); "
            "its outcome was not written.",
            job,
        )
    return bool(touched)


def release(job: Job, run: JobRun | None, *, reason: str) -> bool:
    """Hand a claimed job back, due at once, without counting the attempt (a worker stopping)."""
    using = job._state.db or "default"
    now = timezone.now()
    with transaction.atomic(using=using):
        touched = (
            Job.objects.using(using)
            .filter(pk=job.pk, lock_token=job.lock_token, state=JobState.RUNNING)
            .update(
                state=JobState.SCHEDULED,
                locked_by=None,
                lock_token=None,
                locked_until=None,
                attempts=F("attempts") - 1,
                updated_at=now,
            )
        )
        if run is not None:
            JobRun.objects.using(using).filter(pk=run.pk, outcome=RunOutcome.RUNNING).update(
                outcome=RunOutcome.INTERRUPTED, finished_at=now, error=reason
            )
    return bool(touched)


def recover_stale(using: str = "default", limit: int = 100) -> int:
    """Take back running jobs whose lock expired: record the orphaned run, retry or finish them."""
    recovered = 0
    now = timezone.now()
    for job in Job.objects.using(using).stale().order_by("locked_until")[:limit]:
        reason = (
            f"Worker {job.locked_by} stopped renewing its lock (it died or lost the database); "
            "the run was abandoned."
        )
        if job.attempts < job.max_attempts:
            fields: dict[str, Any] = {
                "state": JobState.SCHEDULED,
                "next_run_at": DbNow(),
                "locked_by": None,
                "lock_token": None,
                "locked_until": None,
                "updated_at": now,
            }
        else:
            fields = _finished_fields(job, succeeded=False, now=now)
        fields.update(last_error=reason, last_traceback="", failure_count=F("failure_count") + 1)
        with transaction.atomic(using=using):
            touched = (
                Job.objects.using(using)
                .stale()
                .filter(pk=job.pk, lock_token=job.lock_token)
                .update(**fields)
            )
            if touched:
                JobRun.objects.using(using).filter(
                    job_id=job.pk, lock_token=job.lock_token, outcome=RunOutcome.RUNNING
                ).update(outcome=RunOutcome.ORPHANED, finished_at=now, error=reason)
        if touched:
            logger.warning("Recovered job %s from %s: %s", job, job.locked_by, reason)
            recovered += touched
    return recovered


def heartbeat(worker: Worker) -> bool:
    """Mark the worker alive; False if its row was deleted (it was presumed dead)."""
    return bool(
        Worker.objects.using(worker._state.db)
        .filter(pk=worker.pk)
        .update(last_heartbeat_at=DbNow())
    )


def delete_dead_workers(stale_after: float, using: str = "default") -> int:
    deleted, _ = Worker.objects.using(using).dead(stale_after).delete()
    return deleted
