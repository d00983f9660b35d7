"""Raw SQL helpers of the claiming layer: quoted columns, row readers, batched UPDATEs."""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import Field, JSONField, Model
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.signals import post_init, pre_init
from django.db.models.sql import UpdateQuery

from ..db import sqlite_now_sql

M = TypeVar("M", bound=Model)


_COLUMNS: dict[tuple[type[Model], str], dict[str, str]] = {}


def _hot_psycopg(connection: Any) -> Any:
    """The psycopg 3 connection under `connection` when the worker's hot statements may use
    it directly: PostgreSQL, nobody watching the queries through Django's cursor (DEBUG's
    log, a test's capture, an execute_wrapper), psycopg 3 (not psycopg2). Else None."""
    watched = connection.queries_logged or connection.execute_wrappers
    if connection.vendor != "postgresql" or watched:
        return None
    connection.ensure_connection()
    raw = connection.connection
    return raw if hasattr(raw, "prepare_threshold") else None


@contextlib.contextmanager
def bound_cursor(connection: Any) -> Iterator[Any]:
    """A cursor for the worker's hot statements (the claim, the outcomes).

    On PostgreSQL with psycopg 3 its parameters travel apart from the SQL (server-side
    binding): Django's cursor quotes every value into the statement's text, which for the
    claim's and the outcomes' arrays cost the claim loop as much Python as reading the rows.
    The statement is prepared only if the project turned prepared statements on
    (OPTIONS["prepare_threshold"]; Django leaves them off for connection poolers).
    Errors are Django's, as from any cursor. Elsewhere, while Django logs queries (DEBUG, a
    test capturing them) and while execute wrappers watch them, it is Django's own cursor.
    """
    raw = _hot_psycopg(connection)
    if raw is None:
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg

    _read_binary_json_as_text(raw)  # before the cursor copies the connection's loaders
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        yield cursor


def fetch_all(connection: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    """Run one of the worker's hot statements through bound_cursor() and return its rows.

    On psycopg 3 the parameters and the rows travel in binary: arrays are packed, not
    quoted, and timestamps are read by psycopg's C loader instead of parsing their text in
    Python (together about a fifth of the claim loop's time at thousands of jobs a second).
    JSON columns still arrive as text, as Django's JSONField reads them.
    """
    cursor: Any
    with bound_cursor(connection) as cursor:
        if hasattr(cursor, "db"):  # Django's cursor
            cursor.execute(sql, params)
        else:
            cursor.execute(_binary_placeholders(sql), params, binary=True)
        return list(cursor.fetchall())


def fetch_together(connection: Any, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
    """Run several hot statements in one transaction; the rows of each, in order.

    On PostgreSQL with psycopg 3 in autocommit (see bound_cursor()) they go as one
    pipeline: sent at once, answered at once, committed once. The statements before a
    pipeline's sync run in one implicit transaction, so an error in any rolls back all.
    Elsewhere, or inside the caller's transaction, they run one after the other in an
    atomic block, with the same outcome.
    """
    raw = _hot_psycopg(connection)
    if raw is None or connection.in_atomic_block or not _pipelines(raw):
        with transaction.atomic(using=connection.alias):
            return [fetch_all(connection, sql, params) for sql, params in statements]
    import psycopg

    _read_binary_json_as_text(raw)
    with connection.wrap_database_errors, contextlib.ExitStack() as stack:
        cursors = [stack.enter_context(psycopg.Cursor(raw)) for _ in statements]
        with raw.pipeline():
            for cursor, (sql, params) in zip(cursors, statements, strict=True):
                cursor.execute(_binary_placeholders(sql), params, binary=True)
        return [list(cursor.fetchall()) for cursor in cursors]


def _pipelines(raw: Any) -> bool:
    """Whether this psycopg and its libpq can pipeline (psycopg 3.1 and libpq 14 on)."""
    import psycopg

    pipeline = getattr(psycopg, "Pipeline", None)
    return bool(raw.autocommit and pipeline is not None and pipeline.is_supported())


@functools.lru_cache(maxsize=256)
def _binary_placeholders(sql: str) -> str:
    """`sql` with each %s placeholder as %b: psycopg then sends that parameter in binary
    (%s lets it choose, and it chooses text for lists); "%%s" is a literal and stays."""
    return re.sub(r"(?<!%)%s", "%b", sql)


_BINARY_JSON_READY: weakref.WeakSet[Any] = weakref.WeakSet()


def _read_binary_json_as_text(raw: Any) -> None:
    """Have `raw` (a psycopg connection) return jsonb in binary rows as its JSON text, as
    Django registers it for text rows (JSONField.from_db_value parses it). Django's own
    cursors ask for text rows only, so nothing else on the connection changes."""
    if raw in _BINARY_JSON_READY:
        return
    from psycopg import DataError
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class JsonbTextBinaryLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> str:
            if bytes(data[:1]) != b"\x01":
                raise DataError("unknown jsonb binary format version")
            return bytes(data[1:]).decode()

    raw.adapters.register_loader("jsonb", JsonbTextBinaryLoader)
    _BINARY_JSON_READY.add(raw)


@functools.cache
def concrete_field(model: type[Model], name: str) -> Field[Any, Any]:
    """A concrete field of `model` (get_field() may also return a reverse relation); looked
    up once per model and name, since the outcome writer asks for each field of each row."""
    found = model._meta.get_field(name)
    assert isinstance(found, Field), name
    return found


def column_name(f: Field[Any, Any]) -> str:
    assert f.column is not None
    return f.column


def quoted_columns(model: type[Model], connection: Any) -> dict[str, str]:
    """Field name -> quoted column name (quoting depends only on the vendor)."""
    key = (model, connection.vendor)
    columns = _COLUMNS.get(key)
    if columns is None:
        quote = connection.ops.quote_name
        columns = _COLUMNS[key] = {f.name: quote(f.column) for f in model._meta.concrete_fields}
    return columns


def from_row(model: type[M], using: str, attnames: list[str], values: Sequence[Any]) -> M:
    """What model.from_db() makes from a row of every concrete field, without running
    Model.__init__ for each claimed job and run, or each new job of schedule_many(), when no
    pre_init/post_init receiver would see it and no attribute needs a descriptor to be set
    (Django's positional __init__ then only sets each attname, as here). `attnames` names
    every concrete field of `model`, in any order."""
    if not _plain_attributes(model) or (
        (pre_init.receivers or post_init.receivers)
        and (pre_init.has_listeners(model) or post_init.has_listeners(model))
    ):
        return model.from_db(using, attnames, values)
    instance = model.__new__(model)
    instance.__dict__.update(zip(attnames, values, strict=True))
    state = instance._state = ModelState()
    state.adding = False
    state.db = using
    return instance


@functools.cache
def _plain_attributes(model: type[Model]) -> bool:
    """Whether no concrete field's attribute sits behind a data descriptor (a FileField's,
    say), which __init__ would set through the descriptor rather than the instance's
    __dict__.

    A foreign key's own (a run's `job_id`) counts as plain: it differs from a write to the
    instance's __dict__ only by dropping a cached related object, which a new instance has
    not."""
    return not any(
        _sets_through(inspect.getattr_static(model, field.attname, None))
        for field in model._meta.concrete_fields
    )


def _sets_through(descriptor: Any) -> bool:
    return hasattr(descriptor, "__set__") and type(descriptor) is not ForeignKeyDeferredAttribute


_READERS: weakref.WeakKeyDictionary[Any, dict[type[Model], Any]] = weakref.WeakKeyDictionary()


def row_reader(model: type[M], connection: Any, using: str) -> Callable[[Sequence[Any]], M]:
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
        problems = []
        for number, col, found in converters:
            value = converted[number]
            try:
                for converter in found:
                    value = converter(value, col, connection)
            except Exception as exc:  # RecursionError from deep JSON, a bad date, ...
                # One row a worker cannot decode must not cost it the batch, nor the lock of
                # the others: the row comes back with the reason, to be failed on its own.
                problems.append(f"{attnames[number]}: {type(exc).__name__}: {str(exc)[:200]}")
                value = None
            converted[number] = value
        instance = from_row(model, using, attnames, converted)
        if problems:
            instance.decode_error = "; ".join(problems)  # type: ignore[attr-defined]
        return instance

    cached[model] = read
    return read


_NOW_SQL = {
    "postgresql": "SELECT STATEMENT_TIMESTAMP()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": f"SELECT {sqlite_now_sql()}",
}


def database_now(using: str) -> datetime:
    """The database's clock now, as an aware UTC datetime (one round trip)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_NOW_SQL[connection.vendor], [])  # [] reads "%%" as "%"
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def qualified_column(model: type[Model], name: str, connection: Any) -> str:
    qn = connection.ops.quote_name
    return f"{qn(model._meta.db_table)}.{qn(column_name(concrete_field(model, name)))}"


def _set_clause(
    model: type[Model], sample: dict[str, Any], connection: Any
) -> tuple[list[str], dict[str, list[Any]]]:
    """SET assignments: "%s" per plain value; expressions (F() + 1) compiled with their params."""
    query = UpdateQuery(model)
    compiler = query.get_compiler(connection=connection)
    assignments, expression_params = [], {}
    for name, value in sample.items():
        column = connection.ops.quote_name(column_name(concrete_field(model, name)))
        if hasattr(value, "resolve_expression"):
            sql, params = compiler.compile(
                value.resolve_expression(query, allow_joins=False, for_save=True)
            )
            assignments.append(f"{column} = {sql}")
            expression_params[name] = list(params)
        else:
            assignments.append(f"{column} = %s")
    return assignments, expression_params


def _shared_or_varying_sets(
    model: type[Model],
    rows: Sequence[tuple[dict[str, Any], list[Any]]],
    connection: Any,
    *,
    first_alias: int,
    qualify: bool,
) -> tuple[list[str], list[Any], list[tuple[str, str, Field[Any, Any]]]]:
    """SET assignments for rows that write the same fields, and their parameters.

    Expressions are compiled, a value every row shares is one parameter, and a value that
    differs by row is read from column `v.<alias>` of the rows' values; those columns are
    returned as (alias, field name, field), aliases numbered from `first_alias`.
    """
    qn = connection.ops.quote_name
    query = UpdateQuery(model)
    compiler = query.get_compiler(connection=connection)
    sets: list[str] = []
    set_params: list[Any] = []
    varying: list[tuple[str, str, Field[Any, Any]]] = []
    for name, value in rows[0][0].items():
        model_field = concrete_field(model, name)
        target = qn(model_field.column)
        if qualify:
            target = f"{qn(model._meta.db_table)}.{target}"
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
            alias = f"v{first_alias + len(varying)}"
            varying.append((alias, name, model_field))
            sets.append(f"{target} = v.{alias}")
    return sets, set_params, varying


def update_each(
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
    conditions = [f"{qn(column_name(concrete_field(model, name)))} = %s" for name in where]
    sql = (
        f"UPDATE {qn(model._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)}"
    )
    fields = [concrete_field(model, name) for name in rows[0][0]]
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
    """update_each() for MySQL/MariaDB, whose executemany() sends one UPDATE per row: a
    single multi-table UPDATE joined to the rows' values (a derived table of UNION ALLs)."""
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    keys = [name for name, shared in where.items() if shared is None]
    sets, set_params, varying = _shared_or_varying_sets(
        model, rows, connection, first_alias=len(keys), qualify=True
    )
    columns = [f"k{n}" for n in range(len(keys))] + [alias for alias, _, _ in varying]
    derived, derived_params = [], []
    for number, (fields, key_values) in enumerate(rows):
        cells = [*key_values]
        cells += [f.get_db_prep_save(fields[name], connection) for _, name, f in varying]
        if number == 0:
            derived.append("SELECT " + ", ".join(f"%s AS {alias}" for alias in columns))
        else:
            derived.append("SELECT " + ", ".join(["%s"] * len(columns)))
        derived_params += cells
    on = " AND ".join(
        f"{table}.{qn(column_name(concrete_field(model, name)))} = v.k{n}"
        for n, name in enumerate(keys)
    )
    shared = [(name, value) for name, value in where.items() if value is not None]
    conditions = " AND ".join(
        f"{table}.{qn(column_name(concrete_field(model, name)))} = %s" for name, _ in shared
    )
    sql = (
        f"UPDATE {table} JOIN ({' UNION ALL '.join(derived)}) AS v ON {on} "
        f"SET {', '.join(sets)}" + (f" WHERE {conditions}" if conditions else "")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*derived_params, *set_params, *(value for _, value in shared)])
        return int(cursor.rowcount)


def unnest_update(
    model: type[Model],
    rows: Sequence[tuple[dict[str, Any], list[Any]]],
    keys: Sequence[str],
    shared_conditions: dict[str, Any],
    connection: Any,
) -> tuple[str, list[Any]]:
    """UPDATE rows identified by per-row `keys`, with per-row or shared values (PostgreSQL)."""
    qn = connection.ops.quote_name
    columns, arrays = [], []
    for number, name in enumerate(keys):
        columns.append((f"k{number}", concrete_field(model, name)))
        arrays.append([key_values[number] for _, key_values in rows])
    sets, set_params, varying = _shared_or_varying_sets(
        model, rows, connection, first_alias=len(keys), qualify=False
    )
    for alias, name, model_field in varying:
        columns.append((alias, model_field))
        arrays.append([_pg_value(model_field, fields[name], connection) for fields, _ in rows])
    unnest = ", ".join(f"%s::{f.db_type(connection)}[]" for _, f in columns)
    aliases = ", ".join(alias for alias, _ in columns)
    conditions = [
        f"{qualified_column(model, name, connection)} = v.k{n}" for n, name in enumerate(keys)
    ]
    conditions += [
        f"{qualified_column(model, name, connection)} = %s" for name in shared_conditions
    ]
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
