"""The worker's writes: claim due jobs, extend locks, finish, release and recover them.

Every vendor-specific statement of the app lives here. PostgreSQL and MySQL/MariaDB claim with
SELECT ... FOR UPDATE SKIP LOCKED; SQLite (and later MongoDB) with a compare-and-set UPDATE whose
WHERE clause repeats the claimable condition. Every write after the claim matches the claim's
lock token, so a worker that lost its lock cannot overwrite the state a newer owner wrote.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import F, Field, JSONField, Model, Q
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from . import notify
from .conf import settings
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
M = TypeVar("M", bound=Model)


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
    claimed = _claim(
        worker_id=worker_id,
        queues=queues,
        limit=limit,
        lock_lifetime=lock_lifetime,
        exclude_names=exclude_names,
        using=using,
        start_runs=False,
    )
    return [job for job, _ in claimed]


def claim_and_start(
    *,
    worker_id: str,
    queues: Sequence[str] | None,
    limit: int,
    lock_lifetime: float,
    exclude_names: Iterable[str] = (),
    using: str = "default",
) -> list[tuple[Job, JobRun]]:
    """Claim like claim() and record each attempt's JobRun in the same transaction.

    On PostgreSQL both happen in one statement (one round trip); a claim whose answer is lost
    (a dropped connection) leaves nothing behind but locks that expire and are recovered.
    """
    return _claim(  # type: ignore[return-value]
        worker_id=worker_id,
        queues=queues,
        limit=limit,
        lock_lifetime=lock_lifetime,
        exclude_names=exclude_names,
        using=using,
        start_runs=True,
    )


@dataclass(frozen=True)
class _ClaimRequest:
    worker_id: str
    token: str
    queues: list[str]
    exclude: list[str]
    limit: int
    lock_lifetime: float
    using: str
    start_runs: bool


def _claim(
    *,
    worker_id: str,
    queues: Sequence[str] | None,
    limit: int,
    lock_lifetime: float,
    exclude_names: Iterable[str],
    using: str,
    start_runs: bool,
) -> list[tuple[Job, JobRun | None]]:
    if limit <= 0:
        return []
    request = _ClaimRequest(
        worker_id=worker_id,
        token=new_token(),
        queues=list(queues or []),
        exclude=sorted(set(exclude_names)),
        limit=limit,
        lock_lifetime=float(lock_lifetime),
        using=using,
        start_runs=start_runs,
    )
    connection = connections[using]
    if connection.vendor == "postgresql":
        claimed = _claim_postgresql(request)
    elif connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert:
        claimed = _claim_sqlite(request)  # SQLite 3.35+: UPDATE ... RETURNING
    elif connection.features.has_select_for_update_skip_locked:
        claimed = _claim_locking(request)  # MySQL, MariaDB: they have no UPDATE ... RETURNING
    else:
        claimed = _claim_compare_and_set(request)
    if claimed:
        logger.debug("%s claimed %d job(s)", worker_id, len(claimed))
    return claimed


_COLUMNS: dict[tuple[type[Model], str], dict[str, str]] = {}


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    """A concrete field of `model` (get_field() may also return a reverse relation)."""
    found = model._meta.get_field(name)
    assert isinstance(found, Field), name
    return found


def _column(f: Field[Any, Any]) -> str:
    assert f.column is not None
    return f.column


def _columns(model: type[Model], connection: Any) -> dict[str, str]:
    """Field name -> quoted column name (quoting depends only on the vendor)."""
    key = (model, connection.vendor)
    columns = _COLUMNS.get(key)
    if columns is None:
        quote = connection.ops.quote_name
        columns = _COLUMNS[key] = {f.name: quote(f.column) for f in model._meta.concrete_fields}
    return columns


def _claimable_sql(
    connection: Any, request: _ClaimRequest, now_sql: str
) -> tuple[str, str, list[Any]]:
    """The WHERE and ORDER BY of the claim query, as claimable() has them, with parameters."""
    c = _columns(Job, connection)
    where = [f"{c['state']} = %s", f"{c['enabled']} = %s", f"{c['next_run_at']} <= {now_sql}"]
    if request.queues:
        where.append(f"{c['queue']} IN ({', '.join(['%s'] * len(request.queues))})")
    if request.exclude:
        where.append(f"{c['name']} NOT IN ({', '.join(['%s'] * len(request.exclude))})")
    order = f"{c['priority']} DESC, {c['next_run_at']}, {c['id']}"
    return " AND ".join(where), order, _claimable_params(request)


def _claimable_params(request: _ClaimRequest) -> list[Any]:
    return [JobState.SCHEDULED.value, True, *request.queues, *request.exclude]


_READERS: weakref.WeakKeyDictionary[Any, dict[type[Model], Any]] = weakref.WeakKeyDictionary()


def _reader(model: type[M], connection: Any, using: str) -> Callable[[Sequence[Any]], M]:
    """Make instances from raw rows of all concrete fields, through the backend's converters."""
    cached = _READERS.setdefault(connection, {})
    if model in cached:
        return cached[model]  # type: ignore[no-any-return]
    fields = model._meta.concrete_fields
    attnames = [f.attname for f in fields]
    converters = []
    for number, f in enumerate(fields):
        col = f.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if found:
            converters.append((number, col, found))

    def read(values: Sequence[Any]) -> M:
        converted = list(values)
        for number, col, found in converters:
            value = converted[number]
            for converter in found:
                value = converter(value, col, connection)
            converted[number] = value
        return model.from_db(using, attnames, converted)

    cached[model] = read
    return read


def _new_run(job: Job, request: _ClaimRequest, **fields: Any) -> JobRun:
    return JobRun(
        job=job,
        job_name=job.name,
        attempt=job.attempts,
        outcome=RunOutcome.RUNNING,
        worker_id=request.worker_id,
        lock_token=request.token,
        **fields,
    )


def _run_builder(request: _ClaimRequest) -> Callable[[Job, int, datetime], JobRun]:
    """Build the JobRun instances of a claimed batch (positional values: Django's fast path)."""
    fields = JobRun._meta.concrete_fields
    attnames = [f.attname for f in fields]
    template = [f.get_default() for f in fields]
    index = {name: number for number, name in enumerate(attnames)}
    template[index["outcome"]] = RunOutcome.RUNNING.value
    template[index["worker_id"]] = request.worker_id
    template[index["lock_token"]] = request.token
    job_field = JobRun._meta.get_field("job")

    def build(job: Job, run_id: int, started_at: datetime) -> JobRun:
        values = list(template)
        values[index["id"]] = run_id
        values[index["job_id"]] = job.pk
        values[index["job_name"]] = job.name
        values[index["attempt"]] = job.attempts
        values[index["started_at"]] = started_at
        run = JobRun.from_db(request.using, attnames, values)
        job_field.set_cached_value(run, job)  # type: ignore[attr-defined]
        return run

    return build


def _postgresql_claim_sql(connection: Any, request: _ClaimRequest) -> tuple[str, list[Any]]:
    """The claim statement for this shape of request, and the run fields it takes as params."""
    qn = connection.ops.quote_name
    c = _columns(Job, connection)
    job_table = qn(Job._meta.db_table)
    now = "STATEMENT_TIMESTAMP()"
    where, order, _ = _claimable_sql(connection, request, now)
    job_fields = Job._meta.concrete_fields
    returning = ", ".join(f"j.{qn(f.column)}" for f in job_fields)
    # ANY(ARRAY(...)) runs the locking subquery once, whatever plan the UPDATE gets.
    sql = (
        f"WITH claimed AS (UPDATE {job_table} AS j SET {c['state']} = %s, "
        f"{c['locked_by']} = %s, {c['lock_token']} = %s, "
        f"{c['locked_until']} = {now} + %s * INTERVAL '1 second', "
        f"{c['attempts']} = j.{c['attempts']} + 1, {c['last_started_at']} = {now}, "
        f"{c['progress']} = NULL, {c['progress_message']} = '', {c['updated_at']} = {now} "
        f"WHERE j.{c['id']} = ANY(ARRAY(SELECT {c['id']} FROM {job_table} WHERE {where} "
        f"ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED)) RETURNING {returning})"
    )
    selected = ", ".join(f"c.{qn(f.column)}" for f in job_fields)
    run_fields = []
    if request.start_runs:
        r = _columns(JobRun, connection)
        from_claim = {
            "job": f"c.{c['id']}",
            "job_name": f"c.{c['name']}",
            "attempt": f"c.{c['attempts']}",
            "lock_token": f"c.{c['lock_token']}",
            "started_at": now,
        }
        columns, values = [], []
        for f in JobRun._meta.concrete_fields:
            if f.primary_key:
                continue
            columns.append(qn(f.column))
            if f.name in from_claim:
                values.append(from_claim[f.name])
            else:
                values.append("%s")
                run_fields.append(f)
        sql += (
            f", runs AS (INSERT INTO {qn(JobRun._meta.db_table)} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM claimed AS c "
            f"RETURNING {r['id']}, {r['job']}, {r['started_at']}) "
            f"SELECT {selected}, r.{r['id']}, r.{r['started_at']} FROM claimed AS c "
            f"JOIN runs AS r ON r.{r['job']} = c.{c['id']}"
        )
    else:
        sql += f" SELECT {selected} FROM claimed AS c"
    sql += f" ORDER BY c.{c['priority']} DESC, c.{c['next_run_at']}, c.{c['id']}"
    return sql, run_fields


_PG_CLAIMS: dict[tuple[int, int, bool], tuple[str, list[Any]]] = {}


def _claim_postgresql(request: _ClaimRequest) -> list[tuple[Job, JobRun | None]]:
    """One statement: lock with SKIP LOCKED, update, insert the runs, return everything."""
    connection = connections[request.using]
    key = (len(request.queues), len(request.exclude), request.start_runs)
    if key not in _PG_CLAIMS:
        _PG_CLAIMS[key] = _postgresql_claim_sql(connection, request)
    sql, run_fields = _PG_CLAIMS[key]
    params: list[Any] = [
        JobState.RUNNING.value,
        request.worker_id,
        request.token,
        request.lock_lifetime,
        *_claimable_params(request),
        request.limit,
    ]
    given = {"outcome": RunOutcome.RUNNING.value, "worker_id": request.worker_id}
    for f in run_fields:
        # Fields added later get their model default, as the ORM would insert it.
        value = given[f.name] if f.name in given else f.get_default()
        params.append(f.get_db_prep_save(value, connection))
    job_fields = Job._meta.concrete_fields
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    claimed: list[tuple[Job, JobRun | None]] = []
    width = len(job_fields)
    read = _reader(Job, connection, request.using)
    build = _run_builder(request) if request.start_runs else None
    for row in rows:
        job = read(row[:width])
        claimed.append((job, build(job, row[width], row[width + 1]) if build else None))
    return claimed


def _claim_sqlite(request: _ClaimRequest) -> list[tuple[Job, JobRun | None]]:
    """UPDATE ... RETURNING: the write lock is held from the first row read to the last written."""
    connection = connections[request.using]
    qn = connection.ops.quote_name
    c = _columns(Job, connection)
    job_table = qn(Job._meta.db_table)
    # Django's Now() on SQLite; "%%" because parameters follow.
    now = "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')"
    until = "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', %s)"
    where, order, where_params = _claimable_sql(connection, request, now)
    # SQLite looks for due rows through the claim index, priority first, and would read every
    # future row when nothing is due. This cheap test, in due-time order, stops at the first
    # due row, and a LIMIT of 0 ends the scan before it starts: an idle poll costs the same
    # with a million future jobs as with ten (a plain AND EXISTS is still checked per row).
    next_run_idx = qn("django_jobs_next_run_idx")
    anything_due = (
        f"EXISTS (SELECT 1 FROM {job_table} INDEXED BY {next_run_idx} "
        f"WHERE {c['next_run_at']} <= {now} AND {c['state']} = %s AND {c['enabled']} = %s)"
    )
    job_fields = Job._meta.concrete_fields
    sql = (
        f"UPDATE {job_table} SET {c['state']} = %s, {c['locked_by']} = %s, "
        f"{c['lock_token']} = %s, {c['locked_until']} = {until}, "
        f"{c['attempts']} = {c['attempts']} + 1, {c['last_started_at']} = {now}, "
        f"{c['progress']} = NULL, {c['progress_message']} = '', {c['updated_at']} = {now} "
        f"WHERE {c['id']} IN (SELECT {c['id']} FROM {job_table} WHERE {where} "
        f"ORDER BY {order} LIMIT (CASE WHEN {anything_due} THEN %s ELSE 0 END)) "
        f"RETURNING {', '.join(qn(_column(f)) for f in job_fields)}"
    )
    params = [
        JobState.RUNNING.value,
        request.worker_id,
        request.token,
        f"+{request.lock_lifetime} seconds",
        *where_params,
        JobState.SCHEDULED.value,
        True,
        request.limit,
    ]
    with transaction.atomic(using=request.using):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        read = _reader(Job, connection, request.using)
        jobs = [read(row) for row in rows]
        jobs.sort(key=lambda j: (-j.priority, j.next_run_at, j.pk))
        return _with_runs(jobs, request)


def _claim_locking(request: _ClaimRequest) -> list[tuple[Job, JobRun | None]]:
    """SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE, in one short transaction."""
    using = request.using
    attnames = [f.attname for f in Job._meta.concrete_fields]
    candidates = claimable(using, request.queues, request.exclude).select_for_update(
        skip_locked=True
    )
    # All selected rows stay locked until commit, so keep this transaction short.
    with transaction.atomic(using=using):
        rows = list(
            candidates.annotate(claim_now=DbNow()).values_list(*attnames, "claim_now")[
                : request.limit
            ]
        )
        if not rows:
            return []
        db_now = rows[0][-1]
        fields = {
            "state": JobState.RUNNING,
            "locked_by": request.worker_id,
            "lock_token": request.token,
            "locked_until": db_now + timedelta(seconds=request.lock_lifetime),
            "last_started_at": db_now,
            "progress": None,
            "progress_message": "",
            "updated_at": db_now,
        }
        jobs = [Job.from_db(using, attnames, row[:-1]) for row in rows]
        Job.objects.using(using).filter(pk__in=[j.pk for j in jobs]).update(
            attempts=F("attempts") + 1, **fields
        )
        for job in jobs:
            for name, value in fields.items():
                setattr(job, name, value)
            job.attempts += 1
        return _with_runs(jobs, request)


def _claim_compare_and_set(request: _ClaimRequest) -> list[tuple[Job, JobRun | None]]:
    """The ORM-only claim (old SQLite, later MongoDB): an UPDATE that repeats the condition."""
    using = request.using
    candidates = claimable(using, request.queues, request.exclude)
    with transaction.atomic(using=using):
        ids = list(candidates.values_list("pk", flat=True)[: request.limit])
        if not ids:
            return []
        # A row another worker claimed since the SELECT no longer matches the claimable
        # condition repeated in the UPDATE, so it is skipped, not stolen.
        touched = (
            Job.objects.using(using)
            .due()
            .filter(pk__in=ids)
            .update(**_lock_fields(request.worker_id, request.token, request.lock_lifetime))
        )
        if not touched:
            return []
        mine = Job.objects.using(using).filter(lock_token=request.token)
        return _with_runs(list(mine.order_by(*CLAIM_ORDER)), request)


def _with_runs(jobs: list[Job], request: _ClaimRequest) -> list[tuple[Job, JobRun | None]]:
    """Insert the JobRun rows of a claimed batch with one INSERT, in the claim's transaction."""
    if not request.start_runs or not jobs:
        return [(job, None) for job in jobs]
    using = request.using
    runs = JobRun.objects.using(using).bulk_create([_new_run(job, request) for job in jobs])
    if any(run.pk is None for run in runs):
        # MySQL returns no ids from a multi-row INSERT.
        ids = dict(
            JobRun.objects.using(using).filter(lock_token=request.token).values_list("job_id", "pk")
        )
        for run in runs:
            run.pk = ids[run.job_id]  # type: ignore[index]
            run._state.adding, run._state.db = False, using
    return list(zip(jobs, runs, strict=True))


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
    # Match on the token too: after a long pause this worker may hold a row twice, under its
    # old claim (lost) and a new one.
    kept = set(rows.values_list("pk", "lock_token"))
    return {job.pk for job in jobs if (job.pk, job.lock_token) not in kept}


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
    error_class: str = ""  # import path of the exception class, e.g. "builtins.ValueError"


def finish(
    job: Job,
    run: JobRun | None,
    *,
    failure: Failure | None = None,
    result: Any = None,
    retry_delay: Any = None,
) -> bool:
    """Write the outcome of a run; False when the lock was lost and nothing was written."""
    outcome = Outcome(job, run, failure=failure, result=result, retry_delay=retry_delay)
    return finish_many([outcome], using=job._state.db or "default")[0]


@dataclass
class Outcome:
    """The end of one run, written with others in one batch by finish_many()."""

    job: Job
    run: JobRun | None
    failure: Failure | None = None
    result: Any = None
    retry_delay: Any = None  # a timedelta: retry after it, within the job's attempts
    finished_at: datetime = field(default_factory=timezone.now)


def _outcome_fields(outcome: Outcome) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields to write on the job row and on its run row."""
    job, failure, now = outcome.job, outcome.failure, outcome.finished_at
    if failure is None:
        fields = _finished_fields(job, succeeded=True, now=now)
        fields.update(
            result=outcome.result,
            last_error="",
            last_traceback="",
            progress=1.0 if job.progress is not None else None,
        )
        run_outcome = RunOutcome.SUCCEEDED
    else:
        retry_delay = outcome.retry_delay
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
        run_outcome = RunOutcome.FAILED
    run_fields = {
        "outcome": run_outcome,
        "finished_at": now,
        "error": failure.error[:10000] if failure else "",
        "error_class": failure.error_class[:255] if failure else "",
        "traceback": failure.traceback if failure else "",
    }
    return fields, run_fields


def _refresh_schedules(outcomes: Sequence[Outcome], using: str) -> None:
    """Give recurring jobs the schedule their row has now, for computing the next slot."""
    recurring = {o.job.pk: o.job for o in outcomes if o.job.recurring}
    if not recurring:
        return
    # A deploy's sync or the admin may have changed the schedule while the job ran: the
    # next slot follows the row's schedule now, not the one it was claimed with.
    owned = Q()
    for job in recurring.values():
        owned |= Q(pk=job.pk, lock_token=job.lock_token)
    rows = Job.objects.using(using).filter(owned).values_list("pk", "schedule", "timezone")
    for pk, schedule, tz_name in rows:
        if schedule:
            recurring[pk].schedule, recurring[pk].timezone = schedule, tz_name


def _set_clause(
    model: type[Model], sample: dict[str, Any], connection: Any
) -> tuple[list[str], dict[str, list[Any]]]:
    """SET assignments: "%s" per plain value; expressions (F() + 1) compiled with their params."""
    query = UpdateQuery(model)
    compiler = query.get_compiler(connection=connection)
    assignments, expression_params = [], {}
    for name, value in sample.items():
        column = connection.ops.quote_name(_column(_field(model, name)))
        if hasattr(value, "resolve_expression"):
            sql, params = compiler.compile(
                value.resolve_expression(query, allow_joins=False, for_save=True)
            )
            assignments.append(f"{column} = {sql}")
            expression_params[name] = list(params)
        else:
            assignments.append(f"{column} = %s")
    return assignments, expression_params


def _update_each(
    model: type[Model],
    rows: Sequence[tuple[dict[str, Any], list[Any]]],
    where: dict[str, Any],
    using: str,
) -> int:
    """One UPDATE statement sent for many rows (executemany: pipelined on PostgreSQL).

    Each row is (fields, values of the `where` columns that vary by row); `where` maps
    field names to None (a per-row value) or to a value every row shares. Every row must
    write the same fields, and the same expressions.
    """
    connection = connections[using]
    if connection.vendor == "mysql":
        return _update_joined(model, rows, where, connection)
    assignments, expression_params = _set_clause(model, rows[0][0], connection)
    qn = connection.ops.quote_name
    conditions = [f"{qn(_column(_field(model, name)))} = %s" for name in where]
    sql = (
        f"UPDATE {qn(model._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)}"
    )
    fields = [_field(model, name) for name in rows[0][0]]
    param_rows = []
    for values, keys in rows:
        params: list[Any] = []
        for f in fields:
            if f.name in expression_params:
                params += expression_params[f.name]
            else:
                params.append(f.get_db_prep_save(values[f.name], connection))  # type: ignore[union-attr]
        per_row = iter(keys)
        params += [next(per_row) if value is None else value for value in where.values()]
        param_rows.append(params)
    with connection.cursor() as cursor:
        cursor.executemany(sql, param_rows)
        return int(cursor.rowcount)


def _update_joined(
    model: type[Model],
    rows: Sequence[tuple[dict[str, Any], list[Any]]],
    where: dict[str, Any],
    connection: Any,
) -> int:
    """_update_each() for MySQL/MariaDB, whose executemany() sends one UPDATE per row: a
    single multi-table UPDATE joined to the rows' values (a derived table of UNION ALLs)."""
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    keys = [name for name, shared in where.items() if shared is None]
    query = UpdateQuery(model)
    compiler = query.get_compiler(connection=connection)
    columns: list[tuple[str, Any]] = [(f"k{n}", None) for n in range(len(keys))]
    sets, set_params = [], []
    varying: list[str] = []
    for name, value in rows[0][0].items():
        model_field = _field(model, name)
        target = f"{table}.{qn(model_field.column)}"
        if hasattr(value, "resolve_expression"):
            sql, expression_params = compiler.compile(
                value.resolve_expression(query, allow_joins=False, for_save=True)
            )
            sets.append(f"{target} = {sql}")
            set_params += expression_params
            continue
        values = [fields[name] for fields, _ in rows]
        if all(_same(v, values[0]) for v in values[1:]):
            sets.append(f"{target} = %s")
            set_params.append(model_field.get_db_prep_save(values[0], connection))
        else:
            alias = f"v{len(columns)}"
            columns.append((alias, model_field))
            varying.append(name)
            sets.append(f"{target} = v.{alias}")
    derived, derived_params = [], []
    for number, (fields, key_values) in enumerate(rows):
        cells = [*key_values]
        cells += [
            _field(model, name).get_db_prep_save(fields[name], connection) for name in varying
        ]
        if number == 0:
            derived.append("SELECT " + ", ".join(f"%s AS {alias}" for alias, _ in columns))
        else:
            derived.append("SELECT " + ", ".join(["%s"] * len(columns)))
        derived_params += cells
    on = " AND ".join(
        f"{table}.{qn(_column(_field(model, name)))} = v.k{n}" for n, name in enumerate(keys)
    )
    shared = [(name, value) for name, value in where.items() if value is not None]
    conditions = " AND ".join(
        f"{table}.{qn(_column(_field(model, name)))} = %s" for name, _ in shared
    )
    sql = (
        f"UPDATE {table} JOIN ({' UNION ALL '.join(derived)}) AS v ON {on} "
        f"SET {', '.join(sets)}" + (f" WHERE {conditions}" if conditions else "")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*derived_params, *set_params, *(value for _, value in shared)])
        return int(cursor.rowcount)


def finish_many(outcomes: Sequence[Outcome], using: str = "default") -> list[bool]:
    """Write the outcomes of many runs in one transaction; False for each whose lock was lost.

    Rows that write the same fields share one statement sent once for all of them, so a
    batch of finished jobs costs a round trip or two, not a few per job. Each row still
    matches its own claim's lock token.
    """
    if not outcomes:
        return []
    _refresh_schedules(outcomes, using)
    planned = [(o, *_outcome_fields(o)) for o in outcomes]
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, (_, fields, _) in enumerate(planned):
        groups.setdefault(tuple(fields), []).append(index)
    if connections[using].vendor == "postgresql":
        kept = _finish_postgresql(planned, groups, using)
        written = [o.job.pk in kept for o in outcomes]
        _warn_lost(outcomes, written)
        return written
    written = [True] * len(outcomes)
    with transaction.atomic(using=using):
        for indexes in groups.values():
            rows = [
                (planned[i][1], [planned[i][0].job.pk, planned[i][0].job.lock_token])
                for i in indexes
            ]
            where = {"id": None, "lock_token": None, "state": JobState.RUNNING.value}
            touched = _update_each(Job, rows, where, using)
            if touched != len(indexes):
                # Rare: find which rows another worker took over; ours carry our finish time.
                mine = {(planned[i][0].job.pk, planned[i][0].finished_at): i for i in indexes}
                now_rows = Job.objects.using(using).filter(pk__in=[k[0] for k in mine])
                stored = set(now_rows.values_list("pk", "last_finished_at"))
                for key, i in mine.items():
                    written[i] = key in stored
        run_rows = [
            (planned[i][2], [o.run.pk]) for i, o in enumerate(outcomes) if o.run is not None
        ]
        if run_rows:
            where = {"id": None, "outcome": RunOutcome.RUNNING.value}
            _update_each(JobRun, run_rows, where, using)
    _warn_lost(outcomes, written)
    return written


def _warn_lost(outcomes: Sequence[Outcome], written: list[bool]) -> None:
    for o, ok in zip(outcomes, written, strict=True):
        if not ok:
            logger.warning(
                "Job %s lost its lock before it finished (another worker recovered it); "
                "its outcome was not written.",
                o.job,
            )


Planned = tuple[Outcome, dict[str, Any], dict[str, Any]]


def _finish_postgresql(
    planned: list[Planned], groups: dict[tuple[str, ...], list[int]], using: str
) -> set[int]:
    """All the outcomes in one statement (one round trip, one commit); returns the ids written.

    Each group of rows that write the same fields is an UPDATE ... FROM unnest(arrays) in a
    data-modifying CTE: values shared by the group are single parameters, values that
    differ (finish times, results) arrive as one array per column.
    """
    connection = connections[using]
    parts, params = [], []
    for n, indexes in enumerate(groups.values()):
        rows = [
            (planned[i][1], [planned[i][0].job.pk, planned[i][0].job.lock_token]) for i in indexes
        ]
        sql, part_params = _unnest_update(
            Job, rows, ["id", "lock_token"], {"state": JobState.RUNNING.value}, connection
        )
        parts.append(f"j{n} AS ({sql} RETURNING {_qualified(Job, 'id', connection)})")
        params += part_params
    runs = [(fields, [o.run.pk]) for o, _, fields in planned if o.run is not None]
    if runs:
        sql, part_params = _unnest_update(
            JobRun, runs, ["id"], {"outcome": RunOutcome.RUNNING.value}, connection
        )
        parts.append(f"r AS ({sql})")
        params += part_params
    union = " UNION ALL ".join(f"SELECT id FROM j{n}" for n in range(len(groups)))
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} {union}", params)
        return {row[0] for row in cursor.fetchall()}


def _qualified(model: type[Model], name: str, connection: Any) -> str:
    qn = connection.ops.quote_name
    return f"{qn(model._meta.db_table)}.{qn(_column(_field(model, name)))}"


def _unnest_update(
    model: type[Model],
    rows: Sequence[tuple[dict[str, Any], list[Any]]],
    keys: Sequence[str],
    shared_conditions: dict[str, Any],
    connection: Any,
) -> tuple[str, list[Any]]:
    """UPDATE rows identified by per-row `keys`, with per-row or shared values (PostgreSQL)."""
    qn = connection.ops.quote_name
    query = UpdateQuery(model)
    compiler = query.get_compiler(connection=connection)
    sets, set_params, columns, arrays = [], [], [], []
    for number, name in enumerate(keys):
        model_field = _field(model, name)
        columns.append((f"k{number}", model_field))
        arrays.append([key_values[number] for _, key_values in rows])
    for name, value in rows[0][0].items():
        model_field = _field(model, name)
        target = qn(model_field.column)
        if hasattr(value, "resolve_expression"):
            sql, expression_params = compiler.compile(
                value.resolve_expression(query, allow_joins=False, for_save=True)
            )
            sets.append(f"{target} = {sql}")
            set_params += expression_params
            continue
        values = [fields[name] for fields, _ in rows]
        first, kind = values[0], type(values[0])
        if all(type(v) is kind and v == first for v in values):
            sets.append(f"{target} = %s")
            set_params.append(model_field.get_db_prep_save(first, connection))
        else:
            alias = f"v{len(columns)}"
            columns.append((alias, model_field))
            arrays.append([_pg_value(model_field, v, connection) for v in values])
            sets.append(f"{target} = v.{alias}")
    unnest = ", ".join(f"%s::{f.db_type(connection)}[]" for _, f in columns)
    aliases = ", ".join(alias for alias, _ in columns)
    conditions = [f"{_qualified(model, name, connection)} = v.k{n}" for n, name in enumerate(keys)]
    conditions += [f"{_qualified(model, name, connection)} = %s" for name in shared_conditions]
    sql = (
        f"UPDATE {qn(model._meta.db_table)} SET {', '.join(sets)} "
        f"FROM unnest({unnest}) AS v({aliases}) WHERE {' AND '.join(conditions)}"
    )
    return sql, [*set_params, *arrays, *shared_conditions.values()]


def _pg_value(model_field: Field[Any, Any], value: Any, connection: Any) -> Any:
    """A value for psycopg: what it adapts by itself as it is, the rest through the field."""
    # Aware datetimes, strings, numbers and None need no preparation from Django on
    # PostgreSQL (its adapt_datetimefield_value returns the value as it is); JSON does.
    if value is None or (
        not isinstance(model_field, JSONField)
        and (
            (type(value) is datetime and value.tzinfo is not None)
            or type(value) in (str, int, float, bool)
        )
    ):
        return value
    return model_field.get_db_prep_save(value, connection)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def release(job: Job, run: JobRun | None, *, reason: str, discard_run: bool = False) -> bool:
    """Hand a claimed job back, due at once, without counting the attempt (a worker stopping).

    With `discard_run`, the run row is deleted: the job never started (a claimed batch held
    more jobs of one name than its concurrency allows).
    """
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
        if run is not None and discard_run:
            JobRun.objects.using(using).filter(pk=run.pk, outcome=RunOutcome.RUNNING).delete()
        elif run is not None:
            JobRun.objects.using(using).filter(pk=run.pk, outcome=RunOutcome.RUNNING).update(
                outcome=RunOutcome.INTERRUPTED, finished_at=now, error=reason
            )
        if touched:
            wake_workers(using, [job.queue])  # another worker takes it at once
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


def wake_workers(using: str, queues: Iterable[str], due_at: datetime | None = None) -> None:
    """After the current transaction commits, wake idle workers of `queues` (PostgreSQL).

    Called when jobs become due now, or within a poll interval (`due_at`), so a sleeping
    worker claims them at once, or learns the time to wake at. Elsewhere workers poll.
    """
    if not settings.NOTIFY:
        return
    if due_at is not None:
        horizon = timezone.now() + timedelta(seconds=settings.POLL_INTERVAL)
        if due_at > horizon:
            return  # a worker's next poll comes before it is due
    if not notify.supported(using):
        return
    names = sorted(set(queues))
    transaction.on_commit(lambda: notify.send(using, names), using=using, robust=True)
