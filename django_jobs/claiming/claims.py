"""The claim: lock a batch of due jobs for one worker, per database vendor."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, Unpack

from django.db import connections
from django.db.models import F, Q

from ..db import EARLIEST_TIME, DbNow, db_now_plus, sqlite_now_sql, write_transaction
from ..models import Job, JobQuerySet, JobRun, JobState, RunOutcome, new_run, new_token
from .limits import Group, group_lock, room_for
from .outcomes import Finishing, Outcome, finish_many
from .sql import column_name, fetch_all, fetch_together, from_row, quoted_columns, row_reader

logger = logging.getLogger(__name__)


CLAIM_ORDER = ("-priority", "next_run_at", "pk")


def claimable(
    using: str,
    queues: Sequence[str] | None,
    exclude_names: Iterable[str],
    *,
    limited: bool = False,
) -> JobQuerySet:
    """Due, unpaused jobs in claim order. The ordinary claim takes the rows that are not
    `limited`; the limited ones (a cluster-wide concurrency, a rate limit or a lock key) are
    claimed one group at a time under that group's lock (_claim_limited())."""
    qs = Job.objects.using(using).due().unpaused().filter(limited=limited)
    if queues:
        qs = qs.filter(queue__in=list(queues))
    exclude = list(exclude_names)
    if exclude:
        qs = qs.exclude(name__in=exclude)
    return qs.order_by(*CLAIM_ORDER)


@dataclass(frozen=True)
class Sql:
    """A piece of SQL in the SET list of a raw claim statement, with its own parameters."""

    sql: str
    params: tuple[Any, ...] = ()


def _lock_fields(
    request: _ClaimRequest, *, now: Any, locked_until: Any, attempts: Any
) -> dict[str, Any]:
    """The one SET list of a claim: what it writes on each job row.

    The ORM claims pass expressions (DbNow(), F("attempts") + 1); the raw statements pass
    Sql pieces, rendered by _assignments(). Plain values are parameters in both.
    """
    return {
        "state": JobState.RUNNING.value,
        "locked_by": request.worker_id,
        "lock_token": request.token,
        "locked_until": locked_until,
        "attempts": attempts,
        "last_started_at": now,
        "progress": None,
        "progress_message": "",
        # A cancel asked of an earlier run (that ended before its worker saw it) is spent.
        "cancel_requested_at": None,
        "cancel_requested_by": "",
        "updated_at": now,
    }


def _assignments(c: dict[str, str], fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SET list of a raw statement from _lock_fields(), and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for name, value in fields.items():
        if isinstance(value, Sql):
            parts.append(f"{c[name]} = {value.sql}")
            params += value.params
        else:
            parts.append(f"{c[name]} = %s")
            params.append(value)
    return ", ".join(parts), params


class ClaimOptions(TypedDict):
    """The keyword arguments of claim() and claim_and_start()."""

    worker_id: str
    queues: Sequence[str] | None
    limit: int
    lock_lifetime: float
    exclude_names: NotRequired[Iterable[str]]
    using: NotRequired[str]
    # Jobs of a name this worker may still start, below its per-process concurrency.
    room: NotRequired[Mapping[str, int]]
    # Look for limited jobs when slots are left (True); the worker looks only now and then
    # while it has seen none and declares no limits (Worker._look_for_limited()).
    limited: NotRequired[bool]
    # Ended runs to write first, in the same transaction as the claim (on PostgreSQL, the
    # same round trip too): the claim loop's outcomes (ClaimResult.written says which).
    finish: NotRequired[Sequence[Outcome]]
    # False: look for limited jobs only (the worker's second claim, made after the first
    # has written its outcomes and freed the heartbeat).
    ordinary: NotRequired[bool]


@dataclass(frozen=True)
class ClaimResult:
    """What claim_batch() claimed, and when a limited job held back by its rate limit may
    start (seconds from now, by the database's clock; None when none is held back by one)."""

    claimed: list[tuple[Job, JobRun]]
    retry_in: float | None = None
    looked: bool = False  # it looked for limited jobs
    found_limited: bool = False  # and found some due, whether it could start them or not
    written: list[bool] | None = None  # finish_many()'s answer for the `finish` outcomes


def claim_and_start(**options: Unpack[ClaimOptions]) -> list[tuple[Job, JobRun]]:
    """Lock up to `limit` due jobs for this worker, highest priority then earliest due first,
    and record each attempt's JobRun in the same transaction.

    On PostgreSQL both happen in one statement (one round trip); a claim whose answer is lost
    (a dropped connection) leaves nothing behind but locks that expire and are recovered.
    A claimed row whose values cannot be decoded comes back with `job.decode_error` set, so
    the worker fails that job with the reason instead of losing the batch.
    """
    return claim_batch(**options).claimed


def claim_batch(**options: Unpack[ClaimOptions]) -> ClaimResult:
    """claim_and_start(), and when a limited job is held back by its rate limit, how long
    until it may start: the worker sleeps that long at most instead of polling for it."""
    return _claim(**options)


@dataclass(frozen=True)
class _ClaimRequest:
    worker_id: str
    token: str
    queues: list[str]
    exclude: list[str]
    limit: int
    lock_lifetime: float
    using: str
    group: Group | None = None  # the limited jobs of one group only, under its lock


def _claimable_for(request: _ClaimRequest) -> JobQuerySet:
    """The rows a claim may take: claimable(), or the limited rows of one group."""
    if request.group is None:
        return claimable(request.using, request.queues, request.exclude)
    return claimable(request.using, request.queues, request.exclude, limited=True).filter(
        name=request.group.name, lock_key=request.group.lock_key
    )


def _claim(
    *,
    worker_id: str,
    queues: Sequence[str] | None,
    limit: int,
    lock_lifetime: float,
    exclude_names: Iterable[str] = (),
    using: str = "default",
    room: Mapping[str, int] | None = None,
    limited: bool = True,
    finish: Sequence[Outcome] = (),
    ordinary: bool = True,
) -> ClaimResult:
    connection = connections[using]
    # On PostgreSQL the outcomes ride with the claim; elsewhere, or with no claim to make,
    # they are written first in a transaction of their own.
    finishing = Finishing.of(finish, using) if limit > 0 else None
    written = finish_many(finish, using) if finish and finishing is None else None
    if limit <= 0:
        return ClaimResult([], written=written)
    request = _ClaimRequest(
        worker_id=worker_id,
        token=new_token(),
        queues=list(queues or []),
        exclude=sorted(set(exclude_names)),
        limit=limit,
        lock_lifetime=float(lock_lifetime),
        using=using,
    )
    if finishing is not None:
        claimed, written = _finish_and_claim_postgresql(request, finishing)
    elif ordinary:
        claimed = claim_strategy(connection)(request)
    else:
        claimed = []
    result = ClaimResult(claimed, written=written)
    if limited and len(claimed) < limit:
        rest = replace(request, limit=limit - len(claimed))
        more, retry_in, found = _claim_limited(rest, room or {})
        result = replace(
            result, claimed=claimed + more, retry_in=retry_in, looked=True, found_limited=found
        )
    if result.claimed:
        logger.debug("%s claimed %d job(s)", worker_id, len(result.claimed))
    return result


MAX_GROUPS_PER_CLAIM = 20  # groups of limited jobs one claim looks at, each in its own lock


def _claim_limited(
    request: _ClaimRequest, room: Mapping[str, int]
) -> tuple[list[tuple[Job, JobRun]], float | None, bool]:
    """Claim limited jobs one group (a name and a lock key) at a time, each in a short
    transaction that first takes the group's locks, then counts what the group holds.

    Every claim of a limited job takes the same locks, so no two count at once: the count
    and the claim that follows it are exact across the cluster (see limits.py). Returns the
    claimed jobs, the wait until a rate-limited job may start, and whether any was due.
    """
    claimed: list[tuple[Job, JobRun]] = []
    retry_in: float | None = None
    seen = Q(pk__in=[])  # the groups looked at (none yet), and the names and keys that are full
    free = request.limit
    found_any = False
    strategy = claim_strategy(connections[request.using])
    for _ in range(MAX_GROUPS_PER_CLAIM):
        if free <= 0:
            break
        candidates = claimable(request.using, request.queues, request.exclude, limited=True)
        found = candidates.exclude(seen).values_list("name", "lock_key").first()
        if found is None:
            break
        found_any = True
        group = Group(*found)
        seen |= Q(name=group.name, lock_key=group.lock_key)
        wanted = min(free, room.get(group.name, free))
        with group_lock(request.using, group) as held:
            if not held:
                continue
            space = room_for(request.using, group, wanted)
            got: list[tuple[Job, JobRun]] = []
            if space.allowed > 0:
                got = strategy(
                    replace(request, token=new_token(), limit=space.allowed, group=group)
                )
        claimed += got
        free -= len(got)
        if space.name_left is not None and space.name_left <= len(got):
            seen |= Q(name=group.name)
        if group.lock_key is not None:
            seen |= Q(lock_key=group.lock_key)
        if space.retry_in is not None:
            retry_in = space.retry_in if retry_in is None else min(retry_in, space.retry_in)
    return claimed, retry_in, found_any


def claim_strategy(connection: Any) -> Callable[[_ClaimRequest], list[tuple[Job, JobRun]]]:
    """The claim this database does best; the ORM-only compare-and-set serves the rest."""
    if connection.vendor == "postgresql":
        return _claim_postgresql
    if connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert:
        return _claim_sqlite  # SQLite 3.35+: UPDATE ... RETURNING
    if connection.features.has_select_for_update_skip_locked:
        return _claim_locking  # MySQL, MariaDB: they have no UPDATE ... RETURNING
    return _claim_compare_and_set


def _where_sql(connection: Any, queryset: JobQuerySet) -> tuple[str, list[Any]]:
    """A queryset's WHERE compiled for `connection`: the raw claims test exactly what the
    ORM's due() and claimable() test, written once in models.py and here."""
    compiler = queryset.query.get_compiler(connection=connection)
    sql, params = compiler.compile(queryset.query.where)
    return sql, [getattr(value, "value", value) for value in params]  # enum members -> str


def _claimable_sql(connection: Any, request: _ClaimRequest) -> tuple[str, str, list[Any]]:
    """The WHERE and ORDER BY of the claim query, compiled from claimable(), with parameters."""
    c = quoted_columns(Job, connection)
    if request.group is None:
        # The ordinary claim, every few milliseconds under load: compiled once per shape.
        where, cached = _ordinary_where(
            connection.alias, tuple(request.queues), tuple(request.exclude)
        )
        params = list(cached)
    else:
        where, params = _where_sql(connection, _claimable_for(request))
    return where, _order_sql(c), params


def _order_sql(c: dict[str, str], table: str = "") -> str:
    """CLAIM_ORDER as SQL over the quoted columns `c`, of `table` ("c." say) if given."""
    terms = []
    for name in CLAIM_ORDER:
        field = name.lstrip("-")
        column = c[Job._meta.pk.name if field == "pk" else field]
        terms.append(f"{table}{column}{' DESC' if name.startswith('-') else ''}")
    return ", ".join(terms)


@functools.lru_cache(maxsize=256)
def _ordinary_where(
    using: str, queues: tuple[str, ...], exclude: tuple[str, ...]
) -> tuple[str, tuple[Any, ...]]:
    """claimable()'s WHERE for these queues and excluded names, compiled for `using`.

    The same query compiles to the same SQL and parameters every time (the database's clock
    is a function in the SQL, not a parameter), and compiling it costs as much as the rest
    of the claim's Python; see docs/performance.md.
    """
    where, params = _where_sql(connections[using], claimable(using, list(queues), exclude))
    return where, tuple(params)


def _literal_where(connection: Any, where: str, params: Sequence[Any]) -> str:
    """`where` with its parameters quoted into it by the driver (psycopg's own quoting), its
    percent signs doubled: the statement it goes into still binds parameters."""
    return connection.ops.compose_sql(where, params).replace("%", "%%")


@functools.lru_cache(maxsize=256)
def _ordinary_literal_where(using: str, queues: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    """The ordinary claim's WHERE (_ordinary_where()) as literal SQL, quoted once per shape."""
    where, params = _ordinary_where(using, queues, exclude)
    return _literal_where(connections[using], where, params)


def _new_run(job: Job, request: _ClaimRequest) -> JobRun:
    run = new_run(
        job,
        worker_id=request.worker_id,
        lock_token=request.token,
        started_at=job.last_started_at,  # the claim's time, by the database's clock
    )
    run.job = job
    return run


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
        run = from_row(JobRun, request.using, attnames, values)
        job_field.set_cached_value(run, job)  # type: ignore[attr-defined]
        return run

    return build


def _pg_lock_fields(request: _ClaimRequest, c: dict[str, str]) -> dict[str, Any]:
    now = "STATEMENT_TIMESTAMP()"
    return _lock_fields(
        request,
        now=Sql(now),
        locked_until=Sql(f"{now} + %s * INTERVAL '1 second'", (request.lock_lifetime,)),
        attempts=Sql(f"j.{c['attempts']} + 1"),
    )


_WHERE, _LIMIT = "\0where\0", "\0limit\0"  # where the claim's literals go (_pg_claim_statement())


def _postgresql_claim_sql(
    connection: Any, request: _ClaimRequest
) -> tuple[tuple[str, str, str], list[Any]]:
    """The claim statement in three parts, around its WHERE and its LIMIT, and the run fields
    it takes as params."""
    qn = connection.ops.quote_name
    c = quoted_columns(Job, connection)
    job_table = qn(Job._meta.db_table)
    now = "STATEMENT_TIMESTAMP()"
    where, order = _WHERE, _order_sql(c)
    job_fields = Job._meta.concrete_fields
    returning = ", ".join(f"j.{qn(f.column)}" for f in job_fields)
    assignments, _ = _assignments(c, _pg_lock_fields(request, c))
    # ANY(ARRAY(...)) runs the locking subquery once, whatever plan the UPDATE gets.
    sql = (
        f"WITH claimed AS (UPDATE {job_table} AS j SET {assignments} "
        f"WHERE j.{c['id']} = ANY(ARRAY(SELECT {c['id']} FROM {job_table} WHERE {where} "
        f"ORDER BY {order} LIMIT {_LIMIT} FOR UPDATE SKIP LOCKED)) RETURNING {returning})"
    )
    selected = ", ".join(f"c.{qn(f.column)}" for f in job_fields)
    run_fields = []
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
        f" ORDER BY {_order_sql(c, 'c.')}"
    )
    before, rest = sql.split(_WHERE)
    between, after = rest.split(_LIMIT)
    return (before, between, after), run_fields


_PG_CLAIMS: dict[str, tuple[tuple[str, str, str], list[Any]]] = {}


def _claim_postgresql(request: _ClaimRequest) -> list[tuple[Job, JobRun]]:
    """One statement: lock with SKIP LOCKED, update, insert the runs, return everything."""
    connection = connections[request.using]
    return _pg_claimed(request, fetch_all(connection, *_pg_claim_statement(request)))


def _finish_and_claim_postgresql(
    request: _ClaimRequest, finishing: Finishing
) -> tuple[list[tuple[Job, JobRun]], list[bool]]:
    """The outcomes' statement, then the claim's, in one pipeline: one round trip and one
    commit for both (fetch_together()); an error in either rolls back both. Returns the
    claimed jobs and which outcomes were written."""
    connection = connections[request.using]
    kept, rows = fetch_together(
        connection, [(finishing.sql, finishing.params), _pg_claim_statement(request)]
    )
    return _pg_claimed(request, rows), finishing.done(kept)


def _pg_claim_statement(request: _ClaimRequest) -> tuple[str, list[Any]]:
    """The claim statement of `request` and its parameters.

    What picks the rows is written into the statement as literals (the WHERE's values and
    the LIMIT), not bound: under server-side prepared statements (OPTIONS["prepare_threshold"])
    PostgreSQL then keeps one generic plan of it instead of planning it at every claim, since
    a generic plan can use the partial claim indexes only when it can read their condition's
    state in the statement. See docs/performance.md.
    """
    connection = connections[request.using]
    if request.using not in _PG_CLAIMS:
        _PG_CLAIMS[request.using] = _postgresql_claim_sql(connection, request)
    (before, between, after), run_fields = _PG_CLAIMS[request.using]
    if request.group is None:
        where = _ordinary_literal_where(
            request.using, tuple(request.queues), tuple(request.exclude)
        )
    else:
        where = _literal_where(connection, *_where_sql(connection, _claimable_for(request)))
    sql = f"{before}{where}{between}{int(request.limit)}{after}"
    c = quoted_columns(Job, connection)
    _, set_params = _assignments(c, _pg_lock_fields(request, c))
    params: list[Any] = list(set_params)
    given = {"outcome": RunOutcome.RUNNING.value, "worker_id": request.worker_id}
    for f in run_fields:
        # Fields added later get their model default, as the ORM would insert it.
        value = given[f.name] if f.name in given else f.get_default()
        params.append(f.get_db_prep_save(value, connection))
    return sql, params


def _pg_claimed(request: _ClaimRequest, rows: list[Any]) -> list[tuple[Job, JobRun]]:
    """The claimed jobs and their runs from the claim statement's rows."""
    connection = connections[request.using]
    claimed: list[tuple[Job, JobRun]] = []
    width = len(Job._meta.concrete_fields)
    read = row_reader(Job, connection, request.using)
    build = _run_builder(request)
    for row in rows:
        job = read(row[:width])
        claimed.append((job, build(job, row[width], row[width + 1])))
    return claimed


def _claim_sqlite(request: _ClaimRequest) -> list[tuple[Job, JobRun]]:
    """UPDATE ... RETURNING: the write lock is held from the first row read to the last written."""
    connection = connections[request.using]
    qn = connection.ops.quote_name
    c = quoted_columns(Job, connection)
    job_table = qn(Job._meta.db_table)
    where, order, where_params = _claimable_sql(connection, request)
    # SQLite looks for due rows through the claim index, priority first, and would read every
    # future row when nothing is due. This cheap test, in due-time order, stops at the first
    # due row, and a LIMIT of 0 ends the scan before it starts: an idle poll costs the same
    # with a million future jobs as with ten (a plain AND EXISTS is still checked per row).
    next_run_idx = qn("django_jobs_next_run_idx")
    due, due_params = _where_sql(connection, Job.objects.using(request.using).due())
    anything_due = f"EXISTS (SELECT 1 FROM {job_table} INDEXED BY {next_run_idx} WHERE {due})"
    job_fields = Job._meta.concrete_fields
    assignments, set_params = _assignments(
        c,
        _lock_fields(
            request,
            now=Sql(sqlite_now_sql()),
            locked_until=Sql(sqlite_now_sql(", %s"), (f"+{request.lock_lifetime} seconds",)),
            attempts=Sql(f"{c['attempts']} + 1"),
        ),
    )
    sql = (
        f"UPDATE {job_table} SET {assignments} "
        f"WHERE {c['id']} IN (SELECT {c['id']} FROM {job_table} WHERE {where} "
        f"ORDER BY {order} LIMIT (CASE WHEN {anything_due} THEN %s ELSE 0 END)) "
        f"RETURNING {', '.join(qn(column_name(f)) for f in job_fields)}"
    )
    params = [*set_params, *where_params, *due_params, request.limit]
    with write_transaction(request.using):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        read = row_reader(Job, connection, request.using)
        return _with_runs(_in_claim_order([read(row) for row in rows]), request)


def _claim_locking(request: _ClaimRequest) -> list[tuple[Job, JobRun]]:
    """SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE, in one short transaction."""
    using = request.using
    candidates = _claimable_for(request).select_for_update(skip_locked=True)
    # All selected rows stay locked until commit, so keep this transaction short.
    with write_transaction(using):
        rows = list(
            candidates.annotate(claim_now=DbNow()).values_list("pk", "claim_now")[: request.limit]
        )
        if not rows:
            return []
        db_now = rows[0][-1]
        fields = _lock_fields(
            request,
            now=db_now,
            locked_until=db_now + timedelta(seconds=request.lock_lifetime),
            attempts=F("attempts") + 1,
        )
        ids = [pk for pk, _ in rows]
        Job.objects.using(using).filter(pk__in=ids).update(**fields)
        return _with_runs(_read_claimed(request, ids), request)


def _claim_compare_and_set(request: _ClaimRequest) -> list[tuple[Job, JobRun]]:
    """The ORM-only claim (old SQLite, later MongoDB): an UPDATE that repeats the condition."""
    using = request.using
    candidates = _claimable_for(request)
    with write_transaction(using):
        ids = list(candidates.values_list("pk", flat=True)[: request.limit])
        if not ids:
            return []
        # A row another worker claimed since the SELECT no longer matches the claimable
        # condition repeated in the UPDATE, so it is skipped, not stolen.
        touched = (
            Job.objects.using(using)
            .due()
            .unpaused()
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
        return _with_runs(_read_claimed(request, ids), request)


def _read_claimed(request: _ClaimRequest, ids: list[Any]) -> list[Job]:
    """The rows this claim locked among `ids` (the candidates it updated), read by primary key
    (lock_token has no index: by the token alone every claim would scan the job table), through
    the reader that survives undecodable values."""
    connection = connections[request.using]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(column_name(f)) for f in Job._meta.concrete_fields)
    c = quoted_columns(Job, connection)
    table = qn(Job._meta.db_table)
    where = f"{c['id']} IN ({', '.join(['%s'] * len(ids))}) AND {c['lock_token']} = %s"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} WHERE {where}", [*ids, request.token])
        rows = cursor.fetchall()
    read = row_reader(Job, connection, request.using)
    return _in_claim_order([read(row) for row in rows])


def _in_claim_order(jobs: list[Job]) -> list[Job]:
    """`jobs` sorted as CLAIM_ORDER sorts them in SQL (rows read back come in any order):
    one stable sort per field, the last field first."""
    ordered = list(jobs)
    for name in reversed(CLAIM_ORDER):
        key = functools.partial(_sort_value, name.lstrip("-"))
        ordered.sort(key=key, reverse=name.startswith("-"))
    return ordered


def _sort_value(field: str, job: Job) -> Any:
    value = getattr(job, field)
    return EARLIEST_TIME if value is None else value  # only a time may be missing


def _with_runs(jobs: list[Job], request: _ClaimRequest) -> list[tuple[Job, JobRun]]:
    """Insert the JobRun rows of a claimed batch with one INSERT, in the claim's transaction."""
    if not jobs:
        return []
    using = request.using
    runs = JobRun.objects.using(using).bulk_create([_new_run(job, request) for job in jobs])
    if any(run.pk is None for run in runs):
        # MySQL returns no ids from a multi-row INSERT (MariaDB does). By job key and token:
        # the token alone has no index, and the run table is the biggest.
        ids = dict(
            JobRun.objects.using(using)
            .filter(job_id__in=[job.pk for job in jobs], lock_token=request.token)
            .values_list("job_id", "pk")
        )
        for run in runs:
            run.pk = ids[run.job_id]  # type: ignore[index]
            run._state.adding, run._state.db = False, using
    return list(zip(jobs, runs, strict=True))
