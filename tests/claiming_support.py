"""Claiming in tests goes through the worker's own path: claim_and_start()."""

from __future__ import annotations

from typing import Any

from django_jobs.claiming import Failure, Outcome, claim_and_start, finish_many
from django_jobs.models import Job, JobRun

LOCK = 30.0  # seconds


def claim_jobs(worker_id: str = "w1", limit: int = 100, **options: Any) -> list[Job]:
    """Claim as a worker does (the run rows are written too); each job's run is `job.run`."""
    claimed = claim_and_start(
        worker_id=worker_id,
        queues=options.pop("queues", None),
        limit=limit,
        lock_lifetime=options.pop("lock_lifetime", LOCK),
        **options,
    )
    for job, run in claimed:
        job.run = run  # type: ignore[attr-defined]
    return [job for job, _ in claimed]


def finish(
    job: Job,
    run: JobRun | None,
    *,
    failure: Failure | None = None,
    result: Any = None,
    retry_delay: Any = None,
) -> bool:
    """Write one outcome as the worker's outbox does; False when the lock was lost."""
    outcome = Outcome(job, run, failure=failure, result=result, retry_delay=retry_delay)
    return finish_many([outcome], using=job._state.db or "default")[0]
