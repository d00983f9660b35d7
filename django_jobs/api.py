"""The public API: schedule(), now(), schedule_many() and cancel()."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import settings
from .exceptions import InvalidJobData, JobStateError
from .models import Job, JobState
from .registry import check_queue, parse_priority, registry
from .schedules import parse_when

When = datetime | timedelta | str


def check_json(value: Any, path: str = "data") -> None:
    """Refuse anything JSON cannot store, naming where it is."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobData(
                f"{path} is {value!r}, which JSON cannot store. Use a finite number or None."
            )
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJobData(
                    f"{path} has the key {key!r} of type {type(key).__name__}; JSON keys are "
                    f"strings. Use {str(key)!r} instead."
                )
            check_json(item, f"{path}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{path}[{index}]")
        return
    raise InvalidJobData(
        f"{path} is a {type(value).__name__} ({value!r:.60}), which is not JSON. Store a string, "
        "number, boolean, None, list or dict instead (e.g. value.isoformat() for a datetime, "
        "or the object's id)."
    )


def _job_fields(
    when: When,
    name: str,
    data: Any,
    *,
    priority: int | str | None,
    queue: str | None,
    max_attempts: int | None,
) -> dict[str, Any]:
    definition = registry[name]
    data = {} if data is None else data
    check_json(data)
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise InvalidJobData(f"Invalid max_attempts={max_attempts!r}. Use an integer of 1 or more.")
    return {
        "name": name,
        "data": data,
        "queue": check_queue(queue) if queue is not None else definition.queue,
        "priority": parse_priority(priority) if priority is not None else definition.priority,
        "max_attempts": max_attempts or definition.max_attempts,
        "next_run_at": parse_when(when, now=timezone.now()),
    }


def schedule(
    when: When,
    name: str,
    data: Any = None,
    *,
    priority: int | str | None = None,
    queue: str | None = None,
    unique_key: str | None = None,
    max_attempts: int | None = None,
    using: str | None = None,
) -> Job:
    """Schedule the registered job `name` to run at `when` with JSON `data`.

    `when` is an aware datetime, a timedelta, "now", "in N seconds|minutes|hours|days|weeks",
    or an ISO 8601 string with an offset. Priority, queue and max_attempts default to the
    job definition's. With `unique_key`, scheduling is idempotent: while a job with that key
    is pending (scheduled or running), the existing job is returned and nothing is created.
    Inside a transaction, the job becomes visible to workers when the transaction commits.
    """
    fields = _job_fields(
        when, name, data, priority=priority, queue=queue, max_attempts=max_attempts
    )
    db = using or settings.DATABASE
    job, _ = Job.objects.using(db).create_job(unique_key=unique_key, **fields)
    return job


def now(name: str, data: Any = None, **options: Any) -> Job:
    """Schedule the registered job `name` to run as soon as a worker is free."""
    return schedule("now", name, data, **options)


def schedule_many(
    jobs: Iterable[tuple[When, str, Any]], *, using: str | None = None, batch_size: int = 1000
) -> list[Job]:
    """Schedule many (when, name, data) jobs with one INSERT per batch; all are checked first."""
    rows = [
        Job(**_job_fields(when, name, data, priority=None, queue=None, max_attempts=None))
        for when, name, data in jobs
    ]
    db = using or settings.DATABASE
    return Job.objects.using(db).create_jobs(rows, batch_size=batch_size)


def cancel(
    job: Job | int | None = None,
    *,
    unique_key: str | None = None,
    name: str | None = None,
    using: str | None = None,
) -> int:
    """Delete jobs that are waiting to run; returns how many. Running jobs are left alone.

    Pass a job (or its id), a unique_key, or a name (every waiting job of that name). A job
    passed by itself that is running or finished raises JobStateError.
    """
    db = using or settings.DATABASE
    if job is not None:
        instance = job if isinstance(job, Job) else Job.objects.using(db).get(pk=job)
        instance.cancel()
        return 1
    if unique_key is None and name is None:
        raise JobStateError("cancel() needs a job, a unique_key or a name.")
    waiting = Job.objects.using(db).filter(state=JobState.SCHEDULED)
    if unique_key is not None:
        waiting = waiting.filter(unique_key=unique_key)
    if name is not None:
        waiting = waiting.filter(name=name)
    with transaction.atomic(using=db):
        ids = list(waiting.values_list("pk", flat=True))
        # See Job.cancel: flip the state first so a concurrent claim cannot take these rows.
        Job.objects.using(db).filter(pk__in=ids, state=JobState.SCHEDULED).update(
            state=JobState.CANCELLED
        )
        deleted = Job.objects.using(db).filter(pk__in=ids, state=JobState.CANCELLED).delete()
    return deleted[1].get(Job._meta.label, 0)
