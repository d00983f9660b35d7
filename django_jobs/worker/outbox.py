"""Batching outcomes: ended runs wait here until the claim loop writes them, several at once."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from django.db import InterfaceError, OperationalError

from .. import claiming
from .executor import Running

logger = logging.getLogger("django_jobs.worker")


class Outbox:
    """Ended runs waiting to be written in one transaction by finish_many()."""

    def __init__(self, using: str) -> None:
        self.using = using
        self._pending: list[Running] = []
        self._lock = threading.Lock()

    def put(self, entry: Running) -> None:
        with self._lock:
            self._pending.append(entry)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def write(
        self,
        written: Callable[[list[Running]], None],
        finish: Callable[[list[claiming.Outcome]], object] | None = None,
    ) -> None:
        """Write what is pending; `written` gets the entries once their outcomes are stored
        (or refused by the database for good). A lost connection puts them back and raises.

        `finish` writes the batch's outcomes (finish_many() by default; the claim loop's
        also claims in the same transaction). If it fails otherwise, the outcomes are written
        one by one with finish_many(), each in a transaction of its own.
        """
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        if finish is None:
            finish = functools.partial(claiming.finish_many, using=self.using)
        try:
            finish([entry.outcome for entry in batch if entry.outcome])
        except (OperationalError, InterfaceError):
            self._put_back(batch)  # written after the reconnection
            raise
        except Exception:
            # One outcome the database refuses (a DataError, say) must not hold back the
            # others: write them one by one.
            logger.exception("Could not write a batch of %d outcomes.", len(batch))
            self._write_one_by_one(batch, written)
            return
        written(batch)

    def _put_back(self, entries: list[Running]) -> None:
        with self._lock:
            self._pending[:0] = entries

    def _write_one_by_one(
        self, batch: list[Running], written: Callable[[list[Running]], None]
    ) -> None:
        for number, entry in enumerate(batch):
            if entry.outcome is None:
                continue
            try:
                claiming.finish_many([entry.outcome], using=self.using)
            except (OperationalError, InterfaceError):
                written(batch[:number])
                self._put_back(batch[number:])
                raise
            except Exception:
                logger.exception(
                    "Could not record the outcome of job %s; its lock will expire and it will "
                    "be recovered as an orphaned run.",
                    entry.job,
                )
        written(batch)
