"""PostgreSQL LISTEN/NOTIFY: wake idle workers the moment a job becomes due.

The rest of the app wakes workers through wake_workers() here and never assumes PostgreSQL.
NOTIFY is sent after the scheduling transaction commits (PostgreSQL itself holds it back
until then too). A worker LISTENs on the connection its claim loop claims with, and
sleeps on that connection's socket and on its own wake-up pipe at once: a notification wakes
the very thread, and the very database backend, that runs the claim, with no hand-over
between threads or connections on the way (W2 in docs/performance.md).
Polling stays the fallback: a lost notification costs at most one poll interval.

Behind a pooler in transaction mode (PgBouncer), NOTIFY still works (it is sent in a
transaction of its own) but a LISTEN on a pooled connection hears nothing, since the session
is not kept. DJANGO_JOBS["LISTEN_DATABASE"] says where workers listen: None, on the
connection they claim with; an alias, on a connection of their own to PostgreSQL itself;
False, nowhere: they poll, and say so when they start.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from .conf import raw_settings, settings

logger = logging.getLogger(__name__)

CHANNEL = "django_jobs"
ALL_QUEUES = "*"  # the payload that wakes every worker, whatever queues it serves
STOP = "django_jobs:stop"  # the payload that says a running job was cancelled: look now
LISTEN_RETRY_MIN = 1.0  # seconds before a failed LISTEN_DATABASE connection is tried again
LISTEN_RETRY_MAX = 30.0  # seconds; the delay doubles up to this while it keeps failing


def _postgresql(using: str) -> bool:
    """True if `using` is PostgreSQL with psycopg 3 (NOTIFY works through a pooler too)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return False
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def listen_alias(using: str) -> str | None:
    """The alias whose connection a worker of `using` LISTENs on; None if it polls."""
    choice = settings.LISTEN_DATABASE
    if choice is False or not _postgresql(using):
        return None
    alias = choice if isinstance(choice, str) else using
    if alias not in django_settings.DATABASES or not _postgresql(alias):
        return None  # reported by the system check django_jobs.E008
    return alias


def supported(using: str) -> bool:
    """True if workers of `using` can be woken by LISTEN/NOTIFY; the worker asks at start.

    PostgreSQL with psycopg 3, unless DJANGO_JOBS["LISTEN_DATABASE"] is False (a pooler in
    transaction mode holds no LISTEN): then the worker polls, and this logs the line that
    says so.
    """
    if not _postgresql(using):
        return False
    if listen_alias(using) is None:
        logger.info(
            "Not listening for new jobs: DJANGO_JOBS['LISTEN_DATABASE'] is %r, so idle "
            "workers poll for them. Behind PgBouncer in transaction mode, name a direct "
            "PostgreSQL connection there to wake workers at once.",
            settings.LISTEN_DATABASE,
        )
        return False
    return True


@register(Tags.compatibility)
def check_listen_database(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """LISTEN_DATABASE is None, False, or the alias of a PostgreSQL database."""
    value = raw_settings().get("LISTEN_DATABASE")
    name = "DJANGO_JOBS['LISTEN_DATABASE']"
    if value is None or value is False:
        return []
    if not isinstance(value, str):
        return [
            Error(
                f"{name} is {value!r}.",
                hint="Use None (listen on the connection workers claim with), False (do not "
                "listen: workers poll, e.g. behind PgBouncer in transaction mode), or the alias "
                "of a direct PostgreSQL connection in DATABASES.",
                id="django_jobs.E008",
            )
        ]
    if value not in django_settings.DATABASES:
        return [
            Error(
                f"{name} is {value!r}, which is not in DATABASES.",
                hint=f"Use one of: {', '.join(django_settings.DATABASES)}; or False to poll.",
                id="django_jobs.E008",
            )
        ]
    vendor = connections[value].vendor
    if vendor != "postgresql":
        return [
            Error(
                f"{name} is {value!r}, a {vendor} database, and only PostgreSQL can LISTEN.",
                hint="Name an alias that connects to the PostgreSQL server of "
                "DJANGO_JOBS['DATABASE'] directly (not through the pooler), or use False to "
                "poll.",
                id="django_jobs.E008",
            )
        ]
    return []


def wake_workers(using: str, queues: Iterable[str], due_at: datetime | None = None) -> None:
    """After the current transaction commits, wake idle workers of `queues` (PostgreSQL).

    Called when jobs become due now, or within a poll interval (`due_at`), so a sleeping
    worker claims them at once, or learns the time to wake at. Elsewhere workers poll.
    """
    if wanted(using, due_at):
        names = sorted(set(queues))
        transaction.on_commit(lambda: send(using, names), using=using, robust=True)


def wanted(using: str, due_at: datetime | None = None) -> bool:
    """Whether a job due at `due_at` (None: now) wakes idle workers: NOTIFY is on, `using`
    is PostgreSQL, and the job is due before a sleeping worker's next poll."""
    if not settings.NOTIFY:
        return False
    if due_at is not None:
        horizon = timezone.now() + timedelta(seconds=settings.POLL_INTERVAL)
        if due_at > horizon:
            return False  # a worker's next poll comes before it is due
    return _postgresql(using)


def ask_to_stop(using: str) -> None:
    """After the current transaction commits, tell workers (PostgreSQL) that a running job
    was cancelled, so the one running it looks now rather than at its next heartbeat."""
    if settings.NOTIFY and _postgresql(using):
        transaction.on_commit(lambda: send(using, [STOP]), using=using, robust=True)


def send(using: str, queues: Sequence[str]) -> None:
    """NOTIFY the workers of `queues` now (call it after the commit that made jobs due)."""
    payloads = sorted(set(queues)) or [ALL_QUEUES]
    try:
        with connections[using].cursor() as cursor:
            # One statement however many queues: a round trip is the whole cost.
            if len(payloads) == 1:
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payloads[0]])
            else:
                cursor.execute(
                    "SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q", [CHANNEL, payloads]
                )
    except DatabaseError as exc:
        # The job is stored; an idle worker finds it at its next poll instead.
        logger.warning("Could not notify workers of new jobs (%s); they will poll.", exc)


class Wakeup:
    """A threading.Event the claim loop can wait on together with a database socket.

    set() may be called from any thread, and from a signal handler. Once open(), it also
    sends a byte on a socket pair, so a select() on the pair and a database socket returns
    at once; close() closes the pair.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._receiver: socket.socket | None = None
        self._sender: socket.socket | None = None
        self._selecting = False  # True while wait() may be in select(): set() must send
        self._sent = False  # bytes may wait in the pair: clear() reads them

    def open(self) -> None:
        self._receiver, self._sender = socket.socketpair()
        self._receiver.setblocking(False)
        self._sender.setblocking(False)

    def close(self) -> None:
        for end in (self._receiver, self._sender):
            if end is not None:
                end.close()  # a later set() gets OSError from the closed socket, and ignores it

    def set(self) -> None:
        self._event.set()
        # Only a wait in select() needs the byte (a system call for every ended job
        # otherwise): wait() marks itself selecting before it looks at the event, so a
        # set() that finds it not selecting has set the event before that look.
        if self._selecting and self._sender is not None:
            self._sent = True
            # Full (the waiter has plenty to wake it already), or closed: nothing to do.
            with contextlib.suppress(OSError):
                self._sender.send(b"\0")

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        # The event first: a set() between the two leaves it set, and wait() looks at it first.
        self._event.clear()
        if self._sent and self._receiver is not None:
            self._sent = False  # a byte sent after this only wakes the next wait early
            with contextlib.suppress(OSError):  # nothing more to read
                while self._receiver.recv(4096):
                    pass

    def wait(self, timeout: float, fileno: int | None = None) -> bool:
        """Sleep until set(), until `fileno` has data, or for `timeout` seconds.

        Returns True if `fileno` has data to read (the event may be set as well). Waiting on
        `fileno` needs open().
        """
        if fileno is None:
            self._event.wait(timeout)
            return False
        assert self._receiver is not None, "open() the Wakeup to wait on a socket"
        self._selecting = True
        try:
            if self._event.is_set():
                return False
            watched = [self._receiver.fileno(), fileno]
            ready, _, _ = select.select(watched, [], [], max(timeout, 0.0))
        finally:
            self._selecting = False
        return fileno in ready


class ClaimListener:
    """LISTEN for new jobs, and read what arrives; the claim loop sleeps on fileno().

    By default it listens on the claim loop's own Django connection: PostgreSQL delivers
    notifications between statements, so those that arrive while the claim loop runs a query
    reach on_notify() through psycopg, and heard() reads those that came while it slept.
    With DJANGO_JOBS["LISTEN_DATABASE"] naming another alias (PostgreSQL itself, when the
    jobs database goes through a pooler), it listens on a psycopg connection of its own to
    that alias, which runs nothing but LISTEN.

    A new connection (after a database restart, a dropped connection) does not listen until
    listen() is called again; notifications sent in between are lost, so after it the
    caller looks for due jobs before sleeping.
    """

    def __init__(self, using: str, queues: Sequence[str] = ()) -> None:
        self.using = using
        self.queues = set(queues)
        self.listen_using = listen_alias(using) or using
        self.dedicated = self.listen_using != using
        self._raw: Any = None
        self._pending = False
        self.stop_heard = False  # a STOP arrived: the worker checks its jobs' cancel requests
        self._retry_at = 0.0  # time.monotonic() before which a failed connection is not retried
        self._retry_delay = LISTEN_RETRY_MIN
        self._idle: tuple[socket.socket, socket.socket] | None = None  # see fileno()
        if self.dedicated:
            logger.info(
                "Listening for new jobs on the database %r (DJANGO_JOBS['LISTEN_DATABASE']); "
                "claiming them on %r.",
                self.listen_using,
                using,
            )

    def listen(self) -> bool:
        """LISTEN on the current connection; True if it was not listening yet."""
        if self.dedicated:
            if self._raw is not None and not self._raw.closed:
                return False
            if time.monotonic() < self._retry_at:
                return False  # the claim loop polls until the retry is due
            try:
                self._raw = self._connect()
            except DatabaseError:
                # PostgreSQL itself is out of reach while the pooler is not: the claim loop
                # polls meanwhile, rather than claiming and failing here in a tight loop.
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(2 * self._retry_delay, LISTEN_RETRY_MAX)
                raise
            self._retry_delay = LISTEN_RETRY_MIN
            return True
        connection = connections[self.using]
        connection.ensure_connection()
        raw = connection.connection
        if raw is self._raw and not raw.closed:
            return False
        raw.add_notify_handler(self.on_notify)
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self._raw = raw
        return True

    def _connect(self) -> Any:
        """A connection of our own to LISTEN_DATABASE, listening; outside Django's handling."""
        import psycopg

        connection = connections[self.listen_using]
        params = connection.get_connection_params()
        with connection.wrap_database_errors:
            raw = psycopg.connect(**params, autocommit=True)
            try:
                raw.execute(f"LISTEN {CHANNEL}")
            except BaseException:
                raw.close()
                raise
        raw.add_notify_handler(self.on_notify)
        return raw

    def fileno(self) -> int:
        """The connection's socket, to wait on for notifications.

        While a LISTEN_DATABASE connection waits to be tried again, a socket that never has
        data, so the caller sleeps its whole timeout: it polls.
        """
        if self._raw is None:
            if self._idle is None:
                self._idle = socket.socketpair()
            return self._idle[0].fileno()
        return int(self._raw.pgconn.socket)

    def on_notify(self, notify: Any) -> None:
        self._note(notify.payload)

    def _note(self, payload: str) -> None:
        if payload == STOP:
            self.stop_heard = True
        elif self._wanted(payload):
            self._pending = True

    def heard(self) -> bool:
        """True if a notification for a queue we serve arrived since the last call.

        Reads what the socket holds without waiting. A connection lost while idle raises the
        database error here, as a query would (the next listen() connects again).
        """
        raw = self._raw
        if raw is None:
            return False  # a LISTEN_DATABASE connection waiting to be tried again
        pgconn = raw.pgconn
        try:
            with connections[self.listen_using].wrap_database_errors:
                pgconn.consume_input()
        except DatabaseError:
            if self.dedicated:
                self._raw = None
                with contextlib.suppress(Exception):
                    raw.close()
            raise
        while (notify := pgconn.notifies()) is not None:
            self._note(notify.extra.decode(errors="replace"))
        pending, self._pending = self._pending, False
        return pending

    def unlisten(self) -> None:
        """Stop listening (the connection may go back to a pool); quiet if it is gone."""
        raw, self._raw = self._raw, None
        idle, self._idle = self._idle, None
        for end in idle or ():
            end.close()
        if raw is None or raw.closed:
            return
        if self.dedicated:
            with contextlib.suppress(Exception):
                raw.close()
            return
        connection = connections[self.using]
        if connection.connection is not raw:
            return
        raw.remove_notify_handler(self.on_notify)
        try:
            with connection.cursor() as cursor:
                cursor.execute("UNLISTEN *")
        except DatabaseError:
            pass

    def _wanted(self, payload: str) -> bool:
        return not self.queues or payload == ALL_QUEUES or payload in self.queues
