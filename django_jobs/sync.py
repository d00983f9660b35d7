"""Upsert the recurring definitions declared in code into the database, one row per name."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q

from .claiming.sql import database_now
from .db import DbNow
from .models import Job, JobState
from .recurring import RECURRING_KEY_PREFIX, first_run, recurring_key, removed_note
from .registry import JobDefinition, Registry, registry

logger = logging.getLogger(__name__)

__all__ = ["recurring_key", "sync_recurring"]


def sync_recurring(using: str = "default", definitions: Registry = registry) -> int:
    """Create or update the row of every recurring definition; returns how many rows changed.

    The row's next run is kept as it is unless the schedule or timezone changed, so a run
    missed while no worker was up is still due and fires once (the misfire rule). A row whose
    schedule was changed in the admin (schedule_overridden) keeps that schedule and timezone.
    A row whose definition is no longer in the code is disabled, with a note saying why.
    """
    changed = 0
    now = database_now(using)  # first runs follow the database's clock, as every worker write
    for definition in definitions.recurring():
        assert definition.schedule is not None
        changed += _sync_one(using, definition, now)
    changed += _disable_removed(using, definitions)
    return changed


def _sync_one(using: str, definition: JobDefinition, now: datetime) -> int:
    assert definition.schedule is not None
    wanted = {
        "name": definition.name,
        "queue": definition.queue,
        "priority": definition.priority,
        "max_attempts": definition.max_attempts,
        "schedule": definition.schedule.expression,
        "timezone": definition.timezone,
    }
    key = recurring_key(definition.name)
    jobs = Job.objects.using(using)
    row = jobs.filter(unique_key=key).first()
    if row is None:
        _, created = jobs.create_job(
            unique_key=key,
            next_run_at=first_run(definition.schedule, definition.timezone, now),
            **wanted,
        )
        if created:  # else another worker starting at the same moment created it
            logger.info("Added recurring job %r (%s)", definition.name, wanted["schedule"])
        return int(created)
    if row.schedule_overridden:
        # A schedule changed in the admin wins over the code's until it is set back to it.
        wanted = {k: v for k, v in wanted.items() if k not in ("schedule", "timezone")}
    changes = {k: v for k, v in wanted.items() if getattr(row, k) != v}
    if row.note == removed_note(definition.name):
        # Declared again: the row was disabled only because the code had dropped it.
        changes.update(note="", enabled=True)
    if not changes:
        return 0
    query = jobs.filter(pk=row.pk)
    if {"schedule", "timezone"} & changes.keys():
        # Only a waiting row moves to the new schedule; a running one gets it when it finishes.
        query.filter(state=JobState.SCHEDULED).update(
            next_run_at=first_run(definition.schedule, definition.timezone, now)
        )
    query.update(updated_at=DbNow(), **changes)
    logger.info("Updated recurring job %r: %s", definition.name, ", ".join(sorted(changes)))
    if changes.get("enabled"):
        row.refresh_from_db()
        row._wake_workers(due_at=row.next_run_at)
    return 1


def _disable_removed(using: str, definitions: Registry) -> int:
    """Disable the enabled rows of recurring definitions the code no longer declares."""
    declared = [recurring_key(d.name) for d in definitions.recurring()]
    orphans = (
        Job.objects.using(using)
        .filter(unique_key__startswith=RECURRING_KEY_PREFIX, enabled=True)
        .exclude(unique_key__in=declared)
        .exclude(Q(schedule=""))
    )
    disabled = 0
    for pk, name in orphans.values_list("pk", "name"):
        note = removed_note(name)
        disabled += (
            Job.objects.using(using)
            .filter(pk=pk, enabled=True)
            .update(enabled=False, note=note, updated_at=DbNow())
        )
        logger.warning("Recurring job %r (#%s): %s", name, pk, note)
    return disabled
