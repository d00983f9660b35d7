"""The end of a run: write outcomes (one or many at once), or hand a claimed job back."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import F, Model, Q

from ..db import DbNow, write_transaction
from ..models import Job, JobRun, JobState, RunOutcome
from ..notify import wake_workers
from ..recurring import next_slot
from .sql import (
    database_now,
    fetch_all,
    qualified_column,
    unnest_update,
    update_each,
)

logger = logging.getLogger(__name__)


def _unlocked_fields(now: datetime, *, finished: bool) -> dict[str, Any]:
    """Fields that drop a claim's lock; with `finished`, the time its run ended too."""
    fields: dict[str, Any] = {"locked_by": None, "lock_token": None, "locked_until": None}
    if finished:
        fields["last_finished_at"] = now
    fields["updated_at"] = now
    return fields


def rescheduled_fields(next_run_at: Any, now: datetime, *, finished: bool) -> dict[str, Any]:
    """Fields that drop a claim's lock and make the job due again at `next_run_at`."""
    return {
        "state": JobState.SCHEDULED,
        "next_run_at": next_run_at,
        **_unlocked_fields(now, finished=finished),
    }


def finished_fields(job: Job, *, state: JobState, now: datetime) -> dict[str, Any]:
    """Fields that end a run for good: a one-off job takes `state` (succeeded, failed or
    cancelled), a recurring one gets its next slot."""
    fields = _unlocked_fields(now, finished=True)
    if job.recurring:
        fields.update(state=JobState.SCHEDULED, next_run_at=next_slot(job, now), attempts=0)
    else:
        fields.update(
            state=state,
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
    error_class: str = ""  # import path of the exception class, e.g. "builtins.ValueError"
    # FAILED, TIMED_OUT (retried like a failure) or CANCELLED (never retried; a one-off
    # job ends cancelled, a recurring one waits for its next slot).
    outcome: RunOutcome = RunOutcome.FAILED


@dataclass
class Outcome:
    """The end of one run, written with others in one batch by finish_many()."""

    job: Job
    run: JobRun | None
    failure: Failure | None = None
    result: Any = None
    retry_delay: Any = None  # a timedelta: retry after it, within the job's attempts
    # When the run ended, by the database's clock: the worker derives it from the claim's
    # database time plus the run's monotonic duration; None: read from the database.
    finished_at: datetime | None = None


def class_path(exc: BaseException) -> str:
    """The import path of an exception's class, as Django's tasks framework records it."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _outcome_fields(outcome: Outcome) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields to write on the job row and on its run row."""
    job, failure, now = outcome.job, outcome.failure, outcome.finished_at
    assert now is not None  # finish_many() fills it in
    if failure is None:
        fields = finished_fields(job, state=JobState.SUCCEEDED, now=now)
        fields.update(
            result=outcome.result,
            last_error="",
            last_error_class="",
            last_traceback="",
            progress=1.0 if job.progress is not None else None,
        )
        run_outcome = RunOutcome.SUCCEEDED
    else:
        retry_delay = outcome.retry_delay
        cancelled = failure.outcome == RunOutcome.CANCELLED
        retry = failure.retry and not cancelled and retry_delay is not None
        if retry and job.attempts < job.max_attempts:
            fields = rescheduled_fields(now + retry_delay, now, finished=True)
            if job.recurring:
                # A retry never pushes a recurring job past its next regular slot.
                fields["next_run_at"] = min(fields["next_run_at"], next_slot(job, now))
        else:
            final = JobState.CANCELLED if cancelled else JobState.FAILED
            fields = finished_fields(job, state=final, now=now)
        fields.update(
            last_error=failure.error[:10000],
            last_error_class=failure.error_class[:255],
            last_traceback=failure.traceback,
            failure_count=F("failure_count") + 1,
        )
        run_outcome = failure.outcome
    run_fields = {
        "outcome": run_outcome,
        "finished_at": now,
        "error": failure.error[:10000] if failure else "",
        "error_class": failure.error_class[:255] if failure else "",
        "traceback": failure.traceback if failure else "",
    }
    return fields, run_fields


def held_by(jobs: Iterable[Job]) -> Q:
    """The rows of `jobs` that their claims still hold (the same id and lock token)."""
    owned = Q()
    for job in jobs:
        owned |= Q(pk=job.pk, lock_token=job.lock_token)
    return owned


def _refresh_schedules(outcomes: Sequence[Outcome], using: str) -> None:
    """Give recurring jobs the schedule their row has now, for computing the next slot."""
    recurring = {o.job.pk: o.job for o in outcomes if o.job.recurring}
    if not recurring:
        return
    # A deploy's sync or the admin may have changed the schedule while the job ran: the
    # next slot follows the row's schedule now, not the one it was claimed with.
    owned = held_by(recurring.values())
    rows = Job.objects.using(using).filter(owned).values_list("pk", "schedule", "timezone")
    for pk, schedule, tz_name in rows:
        if schedule:
            recurring[pk].schedule, recurring[pk].timezone = schedule, tz_name


def finish_many(outcomes: Sequence[Outcome], using: str = "default") -> list[bool]:
    """Write the outcomes of many runs in one transaction; False for each whose lock was lost.

    Rows that write the same fields share one statement sent once for all of them, so a
    batch of finished jobs costs a round trip or two, not a few per job. Each row still
    matches its own claim's lock token.
    """
    if not outcomes:
        return []
    finishing = Finishing.of(outcomes, using)
    if finishing is not None:
        return finishing.done(fetch_all(connections[using], finishing.sql, finishing.params))
    planned = _planned(outcomes, using)
    try:
        written = _write_planned(planned, using, recheck=False)
    except _LockLost:
        # Rare: another worker took over some of these jobs. Rolled back, then written again
        # with the rows still held read first, under the same write lock: the update alone
        # cannot tell which of its rows matched.
        written = _write_planned(planned, using, recheck=True)
    _warn_lost(outcomes, written)
    _show_written(planned, written)
    return written


class _LockLost(Exception):
    """Fewer job rows matched their claims than outcomes were written (finish_many())."""


def _write_planned(planned: list[Planned], using: str, *, recheck: bool) -> list[bool]:
    """Write `planned` in one transaction (finish_many() off PostgreSQL); which were written.

    Without `recheck`, every job row must match its claim, else nothing is written and
    _LockLost is raised. With it, the rows still held are read first (locked where the
    database has row locks; SQLite's transaction holds its one write lock already) and only
    those are written.
    """
    with write_transaction(using):
        written = [True] * len(planned)
        if recheck:
            jobs = [outcome.job for outcome, _, _ in planned]
            still = Job.objects.using(using).filter(held_by(jobs), state=JobState.RUNNING)
            held = set(still.select_for_update().values_list("pk", "lock_token"))
            written = [(job.pk, job.lock_token) in held for job in jobs]
        for indexes in _groups(planned).values():
            mine = [i for i in indexes if written[i]]
            if not mine:
                continue
            rows = _job_rows(planned, mine)
            where = {"id": None, "lock_token": None, "state": JobState.RUNNING.value}
            if update_each(Job, rows, where, using) != len(mine) and not recheck:
                raise _LockLost  # rolls this transaction back
        run_rows = [(fields, [o.run.pk]) for o, _, fields in planned if o.run is not None]
        if run_rows:
            where = {"id": None, "outcome": RunOutcome.RUNNING.value}
            update_each(JobRun, run_rows, where, using)
    return written


@dataclass
class Finishing:
    """finish_many() on PostgreSQL in two halves: its one statement, which the claim loop
    sends in the same transaction as its next claim (claim_batch(finish=...)), and done(),
    which reads the statement's rows once the database answered."""

    outcomes: Sequence[Outcome]
    planned: list[Planned]
    sql: str
    params: list[Any]

    @classmethod
    def of(cls, outcomes: Sequence[Outcome], using: str) -> Finishing | None:
        """The statement that writes `outcomes` (None off PostgreSQL, where it is several)."""
        if not outcomes or not rides_with_claim(using):
            return None
        planned = _planned(outcomes, using)
        sql, params = _finish_postgresql(planned, _groups(planned), connections[using])
        return cls(outcomes, planned, sql, params)

    def done(self, rows: Iterable[Sequence[Any]]) -> list[bool]:
        """Which outcomes were written (the statement returns their jobs' ids)."""
        kept = {row[0] for row in rows}
        written = [o.job.pk in kept for o in self.outcomes]
        _warn_lost(self.outcomes, written)
        _show_written(self.planned, written)
        return written


def rides_with_claim(using: str) -> bool:
    """Whether outcomes can be written in the claim's round trip (PostgreSQL's pipeline)."""
    return bool(connections[using].vendor == "postgresql")


def _planned(outcomes: Sequence[Outcome], using: str) -> list[Planned]:
    """Each outcome with the fields it writes on its job and on its run."""
    if any(o.finished_at is None for o in outcomes):
        now = database_now(using)
        for o in outcomes:
            if o.finished_at is None:
                o.finished_at = now
    _refresh_schedules(outcomes, using)
    return [(o, *_outcome_fields(o)) for o in outcomes]


def _groups(planned: list[Planned]) -> dict[tuple[str, ...], list[int]]:
    """The indexes of the outcomes that write the same job fields, one group per set."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, (_, fields, _) in enumerate(planned):
        groups.setdefault(tuple(fields), []).append(index)
    return groups


def _show_written(planned: list[Planned], written: list[bool]) -> None:
    """Give the instances the values just written (job_succeeded and job_failed receivers get
    the job as stored, not as claimed); a value computed by the database (an F() expression)
    is left to load from the row when it is read."""
    for (outcome, fields, run_fields), ok in zip(planned, written, strict=True):
        if not ok:
            continue
        _set_fields(outcome.job, fields)
        if outcome.run is not None:
            _set_fields(outcome.run, run_fields)


def _set_fields(instance: Model, fields: dict[str, Any]) -> None:
    attnames = _attnames(type(instance))
    for name, value in fields.items():
        attname = attnames[name]
        if hasattr(value, "resolve_expression"):
            instance.__dict__.pop(attname, None)  # deferred: read from the database on access
        else:
            setattr(instance, attname, value)


@functools.cache
def _attnames(model: type[Model]) -> dict[str, str]:
    """Each concrete field's attribute, by field name: one lookup per value written."""
    return {f.name: f.attname for f in model._meta.concrete_fields}


def _warn_lost(outcomes: Sequence[Outcome], written: list[bool]) -> None:
    for o, ok in zip(outcomes, written, strict=True):
        if not ok:
            logger.warning(
                "Job %s lost its lock before it finished (another worker recovered it); "
                "its outcome was not written.",
                o.job,
            )


Planned = tuple[Outcome, dict[str, Any], dict[str, Any]]


def _job_rows(planned: list[Planned], indexes: list[int]) -> list[tuple[dict[str, Any], list[Any]]]:
    """The job rows of a group of outcomes: (fields, [id, lock token]) each."""
    return [(planned[i][1], [planned[i][0].job.pk, planned[i][0].job.lock_token]) for i in indexes]


def _finish_postgresql(
    planned: list[Planned], groups: dict[tuple[str, ...], list[int]], connection: Any
) -> tuple[str, list[Any]]:
    """All the outcomes in one statement (one round trip, one commit) returning the ids of
    the jobs written.

    Each group of rows that write the same fields is an UPDATE ... FROM unnest(arrays) in a
    data-modifying CTE: values shared by the group are single parameters, values that
    differ (finish times, results) arrive as one array per column.
    """
    parts, params = [], []
    for n, indexes in enumerate(groups.values()):
        rows = _job_rows(planned, indexes)
        sql, part_params = unnest_update(
            Job, rows, ["id", "lock_token"], {"state": JobState.RUNNING.value}, connection
        )
        parts.append(f"j{n} AS ({sql} RETURNING {qualified_column(Job, 'id', connection)})")
        params += part_params
    runs = [(fields, [o.run.pk]) for o, _, fields in planned if o.run is not None]
    if runs:
        sql, part_params = unnest_update(
            JobRun, runs, ["id"], {"outcome": RunOutcome.RUNNING.value}, connection
        )
        parts.append(f"r AS ({sql})")
        params += part_params
    union = " UNION ALL ".join(f"SELECT id FROM j{n}" for n in range(len(groups)))
    return f"WITH {', '.join(parts)} {union}", params


def release(job: Job, run: JobRun | None, *, reason: str, discard_run: bool = False) -> bool:
    """Hand a claimed job back, due at once, without counting the attempt (a worker stopping).

    With `discard_run`, the run row is deleted: the job never started (a claimed batch held
    more jobs of one name than its concurrency allows).
    """
    using = job._state.db or "default"
    with write_transaction(using):
        touched = (
            Job.objects.using(using)
            .filter(pk=job.pk, lock_token=job.lock_token, state=JobState.RUNNING)
            .update(
                state=JobState.SCHEDULED,
                locked_by=None,
                lock_token=None,
                locked_until=None,
                attempts=F("attempts") - 1,
                updated_at=DbNow(),
            )
        )
        if run is not None and discard_run:
            JobRun.objects.using(using).filter(pk=run.pk, outcome=RunOutcome.RUNNING).delete()
        elif run is not None:
            JobRun.objects.using(using).filter(pk=run.pk, outcome=RunOutcome.RUNNING).update(
                outcome=RunOutcome.INTERRUPTED, finished_at=DbNow(), error=reason
            )
        if touched:
            wake_workers(using, [job.queue])  # another worker takes it at once
    return bool(touched)
