"""The claim: lock a batch of due jobs for one worker, per database vendor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, Unpack

from django.db import connections, transaction
from django.db.models import F

from ..models import DbNow, Job, JobQuerySet, JobRun, JobState, RunOutcome, db_now_plus, new_token
from .sql import column_name, quoted_columns, row_reader

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


def _lock_fields(
    request: _ClaimRequest, *, now: Any, locked_until: Any, attempts: Any = None
) -> dict[str, Any]:
    """The fields a claim writes on each job row (`attempts` too, when it is an expression)."""
    fields: dict[str, Any] = {
        "state": JobState.RUNNING,
        "locked_by": request.worker_id,
        "lock_token": request.token,
        "locked_until": locked_until,
    }
    if attempts is not None:
        fields["attempts"] = attempts
    fields.update(last_started_at=now, progress=None, progress_message="", updated_at=now)
    return fields


class ClaimOptions(TypedDict):
    """The keyword arguments of claim() and claim_and_start()."""

    worker_id: str
    queues: Sequence[str] | None
    limit: int
    lock_lifetime: float
    exclude_names: NotRequired[Iterable[str]]
    using: NotRequired[str]


def claim(**options: Unpack[ClaimOptions]) -> list[Job]:
    """Lock up to `limit` due jobs for this worker, highest priority then earliest due first."""
    return [job for job, _ in _claim(start_runs=False, **options)]


def claim_and_start(**options: Unpack[ClaimOptions]) -> list[tuple[Job, JobRun]]:
    """Claim like claim() and record each attempt's JobRun in the same transaction.

    On PostgreSQL both happen in one statement (one round trip); a claim whose answer is lost
    (a dropped connection) leaves nothing behind but locks that expire and are recovered.
    """
    return _claim(start_runs=True, **options)  # type: ignore[return-value]


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
    start_runs: bool,
    worker_id: str,
    queues: Sequence[str] | None,
    limit: int,
    lock_lifetime: float,
    exclude_names: Iterable[str] = (),
    using: str = "default",
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
    claimed = claim_strategy(connections[using])(request)
    if claimed:
        logger.debug("%s claimed %d job(s)", worker_id, len(claimed))
    return claimed


def claim_strategy(connection: Any) -> Callable[[_ClaimRequest], list[tuple[Job, JobRun | None]]]:
    """The claim this database does best; the ORM-only compare-and-set serves the rest."""
    if connection.vendor == "postgresql":
        return _claim_postgresql
    if connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert:
        return _claim_sqlite  # SQLite 3.35+: UPDATE ... RETURNING
    if connection.features.has_select_for_update_skip_locked:
        return _claim_locking  # MySQL, MariaDB: they have no UPDATE ... RETURNING
    return _claim_compare_and_set


def _claimable_sql(
    connection: Any, request: _ClaimRequest, now_sql: str
) -> tuple[str, str, list[Any]]:
    """The WHERE and ORDER BY of the claim query, as claimable() has them, with parameters."""
    c = quoted_columns(Job, connection)
    where = [f"{c['state']} = %s", f"{c['enabled']} = %s", f"{c['next_run_at']} <= {now_sql}"]
    if request.queues:
        where.append(f"{c['queue']} IN ({', '.join(['%s'] * len(request.queues))})")
    if request.exclude:
        where.append(f"{c['name']} NOT IN ({', '.join(['%s'] * len(request.exclude))})")
    order = f"{c['priority']} DESC, {c['next_run_at']}, {c['id']}"
    return " AND ".join(where), order, _claimable_params(request)


def _claimable_params(request: _ClaimRequest) -> list[Any]:
    return [JobState.SCHEDULED.value, True, *request.queues, *request.exclude]


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


def _lock_assignments(c: dict[str, str], *, now: str, until: str, attempts: str) -> str:
    """The SET list of a raw claim statement (_lock_fields() in SQL); _lock_params() fill it."""
    return (
        f"{c['state']} = %s, {c['locked_by']} = %s, {c['lock_token']} = %s, "
        f"{c['locked_until']} = {until}, {c['attempts']} = {attempts} + 1, "
        f"{c['last_started_at']} = {now}, {c['progress']} = NULL, "
        f"{c['progress_message']} = '', {c['updated_at']} = {now}"
    )


def _lock_params(request: _ClaimRequest, until: Any) -> list[Any]:
    return [JobState.RUNNING.value, request.worker_id, request.token, until]


def _postgresql_claim_sql(connection: Any, request: _ClaimRequest) -> tuple[str, list[Any]]:
    """The claim statement for this shape of request, and the run fields it takes as params."""
    qn = connection.ops.quote_name
    c = quoted_columns(Job, connection)
    job_table = qn(Job._meta.db_table)
    now = "STATEMENT_TIMESTAMP()"
    where, order, _ = _claimable_sql(connection, request, now)
    job_fields = Job._meta.concrete_fields
    returning = ", ".join(f"j.{qn(f.column)}" for f in job_fields)
    assignments = _lock_assignments(
        c, now=now, until=f"{now} + %s * INTERVAL '1 second'", attempts=f"j.{c['attempts']}"
    )
    # ANY(ARRAY(...)) runs the locking subquery once, whatever plan the UPDATE gets.
    sql = (
        f"WITH claimed AS (UPDATE {job_table} AS j SET {assignments} "
        f"WHERE j.{c['id']} = ANY(ARRAY(SELECT {c['id']} FROM {job_table} WHERE {where} "
        f"ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED)) RETURNING {returning})"
    )
    selected = ", ".join(f"c.{qn(f.column)}" for f in job_fields)
    run_fields = []
    if request.start_runs:
        r = quoted_columns(JobRun, connection)
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
        *_lock_params(request, request.lock_lifetime),
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
    read = row_reader(Job, connection, request.using)
    build = _run_builder(request) if request.start_runs else None
    for row in rows:
        job = read(row[:width])
        claimed.append((job, build(job, row[width], row[width + 1]) if build else None))
    return claimed


def _claim_sqlite(request: _ClaimRequest) -> list[tuple[Job, JobRun | None]]:
    """UPDATE ... RETURNING: the write lock is held from the first row read to the last written."""
    connection = connections[request.using]
    qn = connection.ops.quote_name
    c = quoted_columns(Job, connection)
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
    assignments = _lock_assignments(c, now=now, until=until, attempts=c["attempts"])
    sql = (
        f"UPDATE {job_table} SET {assignments} "
        f"WHERE {c['id']} IN (SELECT {c['id']} FROM {job_table} WHERE {where} "
        f"ORDER BY {order} LIMIT (CASE WHEN {anything_due} THEN %s ELSE 0 END)) "
        f"RETURNING {', '.join(qn(column_name(f)) for f in job_fields)}"
    )
    params = [
        *_lock_params(request, f"+{request.lock_lifetime} seconds"),
        *where_params,
        JobState.SCHEDULED.value,
        True,
        request.limit,
    ]
    with transaction.atomic(using=request.using):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        read = row_reader(Job, connection, request.using)
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
        locked_until = db_now + timedelta(seconds=request.lock_lifetime)
        fields = _lock_fields(request, now=db_now, locked_until=locked_until)
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
            .update(
                **_lock_fields(
                    request,
                    now=DbNow(),
                    locked_until=db_now_plus(request.lock_lifetime),
                    attempts=F("attempts") + 1,
                )
            )
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


def start_run(job: Job, worker_id: str) -> JobRun:
    """Record the attempt that is starting now."""
    return JobRun.objects.using(job._state.db).create(
        job=job,
        job_name=job.name,
        attempt=job.attempts,
        worker_id=worker_id,
        lock_token=job.lock_token or "",
    )
