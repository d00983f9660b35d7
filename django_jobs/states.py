"""Job states, run outcomes, and the one table of which action is allowed from which state.

The model's state changes, the admin's buttons and bulk actions, and the API all read
`ACTIONS` here, so a rule such as "a running one-off job cannot be cancelled" is written once.
No ORM here beyond the choices classes, so the table is importable from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from django.db import models
from django.utils.translation import gettext_lazy as _


class JobState(models.TextChoices):
    SCHEDULED = "scheduled", _("scheduled")  # waiting for next_run_at; due once it has passed
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class RunOutcome(models.TextChoices):
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    ORPHANED = "orphaned", _("orphaned (worker lost)")
    INTERRUPTED = "interrupted", _("interrupted (worker stopped)")
    TIMED_OUT = "timed_out", _("timed out")
    CANCELLED = "cancelled", _("cancelled")


# Why a running job is asked to stop (worker/stopping.py): its timeout passed, or someone
# cancelled it. Job.check_stop() words its error by it.
STOP_TIMEOUT = "timeout"
STOP_CANCEL = "cancel"

FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ALL_STATES = frozenset(JobState)


class _JobLike(Protocol):
    state: str
    schedule: str
    enabled: bool


@dataclass(frozen=True)
class ActionRule:
    """Which states an action starts from (one-off and recurring jobs), and its permission."""

    one_off: frozenset[str]
    recurring: frozenset[str]
    permission: str  # the codename of the Django permission that guards it

    def states(self, *, recurring: bool) -> frozenset[str]:
        return self.recurring if recurring else self.one_off


ACTIONS: dict[str, ActionRule] = {
    # A recurring job runs now as a one-off copy, so its own state does not matter.
    "run_now": ActionRule(
        one_off=frozenset({JobState.SCHEDULED, *FINISHED_STATES}),
        recurring=ALL_STATES,
        permission="run_job",
    ),
    "retry": ActionRule(
        one_off=frozenset({JobState.FAILED}),
        recurring=frozenset({JobState.FAILED}),
        permission="run_job",
    ),
    # A recurring job's schedule may change while it runs: it applies from the next slot.
    "reschedule": ActionRule(
        one_off=frozenset({JobState.SCHEDULED, JobState.FAILED}),
        recurring=frozenset({JobState.SCHEDULED, JobState.FAILED}),
        permission="reschedule_job",
    ),
    "change_schedule": ActionRule(
        one_off=frozenset(),
        recurring=frozenset({JobState.SCHEDULED, JobState.RUNNING, JobState.FAILED}),
        permission="reschedule_job",
    ),
    "disable": ActionRule(one_off=ALL_STATES, recurring=ALL_STATES, permission="change_job"),
    "enable": ActionRule(one_off=ALL_STATES, recurring=ALL_STATES, permission="change_job"),
    # Cancel deletes a waiting job; a running job is never interrupted by it...
    "cancel": ActionRule(
        one_off=frozenset({JobState.SCHEDULED}),
        recurring=frozenset({JobState.SCHEDULED}),
        permission="delete_job",
    ),
    # ... that takes asking its worker to stop it, with a permission of its own.
    "cancel_running": ActionRule(
        one_off=frozenset({JobState.RUNNING}),
        recurring=frozenset({JobState.RUNNING}),
        permission="cancel_running_job",
    ),
    # Deleting keeps to finished jobs: a waiting one is cancelled, a running one never goes.
    # (A recurring row the code declares is kept whatever its state: recurring.declared_in_code.)
    "delete_finished": ActionRule(
        one_off=FINISHED_STATES, recurring=FINISHED_STATES, permission="delete_job"
    ),
}


def allowed_states(action: str, *, recurring: bool) -> frozenset[str]:
    """The states `action` may start from."""
    return ACTIONS[action].states(recurring=recurring)


def allows(action: str, job: _JobLike) -> bool:
    """Whether `action` may be applied to `job` in its current state."""
    if action == "disable" and not job.enabled:
        return False
    if action == "enable" and job.enabled:
        return False
    return job.state in allowed_states(action, recurring=bool(job.schedule))


def permission(action: str, app_label: str = "django_jobs") -> str:
    """The full permission name (app_label.codename) that guards `action`."""
    return f"{app_label}.{ACTIONS[action].permission}"
