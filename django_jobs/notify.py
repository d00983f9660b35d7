"""PostgreSQL LISTEN/NOTIFY: wake idle workers the moment a job becomes due.

The rest of the app wakes workers through wake_workers() here and never assumes PostgreSQL.
NOTIFY is sent after the scheduling transaction commits (PostgreSQL itself holds it back
until then too). A worker LISTENs on the connection its claim loop claims with, and
sleeps on that connection's socket and on its own wake-up pipe at once: a notification wakes
the very thread, and the very database backend, that runs the claim, with no hand-over
between threads or connections on the way (W2 in docs/performance.md).
Polling stays the fallback: a lost notification costs at most one poll interval.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from .conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "django_jobs"
ALL_QUEUES = "*"  # the payload that wakes every worker, whatever queues it serves


def supported(using: str) -> bool:
    """True if the database can wake workers (PostgreSQL with psycopg 3)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return False
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


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
    if not supported(using):
        return
    names = sorted(set(queues))
    transaction.on_commit(lambda: send(using, names), using=using, robust=True)


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
    """LISTEN on the claim loop's own Django connection, and read what arrives on it.

    PostgreSQL delivers notifications between statements: those that arrive while the claim
    loop runs a query reach on_notify() through psycopg, and heard() reads those that came
    while it slept. A new connection (after a database restart, a dropped connection) does
    not listen until listen() is called again; notifications sent in between are lost, so
    after it the caller looks for due jobs before sleeping.
    """

    def __init__(self, using: str, queues: Sequence[str] = ()) -> None:
        self.using = using
        self.queues = set(queues)
        self._raw: Any = None
        self._pending = False

    def listen(self) -> bool:
        """LISTEN on the current connection; True if it was not listening yet."""
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

    def fileno(self) -> int:
        """The connection's socket, to wait on for notifications."""
        return int(self._raw.pgconn.socket)

    def on_notify(self, notify: Any) -> None:
        if self._wanted(notify.payload):
            self._pending = True

    def heard(self) -> bool:
        """True if a notification for a queue we serve arrived since the last call.

        Reads what the socket holds without waiting. A connection lost while idle raises the
        database error here, as a query would.
        """
        pgconn = self._raw.pgconn
        with connections[self.using].wrap_database_errors:
            pgconn.consume_input()
        while (notify := pgconn.notifies()) is not None:
            if self._wanted(notify.extra.decode(errors="replace")):
                self._pending = True
        pending, self._pending = self._pending, False
        return pending

    def unlisten(self) -> None:
        """Stop listening (the connection may go back to a pool); quiet if it is gone."""
        raw, self._raw = self._raw, None
        connection = connections[self.using]
        if raw is None or raw.closed or connection.connection is not raw:
            return
        raw.remove_notify_handler(self.on_notify)
        try:
            with connection.cursor() as cursor:
                cursor.execute("UNLISTEN *")
        except DatabaseError:
            pass

    def _wanted(self, payload: str) -> bool:
        return not self.queues or payload == ALL_QUEUES or payload in self.queues
