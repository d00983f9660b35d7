"""Pausing and resuming a queue or a job name: the one home of the rule.

A pause is a row in Pause. The claim statement of every worker tests it in the same
statement that locks the jobs (JobQuerySet.unpaused()), so once pause() has returned no
claim that starts afterwards, on any host, takes a job of that queue or name. Jobs already
running are not touched: they finish, and their retries wait like every other job.
Resuming deletes the row and wakes idle workers at once (NOTIFY on PostgreSQL; elsewhere
they see it at their next poll).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError
from django.db.models import Q

from .conf import settings
from .db import DbNow, write_transaction
from .exceptions import InvalidOption
from .models import Job, Pause, PauseKind
from .notify import wake_workers
from .validation import CANCELLED_BY_MAX_LENGTH, check_job_name, check_queue, check_text, shown

REASON_MAX_LENGTH = 255  # characters (Pause.reason)


@dataclass(frozen=True)
class Target:
    """What a pause holds back: a queue, or every job of a name whatever its queue."""

    kind: PauseKind
    value: str

    def __str__(self) -> str:
        return f"queue {self.value!r}" if self.kind == PauseKind.QUEUE else f"job {self.value!r}"


def target(*, queue: str | None = None, name: str | None = None) -> Target:
    """The checked target of pause()/resume(): exactly one of a queue and a job name."""
    if (queue is None) == (name is None):
        raise InvalidOption(
            "Pass exactly one of queue= and name=, e.g. pause(queue='emails') or "
            "pause(name='send-welcome-email')."
        )
    if queue is not None:
        return checked_target(PauseKind.QUEUE, queue)
    return checked_target(PauseKind.NAME, name)


def checked_target(kind: str, value: object) -> Target:
    """A target from a kind ("queue" or "name") and a value, each checked."""
    if kind == PauseKind.QUEUE:
        return Target(PauseKind.QUEUE, check_queue(value))
    if kind == PauseKind.NAME:
        return Target(PauseKind.NAME, check_job_name(value))
    raise InvalidOption(f"Invalid kind {shown(kind)}. Use 'queue' or 'name'.")


def pause(
    *,
    queue: str | None = None,
    name: str | None = None,
    by: str = "",
    reason: str = "",
    using: str | None = None,
) -> Pause:
    """Stop every worker from claiming jobs of `queue`, or of the job `name`, until resume().

    Pausing what is already paused changes nothing and returns the existing pause.
    """
    return pause_target(target(queue=queue, name=name), by=by, reason=reason, using=using)


def pause_target(
    what: Target, *, by: str = "", reason: str = "", using: str | None = None
) -> Pause:
    fields = {"paused_by": check_text("by", by, CANCELLED_BY_MAX_LENGTH)}
    fields["reason"] = check_text("reason", reason, REASON_MAX_LENGTH)
    db = using or settings.DATABASE
    pauses = Pause.objects.using(db)
    existing = pauses.filter(kind=what.kind, value=what.value).first()
    if existing is not None:
        return existing
    try:
        with write_transaction(db):
            return pauses.create(kind=what.kind, value=what.value, paused_at=DbNow(), **fields)
    except IntegrityError:
        # Paused by someone else between our look and our insert: theirs holds.
        return pauses.get(kind=what.kind, value=what.value)


def resume(*, queue: str | None = None, name: str | None = None, using: str | None = None) -> bool:
    """Let workers claim jobs of `queue`, or of the job `name`, again; wakes idle workers.

    Returns False when it was not paused.
    """
    return resume_target(target(queue=queue, name=name), using=using)


def resume_target(what: Target, *, using: str | None = None) -> bool:
    db = using or settings.DATABASE
    with write_transaction(db):
        deleted, _ = Pause.objects.using(db).filter(kind=what.kind, value=what.value).delete()
        if deleted:
            wake_workers(db, [what.value] if what.kind == PauseKind.QUEUE else [])
    return bool(deleted)


def paused(using: str | None = None) -> list[Pause]:
    """Every pause in force, queues first."""
    return list(Pause.objects.using(using or settings.DATABASE).all())


def held_back(job: Job) -> Pause | None:
    """The pause that keeps `job` from being claimed, if any (for the admin and messages)."""
    db = job._state.db or settings.DATABASE
    return (
        Pause.objects.using(db)
        .filter(Q(kind=PauseKind.QUEUE, value=job.queue) | Q(kind=PauseKind.NAME, value=job.name))
        .first()
    )
