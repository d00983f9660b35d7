"""Waking idle workers when jobs become due (PostgreSQL LISTEN/NOTIFY; elsewhere they poll)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from .. import notify
from ..conf import settings


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
    if not notify.supported(using):
        return
    names = sorted(set(queues))
    transaction.on_commit(lambda: notify.send(using, names), using=using, robust=True)
