"""Upsert the recurring definitions declared in code into the database, one row per name."""

from __future__ import annotations

import logging

from django.utils import timezone

from .models import RECURRING_KEY_PREFIX, Job, JobState
from .registry import Registry, registry
from .schedules import get_timezone, next_run

logger = logging.getLogger(__name__)


def recurring_key(name: str) -> str:
    return RECURRING_KEY_PREFIX + name


def sync_recurring(using: str = "default", definitions: Registry = registry) -> int:
    """Create or update the row of every recurring definition; returns how many rows changed.

    The row's next run is kept as it is unless the schedule or timezone changed, so a run
    missed while no worker was up is still due and fires once (the misfire rule). A row whose
    schedule was changed in the admin (schedule_overridden) keeps that schedule and timezone.
    """
    changed = 0
    now = timezone.now()
    for definition in definitions.recurring():
        assert definition.schedule is not None
        wanted = {
            "name": definition.name,
            "queue": definition.queue,
            "priority": definition.priority,
            "max_attempts": definition.max_attempts,
            "schedule": definition.schedule.expression,
            "timezone": definition.timezone,
        }
        first_run = next_run(
            definition.schedule, scheduled_at=None, now=now, tz=get_timezone(definition.timezone)
        )
        key = recurring_key(definition.name)
        row = Job.objects.using(using).filter(unique_key=key).first()
        if row is None:
            _, created = Job.objects.using(using).create_job(
                unique_key=key, next_run_at=first_run, **wanted
            )
            if created:  # else another worker starting at the same moment created it
                changed += 1
                logger.info("Added recurring job %r (%s)", definition.name, wanted["schedule"])
            continue
        if row.schedule_overridden:
            # A schedule changed in the admin wins over the code's until it is set back to it.
            wanted = {k: v for k, v in wanted.items() if k not in ("schedule", "timezone")}
        changes = {k: v for k, v in wanted.items() if getattr(row, k) != v}
        if not changes:
            continue
        query = Job.objects.using(using).filter(pk=row.pk)
        if {"schedule", "timezone"} & changes.keys():
            # Only a waiting row moves to the new schedule; a running one gets it when it finishes.
            query.filter(state=JobState.SCHEDULED).update(next_run_at=first_run)
        query.update(updated_at=now, **changes)
        changed += 1
        logger.info("Updated recurring job %r: %s", definition.name, ", ".join(sorted(changes)))
    return changed
