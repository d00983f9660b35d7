"""Cluster-wide limits: a job name's concurrency and rate limit, and lock keys.

A job that has one is `limited` (set when its row is created, models.is_limited()) and the
ordinary claim never takes it. claims._claim_limited() claims such jobs one group at a time:
a group is a job name and a lock key (or none). For each group it takes, in one short
transaction:

1. the group's locks: one for the name when its definition has a concurrency or a rate limit,
   one for the lock key; every claim of a limited job takes them, in one order;
2. the count of what the group holds: running jobs whose lock has not expired by the
   database's clock (of the name; of the key), and the starts of the name within its rate
   limit's period (JobRun.started_at, the database's clock);
3. the claim of at most what is left, through the claim of its database.

Because the count and the claim happen under locks that every other count waits for, two
workers never both see the same free slot. The locks, per database:

- PostgreSQL: a transaction-level advisory lock per key (pg_advisory_xact_lock), released at
  commit or rollback, also through PgBouncer in transaction mode;
- MySQL/MariaDB: a named lock (GET_LOCK) taken before the transaction begins, so its reads
  see every claim committed before it, and released after the commit;
- SQLite: the write transaction (BEGIN IMMEDIATE) already lets one claim in at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import DatabaseError, connections
from django.db.models import Count, Min

from ..db import db_now_plus, write_transaction
from ..models import Job, JobRun
from ..registry import registry
from .sql import database_now

GET_LOCK_TIMEOUT = 10  # seconds a MySQL/MariaDB claim waits for a group's named lock
# A start leaves the window just after `period`; SQLite's clock counts in milliseconds.
CLOCK_RESOLUTION = 0.001  # seconds


@dataclass(frozen=True)
class Group:
    """Limited jobs claimed together: one name, one lock key (or None)."""

    name: str
    lock_key: str | None

    def lock_names(self) -> list[str]:
        """The locks a claim of this group takes, in the one order every claim takes them."""
        names = []
        definition = registry.get(self.name)
        if definition is not None and definition.limited:
            names.append(f"name:{self.name}")
        if self.lock_key is not None:
            names.append(f"key:{self.lock_key}")
        return sorted(names)


@dataclass(frozen=True)
class Space:
    """What a group may still start now."""

    allowed: int  # jobs this claim may take
    name_left: int | None  # what the name's limits leave (None: the name has none)
    retry_in: float | None = None  # seconds until the rate limit lets one more start


def _lock_id(using: str, name: str) -> str:
    """A stable digest of a lock name, per database (named locks are per server)."""
    database = str(connections[using].settings_dict.get("NAME", ""))
    return hashlib.sha256(f"{database}\0{name}".encode()).hexdigest()


@contextlib.contextmanager
def group_lock(using: str, group: Group) -> Iterator[bool]:
    """A write transaction holding the group's locks; yields False if they could not be had
    (MySQL/MariaDB: another claim held one for GET_LOCK_TIMEOUT seconds)."""
    connection = connections[using]
    names = group.lock_names()
    if connection.vendor == "mysql" and names:
        taken: list[str] = []
        try:
            with connection.cursor() as cursor:
                for name in names:
                    # "django_jobs:" and 40 hex digits: MySQL refuses names over 64 characters.
                    lock = f"django_jobs:{_lock_id(using, name)[:40]}"
                    cursor.execute("SELECT GET_LOCK(%s, %s)", [lock, GET_LOCK_TIMEOUT])
                    if cursor.fetchone()[0] != 1:
                        yield False
                        return
                    taken.append(lock)
            with write_transaction(using):
                yield True
        finally:
            # A connection that was lost released its named locks with it.
            with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                for lock in taken:
                    cursor.execute("SELECT RELEASE_LOCK(%s)", [lock])
        return
    with write_transaction(using):
        if connection.vendor == "postgresql" and names:
            with connection.cursor() as cursor:
                for name in names:
                    key = int.from_bytes(bytes.fromhex(_lock_id(using, name)[:16]), signed=True)
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        yield True


def room_for(using: str, group: Group, wanted: int) -> Space:
    """How many jobs of `group` may start now (at most `wanted`); call it under group_lock()."""
    jobs = Job.objects.using(using)
    allowed = wanted
    if group.lock_key is not None:
        if jobs.holding_slots().filter(lock_key=group.lock_key).exists():
            return Space(0, None)
        allowed = 1
    definition = registry.get(group.name)
    if definition is None or not definition.limited:
        return Space(allowed, None)
    name_left = wanted
    retry_in = None
    if definition.concurrency is not None:
        running = jobs.holding_slots().filter(name=group.name).count()
        name_left = min(name_left, definition.concurrency - running)
    rate = definition.rate_limit
    if rate is not None and name_left > 0:
        # Starts at the window's edge count too: no window of `period` holds more than count.
        starts = (
            JobRun.objects.using(using)
            .filter(job_name=group.name, started_at__gte=db_now_plus(-rate.period))
            .aggregate(count=Count("pk"), first=Min("started_at"))
        )
        name_left = min(name_left, rate.count - starts["count"])
        if name_left <= 0 and starts["first"] is not None:
            # The oldest start leaves the window first; one more may start then.
            opens_at = starts["first"].timestamp() + rate.period
            retry_in = max(0.0, opens_at - database_now(using).timestamp()) + CLOCK_RESOLUTION
    name_left = max(name_left, 0)
    return Space(min(allowed, name_left), name_left, retry_in)
