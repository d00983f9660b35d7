"""History retention: delete finished jobs and old runs in small batches.

Used by `manage.py purgejobs` and, with DJANGO_JOBS["RETENTION"], by every worker once an hour.
Each batch is its own short transaction, so a purge of millions of rows never holds locks
that the claim or the admin would wait for.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from .claiming.sql import database_now
from .db import write_transaction
from .exceptions import JobsError
from .models import Job, JobRun, JobState, RunOutcome

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000  # rows deleted per transaction
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class InvalidAge(JobsError, ValueError):
    """An age such as "30d" that cannot be read."""


def parse_age(value: str | float | timedelta) -> timedelta:
    """Read an age: "30d", "12h", "90m", "45s", "2w", a timedelta, or a number of seconds."""
    if isinstance(value, timedelta):
        age = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        age = timedelta(seconds=value)
    elif isinstance(value, str) and (match := _AGE.match(value)):
        age = timedelta(**{UNITS[match.group(2)]: float(match.group(1))})
    else:
        raise InvalidAge(
            f"Invalid age {value!r}. Use a number and a unit: s, m, h, d or w "
            '(e.g. "30d" or "12h"), a timedelta, or a number of seconds.'
        )
    if age <= timedelta(0):
        raise InvalidAge(f'Invalid age {value!r}. Use an age above zero, such as "30d".')
    return age


@dataclass
class PurgeResult:
    jobs: int = 0
    runs: int = 0


def purgeable_jobs(cutoff: datetime, using: str = "default"):  # type: ignore[no-untyped-def]
    """One-off jobs that finished (succeeded, failed for good, cancelled) before `cutoff`."""
    return Job.objects.using(using).filter(
        schedule="", state__in=FINISHED_STATES, last_finished_at__lt=cutoff
    )


def purgeable_runs(cutoff: datetime, using: str = "default"):  # type: ignore[no-untyped-def]
    """Runs that started before `cutoff` and are over (the index on started_at serves this)."""
    return (
        JobRun.objects.using(using)
        .filter(started_at__lt=cutoff)
        .exclude(outcome=RunOutcome.RUNNING)
    )


def purge(
    older_than: timedelta,
    *,
    using: str = "default",
    batch_size: int = BATCH_SIZE,
    pause: float = 0.0,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete runs and finished one-off jobs older than `older_than`, batch by batch.

    Recurring definitions and jobs that are scheduled or running are never deleted. `pause`
    seconds between batches leave room for the workers on a busy database.
    """
    # The database's clock, as for every other time a worker acts on.
    cutoff = database_now(using) - older_than
    result = PurgeResult()
    if dry_run:
        result.runs = purgeable_runs(cutoff, using).count()
        result.jobs = purgeable_jobs(cutoff, using).count()
        return result
    # Runs first: a job's runs are never newer than its finish, so few are left to unlink.
    while True:
        ids = list(purgeable_runs(cutoff, using).values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        with write_transaction(using):
            deleted, _ = JobRun.objects.using(using).filter(pk__in=ids).delete()
        result.runs += deleted
        if pause:
            time.sleep(pause)
    while True:
        ids = list(purgeable_jobs(cutoff, using).values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        with write_transaction(using):
            # Re-check the state: the admin may have run one of them again meanwhile.
            doomed = purgeable_jobs(cutoff, using).filter(pk__in=ids)
            JobRun.objects.using(using).filter(job_id__in=doomed.values("pk")).delete()
            _, per_model = doomed.delete()
        result.jobs += per_model.get(Job._meta.label, 0)
        if pause:
            time.sleep(pause)
    # The overview's per-minute counts of those runs go with them (stats.py).
    from .stats import purge_minutes

    purge_minutes(cutoff, using)
    if result.jobs or result.runs:
        logger.info(
            "Purged %d job(s) and %d run(s) finished before %s.",
            result.jobs,
            result.runs,
            cutoff.isoformat(timespec="seconds"),
        )
    return result
