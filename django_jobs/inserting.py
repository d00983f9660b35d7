"""New job rows in one statement each, without Model.save(): the enqueue hot path.

Model.save() compiles its INSERT anew for every row (the compiler, every field's
get_db_prep_save, the client-side quoting of 34 values): two thirds of a now() call before
this module. Here the statement is built once per database vendor and each call prepares only
the values it was given and the defaults that change (created_at, updated_at): the same values
the ORM would insert. The ORM stays the path whenever it would behave differently: a pre_save
or post_save receiver for Job (Model.save() sends them; bulk_create() never does), a computed
value such as DbNow(), or a field the ORM fills itself at save (auto_now).

On PostgreSQL in autocommit (a web request without ATOMIC_REQUESTS), the INSERT, its COMMIT
and the NOTIFY that wakes idle workers travel as one query string: one round trip, and still
two transactions, so the NOTIFY is sent after the job's commit as docs/performance.md explains.
"""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import Field, Model
from django.db.models.signals import post_save, pre_save

from .notify import CHANNEL, wake_workers, wanted

logger = logging.getLogger(__name__)


class _Plan:
    """The INSERT of one model on one connection: its columns and the constant defaults."""

    def __init__(self, model: type[Model], connection: Any) -> None:
        opts = model._meta
        self.pk = opts.pk
        self.fields: list[Field[Any, Any]] = [f for f in opts.concrete_fields if not f.primary_key]
        self.attnames = [opts.pk.attname] + [f.attname for f in self.fields]
        # The ORM fills these itself at save (pre_save): leave such a model to the ORM.
        self.usable = not any(
            getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) for f in self.fields
        )
        # Defaults that are not callables are the same for every row: prepared once.
        self.constants: dict[str, tuple[Any, Any]] = {}
        for f in self.fields:
            if not f.has_default() or not callable(f.default):  # NOT_PROVIDED is a class
                value = f.get_default()
                self.constants[f.attname] = (value, f.get_db_prep_save(value, connection))
        qn = connection.ops.quote_name
        self.db_table = opts.db_table
        self.table = qn(opts.db_table)
        self.columns = ", ".join(qn(f.column) for f in self.fields)
        returns = connection.features.can_return_columns_from_insert  # else: last_insert_id
        self.returning = f"RETURNING {qn(opts.pk.column)}" if returns else ""
        self.types = [f.db_type(connection) for f in self.fields]
        self.json = [f.get_internal_type() == "JSONField" for f in self.fields]
        self.one: dict[tuple[str, ...], tuple[str, list[bool]]] = {}
        self.many: dict[tuple[bool, ...], str] = {}
        self.rows: dict[tuple[str, ...], tuple[str, list[bool]]] = {}
        self.model = model

    def instance(self, using: str, values: list[Any]) -> Model:
        """The saved instance of a new row (its primary key first), as from_db() makes it
        (for 10,000 rows of schedule_many(), Model.__init__ was a fifth of the call)."""
        from .claiming.sql import from_row  # the claiming package imports the models

        return from_row(self.model, using, self.attnames, values)

    def statement(self, keys: tuple[str, ...], connection: Any) -> tuple[str, list[bool]]:
        """The INSERT of a row given the fields `keys`, and which columns it writes as literals.

        The defaults that never change are written into the statement once (on PostgreSQL
        quoted by psycopg; elsewhere the plain ones only), so a call quotes or binds only the
        values it was given.
        """
        cached = self.one.get(keys)
        if cached is None:
            if connection.vendor == "postgresql":
                # A literal's % would read as a placeholder: doubled, it stays one %.
                values, inline = self._placeholders(
                    set(keys),
                    lambda value: connection.ops.compose_sql("%s", [value]).replace("%", "%%"),
                )
            else:
                values, inline = self._placeholders(set(keys), _plain_literal)
            sql = f"INSERT INTO {self.table} ({self.columns}) VALUES ({', '.join(values)})"
            cached = self.one[keys] = (f"{sql} {self.returning}".rstrip(), inline)
        return cached

    def row(self, keys: set[str], connection: Any) -> tuple[str, list[bool]]:
        """The VALUES tuple of one row of a multi-row INSERT (SQLite, MariaDB) whose rows
        give the fields `keys`, and which of its columns are literals: the constant defaults
        simple enough to write without the backend's quoting."""
        key = tuple(sorted(keys))
        cached = self.rows.get(key)
        if cached is None:
            parts, inline = self._placeholders(keys, _plain_literal)
            cached = self.rows[key] = (f"({', '.join(parts)})", inline)
        return cached

    def _placeholders(
        self, keys: set[str], literal_of: Callable[[Any], str | None]
    ) -> tuple[list[str], list[bool]]:
        """Per column, "%s" or the literal a constant default not in `keys` is written as
        (`literal_of` gives None where it cannot be), and which columns are literals."""
        parts, inline = [], []
        for f in self.fields:
            literal = None
            if f.attname not in keys and f.attname in self.constants:
                literal = literal_of(self.constants[f.attname][1])
            parts.append("%s" if literal is None else literal)
            inline.append(literal is not None)
        return parts, inline

    def values(
        self, fields: dict[str, Any], connection: Any, inline: list[bool]
    ) -> tuple[list[Any], list[Any]]:
        """The Python values of a row (self.fields' order), and the parameters of its INSERT:
        the database values of the columns not written as literals."""
        python, params = [], []
        constants = self.constants
        for f, literal in zip(self.fields, inline, strict=True):
            name = f.attname
            if literal:
                python.append(constants[name][0])
                continue
            if name in fields:
                value = fields[name]
                db_value = f.get_db_prep_save(value, connection)
            elif name in constants:
                value, db_value = constants[name]
            else:
                value = f.get_default()
                db_value = f.get_db_prep_save(value, connection)
            python.append(value)
            params.append(db_value)
        return python, params

    def unnest(self, shared_columns: tuple[bool, ...]) -> str:
        """INSERT ... SELECT FROM unnest(arrays): a scalar parameter where `shared_columns`
        says the whole batch has one value, an array of the batch's values elsewhere."""
        sql = self.many.get(shared_columns)
        if sql is None:
            selected, arrays, number = [], [], 0
            for db_type, shared in zip(self.types, shared_columns, strict=True):
                if shared:
                    selected.append(f"%s::{db_type}")
                else:
                    number += 1
                    selected.append(f"c{number}")
                    arrays.append(f"%s::{db_type}[]")
            names = ", ".join(f"c{n}" for n in range(1, number + 1))
            # With every value shared, the number of rows is the one parameter of the source.
            source = (
                f"unnest({', '.join(arrays)}) AS u({names})"
                if arrays
                else "generate_series(1, %s) AS u"
            )
            sql = self.many[shared_columns] = (
                f"INSERT INTO {self.table} ({self.columns}) SELECT {', '.join(selected)} "
                f"FROM {source} {self.returning}"
            )
        return sql


_PLANS: weakref.WeakKeyDictionary[Any, dict[type[Model], _Plan]] = weakref.WeakKeyDictionary()


_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_ .:-]*")


def _plain_literal(value: Any) -> str | None:
    """SQL for a value that reads the same on every backend (no quote, no backslash), else
    None: NULL, a whole number, a boolean as 1 or 0, or plain text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _PLAIN_TEXT.fullmatch(value):
        return f"'{value}'"
    return None


def _plan(model: type[Model], connection: Any) -> _Plan:
    plans = _PLANS.setdefault(connection, {})
    plan = plans.get(model)
    if plan is None:
        plan = plans[model] = _Plan(model, connection)
    return plan


def _computed(fields: dict[str, Any]) -> bool:
    return any(hasattr(value, "resolve_expression") for value in fields.values())


def _one_round_trip(connection: Any) -> bool:
    """Whether the INSERT, its COMMIT and the NOTIFY can go as one query string: PostgreSQL
    with psycopg 3, in autocommit, with nobody watching the queries through Django's cursor
    (DEBUG's log, a test's capture, an execute_wrapper): they get the ORM's two statements."""
    if connection.vendor != "postgresql" or connection.queries_logged:
        return False
    if connection.execute_wrappers or connection.in_atomic_block:
        return False
    if not connection.get_autocommit():
        return False
    # psycopg 3, not psycopg2; and a cursor that can tell the notify's error from the job's.
    return hasattr(connection.connection, "prepare_threshold") and _notify_cursor() is not None


_NOTIFY_CURSOR: list[Any] = []


def _notify_cursor() -> Any:
    """The cursor class of the one query string (None if this psycopg lacks its hook).

    Once the INSERT and the COMMIT succeeded the job is stored: an error of the notify alone
    (its queue full, say) is logged and the job returned, as the ORM path's send() does, so
    a caller never retries a job that was made. psycopg raises for any failed statement of
    a query string, so this checks the results itself (its _check_results() hook).
    """
    if not _NOTIFY_CURSOR:
        import psycopg
        from psycopg.pq import ExecStatus

        if not hasattr(psycopg.ClientCursor, "_check_results"):
            _NOTIFY_CURSOR.append(None)
            return None

        class NotifyAfterCommit(psycopg.ClientCursor):  # type: ignore[type-arg]
            notify_error = ""

            def _check_results(self, results: list[Any]) -> None:
                statuses = [result.status for result in results]
                if statuses == [
                    ExecStatus.TUPLES_OK,
                    ExecStatus.COMMAND_OK,
                    ExecStatus.FATAL_ERROR,
                ]:
                    message = results[2].error_message or b""
                    self.notify_error = message.decode(errors="replace").strip()
                    results = results[:2]
                super()._check_results(results)

        _NOTIFY_CURSOR.append(NotifyAfterCommit)
    return _NOTIFY_CURSOR[0]


def _connect(connection: Any) -> None:
    """What Django's cursor() does first: with CONN_HEALTH_CHECKS, a persistent connection
    that died since the last request is replaced before it is used."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()


def insert_job(model: type[Model], using: str, fields: dict[str, Any]) -> Model | None:
    """Insert one row of `fields` (already checked) and wake workers as the ORM path does;
    None when the ORM must do it (see the module's docstring)."""
    if pre_save.has_listeners(model) or post_save.has_listeners(model) or _computed(fields):
        return None
    connection = connections[using]
    _connect(connection)
    plan = _plan(model, connection)
    if not plan.usable:
        return None
    sql, inline = plan.statement(tuple(fields), connection)
    python, params = plan.values(fields, connection, inline)
    queue = fields.get("queue", "default")
    due_at = fields.get("next_run_at")
    notify = wanted(using, due_at)
    if notify and _one_round_trip(connection):
        with connection.wrap_database_errors:
            pk, notify_error = _insert_and_notify(connection.connection, sql, params, queue)
        if notify_error:
            # The job is stored; an idle worker finds it at its next poll instead.
            logger.warning(
                "Could not notify workers of new jobs (%s); they will poll.", notify_error
            )
    else:
        connection.validate_no_broken_transaction()
        pk = _execute_returning(connection, plan, sql, params)
        if notify:
            wake_workers(using, [queue], due_at=due_at)
    return plan.instance(using, [pk, *python])


def _insert_and_notify(raw: Any, sql: str, params: list[Any], queue: str) -> tuple[Any, str]:
    """The new row's primary key and the notify's error (""), from the INSERT `sql`, a
    COMMIT and the NOTIFY sent as one query string.

    With prepared statements on (OPTIONS["prepare_threshold"], a direct connection), the
    INSERT is prepared on the server once per connection and the query string EXECUTEs it:
    PostgreSQL then neither parses nor plans its 34 columns at each call. A query string of
    several statements cannot be bound on the server, so this is the one way to have both.
    """
    import psycopg

    execute = _prepared(raw, sql)
    if execute is not None:
        try:
            return _send(raw, execute, params, queue)
        except psycopg.errors.InvalidSqlStatementName:
            # Deallocated behind our back (DEALLOCATE ALL, DISCARD ALL): the EXECUTE failed
            # first, so nothing was stored. Prepared again at the next call; this one sends
            # the INSERT's text.
            _PREPARED.pop(raw, None)
    return _send(raw, sql, params, queue)


def _send(raw: Any, insert: str, params: list[Any], queue: str) -> tuple[Any, str]:
    # COMMIT inside a query string ends the implicit transaction of what came before it; the
    # pg_notify() runs in a transaction of its own. If the INSERT fails, PostgreSQL skips the
    # rest and rolls the INSERT back: nobody is woken.
    with _notify_cursor()(raw) as c:
        c.execute(f"{insert}; COMMIT; SELECT pg_notify(%s, %s)", [*params, CHANNEL, queue])
        return c.fetchone()[0], c.notify_error


# Per psycopg connection, the EXECUTE of each INSERT prepared on it, by the INSERT's text;
# None where the server refused a name (a pooler mixing sessions): that connection sends the
# text.
_PREPARED: weakref.WeakKeyDictionary[Any, dict[str, str] | None] = weakref.WeakKeyDictionary()


def _prepared(raw: Any, sql: str) -> str | None:
    """The EXECUTE (same placeholders) of the server-side statement of the INSERT `sql` on
    `raw`, prepared at its first use; None where prepared statements are off (Django's
    default, for poolers)."""
    if raw.prepare_threshold is None:
        return None
    executes = _PREPARED.get(raw, {})
    if executes is None:
        return None
    execute = executes.get(sql)
    if execute is None:
        import psycopg

        name = f"django_jobs_insert_{len(executes) + 1}"
        count = re.findall(r"%%|%s", sql).count("%s")  # placeholders, not a literal's %%
        numbers = iter(range(1, count + 1))
        # The text with $1, $2... for its placeholders, and a literal's doubled % as one.
        text = re.sub(r"%%|%s", lambda m: "%" if m[0] == "%%" else f"${next(numbers)}", sql)
        try:
            raw.execute(f"PREPARE {name} AS {text}", prepare=False)
        except psycopg.errors.DuplicatePreparedStatement:
            _PREPARED[raw] = None
            return None
        execute = executes[sql] = f"EXECUTE {name}({', '.join(['%s'] * count)})"
        _PREPARED[raw] = executes
    return execute


def _execute_returning(connection: Any, plan: _Plan, sql: str, params: Sequence[Any]) -> Any:
    """The new row's primary key; through Django's cursor when an execute_wrapper watches."""
    from .claiming.sql import bound_cursor  # the claiming package imports the models

    cursors = connection.cursor if connection.execute_wrappers else lambda: bound_cursor(connection)
    with cursors() as cursor:
        cursor.execute(sql, params)
        if not plan.returning:
            return connection.ops.last_insert_id(cursor, plan.db_table, plan.pk.column)
        return cursor.fetchone()[0]


def insert_jobs(
    model: type[Model], using: str, rows: list[dict[str, Any]], batch_size: int
) -> list[Model] | None:
    """Insert `rows` (already checked, each with the same keys) with one INSERT per batch
    (PostgreSQL: SELECT FROM unnest(); SQLite and MariaDB: multi-row VALUES), in one
    transaction, then wake workers; None when the ORM's bulk_create() must do it (psycopg2,
    MySQL, computed values)."""
    connection = connections[using]
    _connect(connection)
    postgresql = connection.vendor == "postgresql"
    if postgresql and not hasattr(connection.connection, "prepare_threshold"):
        return None  # psycopg2
    if not postgresql and not connection.features.can_return_rows_from_bulk_insert:
        return None  # MySQL: the ids of a multi-row INSERT are not returned
    plan = _plan(model, connection)
    keys = set(rows[0]) if rows else set()
    if not plan.usable or any(set(row) != keys or _computed(row) for row in rows):
        return None
    build = _batch
    if not postgresql:
        build = _values_batch
        # SQLite binds at most 999 values per statement in Django's reckoning.
        per_row = plan.row(keys, connection)[1].count(False)
        limit = connection.features.max_query_params
        if limit and per_row:
            batch_size = max(1, min(batch_size, limit // per_row))
    created: list[Model] = []
    with transaction.atomic(using=using, savepoint=False), _batches(connection) as send:
        # Each batch is sent before the instances of the one before are built, and the next
        # one's values are ready when its ids are read: Python works while PostgreSQL inserts.
        sent: tuple[Any, list[list[Any]]] | None = None
        for start in [*range(0, len(rows), batch_size), None]:
            ready = (
                None if start is None else build(plan, connection, keys, rows, start, batch_size)
            )
            ids = sent[0]() if sent is not None else []
            if ready is not None:
                sql, params, columns = ready
                ready_ids = send(sql, params)
            if sent is not None:
                instance = plan.instance
                for pk, values in zip(ids, zip(*sent[1], strict=True), strict=True):
                    created.append(instance(using, [pk, *values]))
            sent = None if ready is None else (ready_ids, columns)
        soonest = min((j.next_run_at for j in created if j.next_run_at is not None), default=None)  # type: ignore[attr-defined]
        if soonest is not None:
            wake_workers(using, {j.queue for j in created}, due_at=soonest)  # type: ignore[attr-defined]
    return created


def _batch(
    plan: _Plan, connection: Any, keys: set[str], rows: list[dict[str, Any]], start: int, size: int
) -> tuple[str, list[Any], list[list[Any]]]:
    """The statement and parameters of one batch, and its columns of Python values."""
    batch = rows[start : start + size]
    # Callable defaults (created_at, updated_at) once per batch, as bulk_create() calls them
    # once per instance a moment apart.
    shared = {}
    for f in plan.fields:
        if f.attname not in keys and f.attname not in plan.constants:
            value = f.get_default()
            shared[f.attname] = (value, f.get_db_prep_save(value, connection))
    columns: list[list[Any]] = []
    scalars: list[Any] = []
    arrays: list[list[Any]] = []
    mask = []
    for f, json in zip(plan.fields, plan.json, strict=True):
        name = f.attname
        if name in keys:
            values = [row[name] for row in batch]
            one = _same(values, json)
            if one:
                scalars.append(f.get_db_prep_save(values[0], connection))
            else:
                arrays.append([f.get_db_prep_save(v, connection) for v in values])
        else:
            value, db_value = plan.constants.get(name) or shared[name]
            values = [value] * len(batch)
            one = True
            scalars.append(db_value)
        columns.append(values)
        mask.append(one)
    # The scalars come first in the statement (its SELECT list), then the arrays.
    params = [*scalars, *arrays] if arrays else [*scalars, len(batch)]
    return plan.unnest(tuple(mask)), params, columns


def _values_batch(
    plan: _Plan, connection: Any, keys: set[str], rows: list[dict[str, Any]], start: int, size: int
) -> tuple[str, list[Any], list[list[Any]]]:
    """_batch() for SQLite and MariaDB: one multi-row INSERT ... VALUES ... RETURNING."""
    batch = rows[start : start + size]
    template, inline = plan.row(keys, connection)
    shared = {}
    for f in plan.fields:
        if f.attname not in keys and f.attname not in plan.constants:
            value = f.get_default()
            shared[f.attname] = (value, f.get_db_prep_save(value, connection))
    columns: list[list[Any]] = []
    prepared: list[list[Any]] = []
    for f, literal in zip(plan.fields, inline, strict=True):
        name = f.attname
        if name in keys:
            values = [row[name] for row in batch]
            if not literal:
                prepared.append([f.get_db_prep_save(v, connection) for v in values])
        else:
            value, db_value = plan.constants.get(name) or shared[name]
            values = [value] * len(batch)
            if not literal:
                prepared.append([db_value] * len(batch))
        columns.append(values)
    params = [value for row_values in zip(*prepared, strict=True) for value in row_values]
    sql = (
        f"INSERT INTO {plan.table} ({plan.columns}) VALUES "
        f"{', '.join([template] * len(batch))} {plan.returning}"
    )
    return sql, params, columns


@contextlib.contextmanager
def _batches(connection: Any) -> Iterator[Callable[[str, list[Any]], Callable[[], list[Any]]]]:
    """send(sql, params) -> read_ids(): sends an INSERT ... RETURNING and returns the
    function that reads its ids. In a psycopg pipeline (server-side binding) sending does not
    wait for the statement; with Django's cursor (SQLite, MariaDB, queries logged, an
    execute_wrapper) it does."""
    if (
        connection.vendor != "postgresql"
        or connection.queries_logged
        or connection.execute_wrappers
    ):

        def send_now(sql: str, params: list[Any]) -> Callable[[], list[Any]]:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                ids = [row[0] for row in cursor.fetchall()]
            return lambda: ids

        yield send_now
        return
    import psycopg

    raw = connection.connection
    cursors: list[Any] = []
    with connection.wrap_database_errors:
        try:
            with raw.pipeline():

                def send(sql: str, params: list[Any]) -> Callable[[], list[Any]]:
                    cursor = psycopg.Cursor(raw)
                    cursors.append(cursor)
                    cursor.execute(sql, params)
                    return lambda: [row[0] for row in cursor.fetchall()]

                yield send
        finally:
            for cursor in cursors:
                cursor.close()


def _same(values: list[Any], json: bool) -> bool:
    """Whether every value of a column in the batch is the same one, to be sent once.

    JSON is compared by identity (or as the empty dict): 1 == 1.0 == True within data would
    otherwise store the first row's number for all.
    """
    first = values[0]
    if json:
        if type(first) is dict and not first:
            return all(type(v) is dict and not v for v in values)
        return all(v is first for v in values)
    return all(v is first or (type(v) is type(first) and v == first) for v in values)
