"""The database's clock and write transactions, shared by every layer (no model imports here).

Every time a worker or the admin writes is the database's, not the host's: hosts with skewed
clocks must agree on due times, locks and worker expiry. On SQLite the "database clock" is
the clock of whichever process runs the statement, since SQLite runs inside each process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db import connections, models, transaction
from django.db.models import ExpressionWrapper
from django.db.models.functions import Now

from .validation import MAX_WHEN, MIN_WHEN

# The range of times a job's next run may take, as validation states it for every entry point;
# the database keeps it too (a check constraint on next_run_at).
EARLIEST_TIME, LATEST_TIME = MIN_WHEN, MAX_WHEN


def sqlite_now_sql(modifier: str = "") -> str:
    """SQLite's clock as SQL for a statement with parameters ("%%" for "%"), `modifier` being
    more of STRFTIME's arguments (", %s" for a parameter such as "+30 seconds").

    SQLite's clock counts milliseconds ("…:05.123") and SQLite compares times as text. Read
    as the last microsecond of its millisecond ("…:05.123999"), it has the six digits Django
    writes, so a time the database wrote equals itself read back, and a job Django scheduled
    "now" at …:05.123456 is due within the millisecond the clock reads …:05.123.
    """
    return f"(STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW'{modifier}) || '999')"


class DbNow(Now):
    """The database's clock in UTC, so hosts with skewed clocks agree on due times and locks."""

    def as_mysql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        # CURRENT_TIMESTAMP is in the session's time zone; Django stores UTC.
        return self.as_sql(compiler, connection, template="UTC_TIMESTAMP(6)", **extra_context)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        # as_sql() formats the template with "%" once more before the statement's parameters.
        template = sqlite_now_sql().replace("%", "%%")
        return self.as_sql(compiler, connection, template=template, **extra_context)


def db_now_plus(seconds: float) -> ExpressionWrapper:
    """The database's clock plus `seconds`."""
    return ExpressionWrapper(
        DbNow() + timedelta(seconds=seconds), output_field=models.DateTimeField()
    )


@contextlib.contextmanager
def write_transaction(using: str) -> Iterator[None]:
    """transaction.atomic() that takes SQLite's write lock when it begins (BEGIN IMMEDIATE).

    Django's default SQLite transactions are DEFERRED: one that reads and then writes while
    another connection writes fails at once with "database is locked", whatever the timeout.
    Taking the write lock up front makes it wait its turn instead, so the app's own writes
    work on Django's default settings (no transaction_mode needed).
    """
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(using=using):
            yield
        return
    connection.ensure_connection()
    configured = connection.transaction_mode  # type: ignore[attr-defined]
    connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]
    try:
        with transaction.atomic(using=using):
            connection.transaction_mode = configured  # type: ignore[attr-defined]
            yield
    finally:
        connection.transaction_mode = configured  # type: ignore[attr-defined]
