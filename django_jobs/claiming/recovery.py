"""Keeping claims alive and taking back those of dead workers: locks, heartbeats, recovery."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import DbNow, Job, JobRun, JobState, RunOutcome, Worker, db_now_plus
from .outcomes import finished_fields, held_by, rescheduled_fields

logger = logging.getLogger(__name__)


def extend_locks(jobs: Iterable[Job], lock_lifetime: float, using: str = "default") -> set[int]:
    """Push back the lock expiry of jobs this worker runs; returns the ids whose lock was lost."""
    jobs = list(jobs)
    if not jobs:
        return set()
    rows = Job.objects.using(using).filter(held_by(jobs), state=JobState.RUNNING)
    touched = rows.update(locked_until=db_now_plus(lock_lifetime))
    if touched == len(jobs):
        return set()
    # Match on the token too: after a long pause this worker may hold a row twice, under its
    # old claim (lost) and a new one.
    kept = set(rows.values_list("pk", "lock_token"))
    return {job.pk for job in jobs if (job.pk, job.lock_token) not in kept}


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
            fields = rescheduled_fields(DbNow(), now, finished=False)
        else:
            fields = finished_fields(job, succeeded=False, now=now)
        # A lost worker raised nothing: clear the class of an earlier failure (as the run's).
        fields.update(
            last_error=reason,
            last_error_class="",
            last_traceback="",
            failure_count=F("failure_count") + 1,
        )
        with transaction.atomic(using=using):
            touched = (
                Job.objects.using(using)
                .stale()
                .filter(pk=job.pk, lock_token=job.lock_token)
                .update(**fields)
            )
            if touched:
                orphaned = (
                    JobRun.objects.using(using)
                    .filter(job_id=job.pk, lock_token=job.lock_token, outcome=RunOutcome.RUNNING)
                    .update(outcome=RunOutcome.ORPHANED, finished_at=now, error=reason)
                )
                if not orphaned:
                    # The worker died between its claim and writing the run row: record the
                    # attempt anyway, so the history shows every attempt the job used.
                    JobRun.objects.using(using).create(
                        job_id=job.pk,
                        job_name=job.name,
                        attempt=job.attempts,
                        outcome=RunOutcome.ORPHANED,
                        worker_id=job.locked_by or "",
                        lock_token=job.lock_token or "",
                        started_at=job.last_started_at or now,
                        finished_at=now,
                        error=reason,
                    )
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
