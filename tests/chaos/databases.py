"""The chaos script's database side: a database of its own, the database's clock, cut connections.

Raw SQL is fine here: this is a test tool, and each statement is per vendor on purpose.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

DEFAULT_SERVER_URLS = {
    "postgres": "postgres://postgres@127.0.0.1:5432",
    "mariadb": "mysql://root@127.0.0.1:3306",
}
VENDORS = {"sqlite": "sqlite", "postgres": "postgresql", "mariadb": "mysql"}
# A database the script creates and drops must carry this prefix, so that a typo can never
# drop someone else's database (test_postgres, the suite's test databases, ...).
OWN_DATABASE_PREFIX = "django_jobs_chaos"


def check_own_name(name: str) -> None:
    if not name.startswith(OWN_DATABASE_PREFIX) or not name.replace("_", "").isalnum():
        raise SystemExit(
            f"chaos.py: refusing to create or drop the database {name!r}: its name must start "
            f"with {OWN_DATABASE_PREFIX!r} and hold only letters, digits and underscores."
        )


def database_url(db: str, server_url: str, name: str) -> str:
    """The DATABASE_URL of database `name` on the server of `server_url`."""
    return f"{server_url.rstrip('/')}/{name}"


def _server(server_url: str) -> tuple[str, int, str, str]:
    parts = urlsplit(server_url)
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or 0, parts.username or "", parts.password or ""


def create_database(db: str, server_url: str, name: str) -> None:
    """Create the empty database `name` (dropping a leftover of an earlier run first)."""
    check_own_name(name)
    if db == "postgres":
        _postgres(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _postgres(server_url, f'CREATE DATABASE "{name}"')
    elif db == "mariadb":
        _mariadb(server_url, f"DROP DATABASE IF EXISTS `{name}`")
        _mariadb(
            server_url,
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        )


def drop_database(db: str, server_url: str, name: str) -> None:
    check_own_name(name)
    if db == "postgres":
        # FORCE: a worker the script could not kill must not keep the database alive.
        _postgres(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    elif db == "mariadb":
        _mariadb(server_url, f"DROP DATABASE IF EXISTS `{name}`")


def _postgres(server_url: str, statement: str) -> None:
    import psycopg

    host, port, user, password = _server(server_url)
    with psycopg.connect(
        host=host,
        port=port or 5432,
        user=user or "postgres",
        password=password or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _mariadb(server_url: str, statement: str) -> None:
    import MySQLdb

    host, port, user, password = _server(server_url)
    conn = MySQLdb.connect(
        host=host, port=port or 3306, user=user or "root", password=password, connect_timeout=10
    )
    try:
        conn.cursor().execute(statement)
    finally:
        conn.close()


def db_now() -> datetime:
    """The database's clock, in UTC (on SQLite, this process's clock: it has no other)."""
    from django.db import OperationalError, connection

    for attempt in range(5):
        try:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute("SELECT clock_timestamp()")
                elif connection.vendor == "mysql":
                    cursor.execute("SELECT UTC_TIMESTAMP(6)")
                else:
                    cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
                value = cursor.fetchone()[0]
            break
        except OperationalError:
            if attempt == 4:
                raise
            connection.close()
            time.sleep(0.2)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def cut_connections(rng: random.Random, count: int) -> list[tuple[bool, str]]:
    """Cut `count` random connections to this database but our own: (cut, description) each.

    Every other connection to the database is a worker's: the chaos script's own database
    is private, and the pytest wrapper closes its connection before starting the script.
    """
    from django.db import DatabaseError, connection

    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT pid, client_port, left(query, 40) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' ORDER BY pid",
                [name],
            )
        elif connection.vendor == "mysql":
            cursor.execute(
                "SELECT ID, HOST, LEFT(COALESCE(INFO, COMMAND), 40) "
                "FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> CONNECTION_ID() AND COMMAND <> 'Killed' ORDER BY ID",
                [name],
            )
        else:
            return []
        candidates = list(cursor.fetchall())
    done = []
    for backend, client, doing in rng.sample(candidates, min(count, len(candidates))):
        try:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
                else:
                    cursor.execute("KILL CONNECTION %s", [int(backend)])
        except DatabaseError as exc:  # it ended by itself meanwhile
            done.append((False, f"backend {backend} was gone ({str(exc).strip()[:60]})"))
            continue
        doing = " ".join(str(doing).split())
        done.append((True, f"backend {backend} (client {client}) doing {doing!r}"))
    return done
