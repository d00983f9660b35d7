"""PostgreSQL LISTEN/NOTIFY: wake idle workers the moment a job becomes due.

Only the claiming package and worker.py import this module, so the rest of the app never assumes
PostgreSQL. NOTIFY is sent after the scheduling transaction commits (PostgreSQL itself holds
it back until then too); a worker LISTENs on a connection of its own, outside Django's
connection handling, and sets its wake-up event for every notification of a queue it serves.
Polling stays the fallback: a lost notification costs at most one poll interval.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DatabaseError, connections

logger = logging.getLogger(__name__)

CHANNEL = "django_jobs"
ALL_QUEUES = "*"  # the payload that wakes every worker, whatever queues it serves
RECONNECT_BACKOFF_MAX = 30.0  # seconds between attempts to reach a database that is down
WAIT_STEP = 0.25  # seconds; how often the listener looks at its stop flag while idle
PING_EVERY = 30.0  # seconds; an idle LISTEN connection is checked this often


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


def send(using: str, queues: Sequence[str]) -> None:
    """NOTIFY the workers of `queues` now (call it after the commit that made jobs due)."""
    payloads = sorted(set(queues)) or [ALL_QUEUES]
    try:
        with connections[using].cursor() as cursor:
            # One statement however many queues: a round trip is the whole cost.
            cursor.execute(
                "SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q", [CHANNEL, payloads]
            )
    except DatabaseError as exc:
        # The job is stored; an idle worker finds it at its next poll instead.
        logger.warning("Could not notify workers of new jobs (%s); they will poll.", exc)


class Listener:
    """A thread that LISTENs on its own psycopg connection and calls `wake` for each NOTIFY.

    It reconnects with a back-off after the connection is lost (a database restart,
    pg_terminate_backend) and calls `wake` after reconnecting, since notifications sent
    while it was away are gone.
    """

    def __init__(
        self,
        using: str,
        wake: Callable[[], None],
        queues: Sequence[str] = (),
        name: str = "django_jobs-listen",
    ) -> None:
        self.using = using
        self.wake = wake
        self.queues = set(queues)
        self._stop = threading.Event()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.connected = threading.Event()  # set while LISTEN is in place (tests wait on it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _connect(self) -> Any:
        import psycopg

        params = dict(connections[self.using].get_connection_params())
        # Django's own cursor class and adapters are not needed to receive notifications.
        for key in ("cursor_factory", "context", "prepare_threshold", "pool"):
            params.pop(key, None)
        conn = psycopg.connect(**params, autocommit=True)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _wanted(self, payload: str) -> bool:
        return not self.queues or payload == ALL_QUEUES or payload in self.queues

    def _run(self) -> None:
        import psycopg

        failures = 0
        while not self._stop.is_set():
            try:
                self._conn = self._connect()
            except psycopg.Error as exc:
                failures += 1
                delay = min(0.1 * 2**failures, RECONNECT_BACKOFF_MAX)
                logger.warning(
                    "Cannot LISTEN for new jobs (%s); retrying in %.1fs (polling meanwhile).",
                    exc,
                    delay,
                )
                self._stop.wait(delay)
                continue
            if failures:
                logger.info("Listening for new jobs again.")
                self.wake()  # whatever was notified while we were away
            failures = 0
            self.connected.set()
            try:
                self._listen(self._conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    failures = 1
                    logger.warning("Lost the LISTEN connection (%s); reconnecting.", exc)
                    self._stop.wait(0.1)
            finally:
                self.connected.clear()
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()

    def _listen(self, conn: Any) -> None:
        idle = 0.0
        while not self._stop.is_set():
            heard = False
            for notify in conn.notifies(timeout=WAIT_STEP):
                heard = True
                if self._wanted(notify.payload):
                    self.wake()
            if heard:
                idle = 0.0
                continue
            idle += WAIT_STEP
            if idle >= PING_EVERY:
                # A connection that died without a word (host gone) is only found by using it.
                conn.execute("SELECT 1")
                idle = 0.0
