"""The job actions shared by the list's bulk actions and the job page's buttons.

Which state each action starts from and which permission guards it are written once, in
django_jobs.states.ACTIONS; the admin reads that table for its buttons and permissions. Each
action calls one state change of the Job model (run_now, retry, reschedule, ...), which
refuses a job in the wrong state with JobStateError; the refusal is reported per job and the
other jobs go on. Every change leaves an admin LogEntry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.admin.models import DELETION, LogEntry
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..exceptions import JobsError, JobStateError
from ..models import Job, JobState
from ..states import allowed_states
from . import display

if TYPE_CHECKING:
    from ..forms import RescheduleForm
    from .jobs import JobAdmin

ACTION_LIMIT = 1000  # jobs one action may change; more are refused, so a request stays short
ERRORS_SHOWN = 10  # refusals reported one by one; the rest are summed up
# The buttons of the job page and the bulk actions of the list, in their order; each is an
# action of states.ACTIONS (reschedule also covers a recurring job's change_schedule).
BUTTONS = (
    "run_now",
    "retry",
    "reschedule",
    "disable",
    "enable",
    "cancel",
    "cancel_running",
    "delete_finished",
)


@dataclass(frozen=True)
class JobAction:
    """An action of states.ACTIONS: the model method it calls, and what it reports."""

    name: str  # its name in states.ACTIONS, which gives its permission
    label: Any  # a lazy translation
    # Calls the model method with the job and the user name of who asked (for the actions
    # that record it); returns the log message.
    change: Callable[[Job, str], str]
    done: Callable[[int], str]  # the success message for n jobs
    skip: Callable[[Job], bool] | None = None  # jobs already as wanted: not touched
    skipped: Callable[[int], str] | None = None  # the message for n skipped jobs


def _run_now(job: Job, by: str) -> str:
    created = job.run_now()
    if created.pk != job.pk:
        job.one_off_copy = created  # type: ignore[attr-defined]  # for apply(): its log, its link
        return f"Ran now as one-off job #{created.pk}; the schedule is unchanged."
    return "Ran now."


def _retry(job: Job, by: str) -> str:
    job.retry()
    return "Retried."


def _disable(job: Job, by: str) -> str:
    job.disable()
    return "Disabled."


def _enable(job: Job, by: str) -> str:
    job.enable()
    return "Enabled."


def _cancel_running(job: Job, by: str) -> str:
    job.cancel_running(by=by)
    return "Asked its worker to stop it (cancel run)."


ACTIONS: dict[str, JobAction] = {
    action.name: action
    for action in [
        JobAction(
            "run_now",
            gettext_lazy("Run now"),
            _run_now,
            lambda n: ngettext("%(count)d job will run now.", "%(count)d jobs will run now.", n),
        ),
        JobAction(
            "retry",
            gettext_lazy("Retry"),
            _retry,
            lambda n: ngettext(
                "%(count)d failed job will run again.", "%(count)d failed jobs will run again.", n
            ),
        ),
        JobAction(
            "disable",
            gettext_lazy("Disable"),
            _disable,
            lambda n: ngettext("Disabled %(count)d job.", "Disabled %(count)d jobs.", n),
            skip=lambda job: not job.enabled,
            skipped=lambda n: ngettext(
                "%(count)d job was already disabled.", "%(count)d jobs were already disabled.", n
            ),
        ),
        JobAction(
            "enable",
            gettext_lazy("Enable"),
            _enable,
            lambda n: ngettext("Enabled %(count)d job.", "Enabled %(count)d jobs.", n),
            skip=lambda job: job.enabled,
            skipped=lambda n: ngettext(
                "%(count)d job was already enabled.", "%(count)d jobs were already enabled.", n
            ),
        ),
        JobAction(
            "cancel_running",
            gettext_lazy("Cancel run"),
            _cancel_running,
            lambda n: ngettext(
                "Asked the worker to stop %(count)d running job; its run is recorded as "
                "cancelled when it stops.",
                "Asked the workers to stop %(count)d running jobs; each run is recorded as "
                "cancelled when it stops.",
                n,
            ),
        ),
    ]
}


def reschedule_rule(form: RescheduleForm) -> str:
    """The action of states.ACTIONS a valid reschedule form applies."""
    return "change_schedule" if form.cleaned_data.get("schedule") is not None else "reschedule"


def reschedule_action(form: RescheduleForm) -> JobAction:
    """The reschedule action, with the new time or schedule from the form."""
    return JobAction(
        reschedule_rule(form),
        gettext_lazy("Reschedule"),
        lambda job, by: form.apply(job),
        lambda n: ngettext("Rescheduled %(count)d job.", "Rescheduled %(count)d jobs.", n),
    )


def limited(request: HttpRequest, jobs: QuerySet[Job]) -> list[Job] | None:
    """The jobs to act on, or None (with an error message) when there are too many."""
    # "Select all" can mean a million rows: load one more than the limit, never all of them.
    selected = list(jobs[: ACTION_LIMIT + 1])
    if len(selected) > ACTION_LIMIT:
        messages.error(
            request,
            _(
                "An action changes at most %(limit)s jobs at a time; narrow the selection "
                "with the filters or the search."
            )
            % {"limit": f"{ACTION_LIMIT:,}"},
        )
        return None
    return selected


def apply(
    model_admin: JobAdmin,
    request: HttpRequest,
    jobs: Iterable[Job],
    action: JobAction,
) -> int:
    """Run the action on every job, log each change, report successes and refusals."""
    changed, skipped, errors = 0, 0, []
    for job in jobs:
        if action.skip is not None and action.skip(job):
            skipped += 1
            continue
        try:
            log_message = action.change(job, request.user.get_username())
        except Job.DoesNotExist:
            errors.append(_("Job #%(id)s no longer exists.") % {"id": job.pk})
        except JobsError as exc:
            errors.append(str(exc))
        except (RecursionError, ValueError) as exc:
            # Raised where a change reads the job's stored JSON (a recurring job's run-now
            # copy takes its data) and Python cannot decode it.
            errors.append(unreadable(job, exc))
        else:
            model_admin.log_change(request, job, log_message)
            changed += 1
            copy = getattr(job, "one_off_copy", None)
            if copy is not None:
                report_copy(model_admin, request, job, copy)
    if changed:
        messages.success(request, action.done(changed) % {"count": changed})
    if skipped and action.skipped is not None:
        messages.info(request, action.skipped(skipped) % {"count": skipped})
    report_errors(request, errors)
    return changed


def report_copy(model_admin: JobAdmin, request: HttpRequest, job: Job, copy: Job) -> None:
    """Run now on a recurring job made a one-off copy: log its creation, and link to it."""
    model_admin.log_addition(request, copy, f"Created by Run now of recurring job #{job.pk}.")
    url = reverse(
        f"{model_admin.admin_site.name}:{copy._meta.app_label}_{copy._meta.model_name}_change",
        args=[copy.pk],
    )
    text = _("%(job)s runs now as the one-off job %(link)s; its schedule is unchanged.")
    link = format_html('<a href="{}">{}</a>', url, copy)
    messages.success(request, mark_safe(text % {"job": conditional_escape(str(job)), "link": link}))


def unreadable(job: Job, exc: BaseException) -> str:
    message = _("Job %(job)s was left as it was: its stored data cannot be used, since %(reason)s.")
    return message % {"job": job, "reason": display.unreadable_reason(exc)}


def report_errors(request: HttpRequest, errors: list[str]) -> None:
    for error in errors[:ERRORS_SHOWN]:
        messages.error(request, error)
    hidden = len(errors) - ERRORS_SHOWN
    if hidden > 0:
        messages.error(
            request,
            ngettext(
                "%(count)d more job was refused for the same kind of reason.",
                "%(count)d more jobs were refused for the same kind of reasons.",
                hidden,
            )
            % {"count": hidden},
        )


def cancel_jobs(request: HttpRequest, jobs: Iterable[Job]) -> int:
    """Cancel (delete) waiting jobs; a running job is refused, since a thread cannot be killed."""
    cancelled, errors = 0, []
    for job in jobs:
        try:
            job.cancel()
        except Job.DoesNotExist:
            errors.append(_("Job #%(id)s no longer exists.") % {"id": job.pk})
        except JobStateError as exc:
            errors.append(str(exc) if job.declared_in_code else f"{exc} {cancel_hint(job)}")
        except JobsError as exc:
            errors.append(str(exc))
        except (RecursionError, ValueError) as exc:
            errors.append(unreadable(job, exc))  # see apply()
        else:
            log_deletion(request, job)
            cancelled += 1
    if cancelled:
        messages.success(
            request,
            ngettext(
                "Cancelled and deleted %(count)d job.",
                "Cancelled and deleted %(count)d jobs.",
                cancelled,
            )
            % {"count": cancelled},
        )
    report_errors(request, errors)
    return cancelled


def cancel_hint(job: Job) -> str:
    """Which states a job may be cancelled from (states.ACTIONS), and why not while running."""
    hint = _("Only %(states)s jobs can be cancelled.") % {"states": cancel_states(job.recurring)}
    if job.state == JobState.RUNNING:
        hint += " " + _(
            "To stop a running job, use Cancel run on its page (permission "
            "cancel_running_job); disable it to stop its later runs."
        )
    return hint


def cancel_states(*recurring: bool) -> str:
    """The states cancel starts from for these kinds of job, in words: "scheduled or failed"."""
    allowed = set().union(*(allowed_states("cancel", recurring=kind) for kind in recurring))
    labels = [str(state.label) for state in JobState if state in allowed]
    if len(labels) <= 1:
        return "".join(labels) or _("no")
    return _("%(states)s or %(last)s") % {"states": ", ".join(labels[:-1]), "last": labels[-1]}


def log_deletion(request: HttpRequest, job: Job, message: str = "Cancelled.") -> Any:
    """A DELETION LogEntry for a cancelled or deleted job (ModelAdmin.log_deletions takes no
    message)."""
    return LogEntry.objects.log_actions(
        user_id=cast(int, request.user.pk),
        queryset=[job],
        action_flag=DELETION,
        change_message=message,
        single_object=True,
    )
