"""The public API: schedule(), now(), schedule_many() and cancel()."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from .conf import settings
from .db import DbNow, write_transaction
from .exceptions import InvalidOption, JobNotFound, JobStateError
from .models import Job, JobState
from .notify import ask_to_stop
from .recurring import declared_keys
from .registry import registry
from .schedules import parse_when
from .states import allowed_states
from .validation import (
    ATTEMPTS,
    CANCELLED_BY_MAX_LENGTH,
    check_job_id,
    check_job_name,
    check_json,
    check_lock_key,
    check_priority,
    check_queue,
    check_text,
    check_unique_key,
    shown,
)

When = datetime | timedelta | str


def _job_fields(
    when: When,
    name: str,
    data: Any,
    *,
    priority: int | str | None,
    queue: str | None,
    max_attempts: int | None,
    lock_key: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The checked fields of a new job row; raises a JobsError for any value out of bounds.

    `now` is the instant "now" and relative times count from (default: the clock's now).
    """
    definition = registry[name]
    data = {} if data is None else data
    check_json(data)
    return {
        "lock_key": None if lock_key is None else check_lock_key(lock_key),
        "name": name,
        "data": data,
        "queue": definition.queue if queue is None else check_queue(queue),
        "priority": definition.priority if priority is None else check_priority(priority),
        "max_attempts": (
            definition.max_attempts
            if max_attempts is None
            else ATTEMPTS.check("max_attempts", max_attempts)
        ),
        "next_run_at": parse_when(when, now=timezone.now() if now is None else now),
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
    lock_key: str | None = None,
    using: str | None = None,
) -> Job:
    """Schedule the registered job `name` to run at `when` with JSON `data`.

    `when` is an aware datetime, a timedelta, "now", "in N seconds|minutes|hours|days|weeks",
    or an ISO 8601 string with an offset. Priority, queue and max_attempts default to the
    job definition's. With `unique_key`, scheduling is idempotent: while a job with that key
    is pending (scheduled or running), the existing job is returned and nothing is created.
    With `lock_key`, no two jobs holding the same key run at the same time anywhere in the
    cluster; jobs with other keys (or none) run beside them.
    Inside a transaction, the job becomes visible to workers when the transaction commits.
    """
    fields = _job_fields(
        when,
        name,
        data,
        priority=priority,
        queue=queue,
        max_attempts=max_attempts,
        lock_key=lock_key,
    )
    if unique_key is not None:
        check_unique_key(unique_key)
    db = using or settings.DATABASE
    job, _ = Job.objects.using(db).create_job(unique_key=unique_key, **fields)
    return job


def now(name: str, data: Any = None, **options: Any) -> Job:
    """Schedule the registered job `name` to run as soon as a worker is free."""
    return schedule("now", name, data, **options)


MANY_OPTIONS = ("priority", "queue", "max_attempts", "lock_key")  # per item of schedule_many()
_MANY_OPTIONS = frozenset(MANY_OPTIONS)


def schedule_many(
    jobs: Iterable[tuple[When, str, Any]], *, using: str | None = None, batch_size: int = 1000
) -> list[Job]:
    """Schedule many (when, name, data) jobs with one INSERT per batch; all are checked first.

    An item may carry a fourth element, a dict of options for that job: priority, queue,
    max_attempts and lock_key, as schedule() takes them.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidOption(f"Invalid batch_size={batch_size!r}. Use a whole number of 1 or more.")
    rows = []
    # One clock reading for the call: "now" and "in N minutes" count from when it started.
    started = timezone.now()
    for index, item in enumerate(jobs):
        if not isinstance(item, tuple | list) or len(item) not in (3, 4):
            raise InvalidOption(
                f"Item {index} of schedule_many() is {shown(item)}; each item is a "
                "(when, name, data) tuple, or (when, name, data, options)."
            )
        when, name, data = item[:3]
        options: Any = item[3] if len(item) == 4 else {}
        if not isinstance(options, dict) or not _MANY_OPTIONS.issuperset(options):
            raise InvalidOption(
                f"Item {index} of schedule_many() has the options {shown(options)}; use a "
                f"dict with some of {', '.join(MANY_OPTIONS)}."
            )
        fields = {option: options.get(option) for option in MANY_OPTIONS}
        rows.append(_job_fields(when, name, data, **fields, now=started))
    db = using or settings.DATABASE
    return Job.objects.using(db).create_jobs(rows, batch_size=batch_size)


def cancel(
    job: Job | int | None = None,
    *,
    unique_key: str | None = None,
    name: str | None = None,
    running: bool = False,
    by: str = "",
    using: str | None = None,
) -> int:
    """Delete jobs that are waiting to run; returns how many. Running jobs are left alone,
    unless `running=True`: then their workers are asked to stop them too (counted as well),
    and each run is recorded as cancelled, with `by` as who asked (docs/controls.md).

    Pass a job (or its id), a unique_key, or a name (every waiting job of that name). A
    recurring job the code declares is never cancelled, since the next worker start would add
    it again: by name or key it is skipped, by itself it raises JobStateError (disable it). A job
    passed by itself that is running (without running=True) or finished raises
    JobStateError; an id that no job has raises JobNotFound (a LookupError). An id is a whole
    number: a float, a string or bytes raise InvalidOption.
    """
    db = using or settings.DATABASE
    if not isinstance(running, bool):
        raise InvalidOption(f"Invalid running={shown(running)}. Use True or False.")
    check_text("by", by, CANCELLED_BY_MAX_LENGTH)
    if job is not None:
        if isinstance(job, Job):
            instance = job
        else:
            pk = check_job_id(job)
            try:
                instance = Job.objects.using(db).get(pk=pk)
            except Job.DoesNotExist:
                raise JobNotFound(
                    f"No job has the id {pk}, so nothing was cancelled; it may have finished "
                    "and been purged, or been cancelled already."
                ) from None
        try:
            instance.cancel()
        except JobStateError:
            if not running or instance.state != JobState.RUNNING:  # state read by cancel()
                raise
            instance.cancel_running(by)
        return 1
    if unique_key is None and name is None:
        raise JobStateError("cancel() needs a job, a unique_key or a name.")
    if unique_key is not None:
        check_unique_key(unique_key, reserved=True)
    if name is not None:
        check_job_name(name)
    # The states cancel starts from, in the one table (states.ACTIONS).
    cancellable = list(
        allowed_states("cancel", recurring=False) | allowed_states("cancel", recurring=True)
    )
    # A recurring job the code declares would come back at the next worker start: it stays.
    waiting = (
        Job.objects.using(db).filter(state__in=cancellable).exclude(unique_key__in=declared_keys())
    )
    if unique_key is not None:
        waiting = waiting.filter(unique_key=unique_key)
    if name is not None:
        waiting = waiting.filter(name=name)
    with write_transaction(db):
        ids = list(waiting.values_list("pk", flat=True))
        # See Job.cancel: flip the state first so a concurrent claim cannot take these rows.
        Job.objects.using(db).filter(pk__in=ids, state__in=cancellable).update(
            state=JobState.CANCELLED
        )
        cancelled = Job.objects.using(db).filter(pk__in=ids, state=JobState.CANCELLED)
        deleted = cancelled.only("pk").delete()
        stopping = 0
        if running:
            runs = Job.objects.using(db).filter(state__in=allowed_running_states())
            if unique_key is not None:
                runs = runs.filter(unique_key=unique_key)
            if name is not None:
                runs = runs.filter(name=name)
            stopping = runs.update(cancel_requested_at=DbNow(), cancel_requested_by=by)
            if stopping:
                ask_to_stop(db)
    return deleted[1].get(Job._meta.label, 0) + stopping


def allowed_running_states() -> list[str]:
    """The states cancel_running starts from (states.ACTIONS), one-off and recurring."""
    return list(
        allowed_states("cancel_running", recurring=False)
        | allowed_states("cancel_running", recurring=True)
    )
