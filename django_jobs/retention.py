"""History retention: delete finished jobs and old runs in small batches.

Used by `manage.py purgejobs` and, with DJANGO_JOBS["RETENTION"], by every worker once an hour.
Each batch is its own short transaction, so a purge of millions of rows never holds locks
that the claim or the admin would wait for.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from .claiming.sql import database_now
from .db import write_transaction
from .exceptions import JobsError
from .models import Job, JobRun, JobState, RunOutcome
from .registry import registry

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


def purgeable_runs(  # type: ignore[no-untyped-def]
    cutoff: datetime, using: str = "default", now: datetime | None = None
):
    """Runs that started before `cutoff` and are over (the index on started_at serves this),
    but for those a rate limit still counts (see counted_by_rate_limits; `now` is the
    database's time that `cutoff` was taken from)."""
    runs = (
        JobRun.objects.using(using)
        .filter(started_at__lt=cutoff)
        .exclude(outcome=RunOutcome.RUNNING)
    )
    counted = None if now is None else counted_by_rate_limits(now, cutoff)
    return runs if counted is None else runs.exclude(counted)


def counted_by_rate_limits(now: datetime, cutoff: datetime) -> Q | None:
    """The runs that a registered job's rate limit counts and `cutoff` would delete.

    A rate limit counts the starts of its name within its period from the run table
    (claiming/limits.py): a retention shorter than the period must keep those runs, or the
    limit lets more starts in. None when no rate limit reaches back past `cutoff`.
    """
    names_by_period: dict[float, list[str]] = defaultdict(list)
    for definition in registry:
        limit = definition.rate_limit
        if limit is not None and now - timedelta(seconds=limit.period) < cutoff:
            names_by_period[limit.period].append(definition.name)
    counted = None
    for period, names in sorted(names_by_period.items()):
        these = Q(job_name__in=names, started_at__gte=now - timedelta(seconds=period))
        counted = these if counted is None else counted | these
    return counted


def purge(
    older_than: timedelta,
    *,
    using: str = "default",
    batch_size: int = BATCH_SIZE,
    pause: float = 0.0,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete runs and finished one-off jobs older than `older_than`, batch by batch.

    Recurring definitions and jobs that are scheduled or running are never deleted, nor the
    runs that a rate limit still counts (counted_by_rate_limits). `pause`
    seconds between batches leave room for the workers on a busy database.
    """
    # The database's clock, as for every other time a worker acts on.
    now = database_now(using)
    cutoff = now - older_than
    result = PurgeResult()
    if dry_run:
        result.runs = purgeable_runs(cutoff, using, now).count()
        result.jobs = purgeable_jobs(cutoff, using).count()
        return result
    # Runs first: a job's runs are never newer than its finish, so few are left to unlink.
    while True:
        ids = list(purgeable_runs(cutoff, using, now).values_list("pk", flat=True)[:batch_size])
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
