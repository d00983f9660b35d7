"""Bulk work beyond a page: retry or delete every job of a filtered list, batch by batch.

Django's "Select all N" (select_across) hands an action the list's whole queryset. For retry
and delete_finished that queryset is not loaded: a confirmation page counts the jobs the
action applies to (states.ACTIONS), then the action walks them by primary key, BATCH_SIZE ids
at a time, each batch one short transaction whose UPDATE or DELETE states the rule again, so
a job that a worker claimed (or someone retried) meanwhile is skipped, never touched. One
admin LogEntry records the whole change and its count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.forms import BooleanField
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..models import Job, JobQuerySet

if TYPE_CHECKING:
    from .jobs import JobAdmin

BATCH_SIZE = 1000  # jobs per transaction: each batch's locks are held for milliseconds
# The list's own filters and search, as the log entry and the confirmation page name them.
FILTER_PARAMS = ("state", "name", "queue", "finished", "q")
TEMPLATE = "admin/django_jobs/job/bulk.html"


@dataclass(frozen=True)
class BulkAction:
    """An action of states.ACTIONS applied to a set of jobs by one statement per batch."""

    name: str  # its name in states.ACTIONS: its states and its permission
    title: Any  # a lazy translation
    change: Callable[[JobQuerySet], int]  # the JobQuerySet method; returns how many changed
    question: Callable[[int], str]  # the confirmation for n jobs, with %(count)s, %(which)s
    done: Callable[[int], str]  # the success message for n jobs
    verb: str  # the log entry's, in English as every log message: "Retried"
    flag: int  # the LogEntry action flag
    confirm: Any  # the confirmation button


BULK_ACTIONS: dict[str, BulkAction] = {
    action.name: action
    for action in [
        BulkAction(
            "retry",
            gettext_lazy("Retry failed jobs"),
            lambda jobs: jobs.retry(),
            lambda n: ngettext(
                "This retries %(count)s failed job %(which)s. Continue?",
                "This retries %(count)s failed jobs %(which)s. Continue?",
                n,
            ),
            lambda n: ngettext(
                "Retried %(count)s failed job.", "Retried %(count)s failed jobs.", n
            ),
            "Retried",
            CHANGE,
            gettext_lazy("Yes, retry them"),
        ),
        BulkAction(
            "delete_finished",
            gettext_lazy("Delete finished jobs"),
            lambda jobs: jobs.delete_finished(),
            lambda n: ngettext(
                "This deletes %(count)s finished job %(which)s. Continue?",
                "This deletes %(count)s finished jobs %(which)s. Continue?",
                n,
            ),
            lambda n: ngettext(
                "Deleted %(count)s finished job.", "Deleted %(count)s finished jobs.", n
            ),
            "Deleted",
            DELETION,
            gettext_lazy("Yes, delete them"),
        ),
    ]
}


def count_text(count: int) -> str:
    return number_format(count, force_grouping=True)


def selects_across(request: HttpRequest) -> bool:
    """Whether the list's "Select all N" is on, read as Django's action form reads it."""
    return bool(BooleanField(required=False).clean(request.POST.get("select_across")))


def filter_text(request: HttpRequest, selected: int | None) -> str:
    """The jobs acted on, as the log keeps them: "matching state=failed&name=refund-order"."""
    if selected is not None:
        text = ngettext("among %(count)s selected job", "among %(count)s selected jobs", selected)
        return text % {"count": count_text(selected)}
    parts = [f"{key}={value}" for key in FILTER_PARAMS for value in request.GET.getlist(key)]
    if not parts:
        return _("of the whole list")
    return _("matching %(filters)s") % {"filters": "&".join(parts)}


def run_batches(
    jobs: QuerySet[Job],
    action: BulkAction,
    *,
    up_to: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Apply `action` to the jobs it may start from among `jobs`, BATCH_SIZE at a time, in
    primary key order up to `up_to`; returns how many changed. `on_batch(changed, last_id)`
    is called after each batch."""
    db = jobs.db
    rows = cast(JobQuerySet, jobs).allowing(action.name).order_by("pk")
    if up_to is not None:
        rows = rows.filter(pk__lte=up_to)
    ids_of = rows.values_list("pk", flat=True)
    changed, after = 0, None
    while True:
        # Keyset: each batch starts past the last id, never at an OFFSET, and runs outside any
        # transaction of the request (ATOMIC_REQUESTS aside), so each commits on its own.
        batch = list((ids_of if after is None else ids_of.filter(pk__gt=after))[:BATCH_SIZE])
        if not batch:
            return changed
        after = batch[-1]
        changed += action.change(Job.objects.using(db).filter(pk__in=batch))
        if on_batch is not None:
            on_batch(changed, after)


def bulk_view(
    model_admin: JobAdmin, request: HttpRequest, queryset: QuerySet[Job], name: str
) -> HttpResponse | None:
    """The bulk action `name` over the list's selection or whole filter: first a page with the
    count, then, once confirmed, the batches and one log entry."""
    action = BULK_ACTIONS[name]
    whole = selects_across(request)
    selected = None if whole else len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
    which = filter_text(request, selected)
    if request.POST.get("post") == "yes":
        counted = _number(request.POST.get("counted"))
        up_to = _number(request.POST.get("up_to"))
        if counted is not None and up_to is not None:
            # The log entry is written first and follows each batch, so a request cut short
            # (a proxy's timeout) still leaves the count of what it changed.
            entry = LogEntry.objects.create(
                user_id=cast(int, request.user.pk),
                content_type_id=ContentType.objects.get_for_model(Job).pk,
                object_id=None,
                object_repr=f"jobs {which}"[:200],
                action_flag=action.flag,
                change_message=progress_log(action, which, 0, counted),
            )

            def logged(changed: int, last_id: int) -> None:
                LogEntry.objects.filter(pk=entry.pk).update(
                    change_message=progress_log(action, which, changed, counted)
                )

            changed = run_batches(queryset, action, up_to=up_to, on_batch=logged)
            report(request, action, which, changed, counted, entry)
            return None
    matching = cast(JobQuerySet, queryset).allowing(action.name).order_by()
    count = matching.count()
    if not count:
        messages.warning(request, nothing_message(action))
        return None
    up_to = matching.order_by("-pk").values_list("pk", flat=True).first()
    context = {
        **model_admin.page_context(request, str(action.title), [("", str(action.title))]),
        "question": action.question(count) % {"count": count_text(count), "which": which},
        "confirm": action.confirm,
        "action": name,
        "counted": count,
        "up_to": up_to,
        "whole": whole,
        # Django's list runs an action only with ticked ids, even when all are selected.
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "deleting": action.flag == DELETION,
        "batch_size": count_text(BATCH_SIZE),
        "form_url": request.get_full_path(),  # the list's filters choose the jobs again
        "back_url": request.get_full_path(),
    }
    return TemplateResponse(request, TEMPLATE, context)


def nothing_message(action: BulkAction) -> str:
    if action.name == "retry":
        return _("None of these jobs can be retried: only failed jobs are.")
    return _(
        "None of these jobs can be deleted: only finished jobs (succeeded, failed or "
        "cancelled) are, and never a recurring job declared in the code."
    )


def jobs_text(count: int) -> str:
    """A count of jobs in the log's English: "1 job", "12,345 jobs"."""
    return f"{count:,} job" if count == 1 else f"{count:,} jobs"


def progress_log(action: BulkAction, which: str, changed: int, counted: int) -> str:
    return (
        f"{action.verb} {changed:,} of the {counted:,} jobs counted {which} so far; the "
        "request stopped before its end if this entry still says so."
    )


def report(
    request: HttpRequest,
    action: BulkAction,
    which: str,
    changed: int,
    counted: int,
    entry: LogEntry,
) -> None:
    """The message of a bulk action, and its one LogEntry's final words, with the count."""
    skipped = max(0, counted - changed)
    if changed:
        messages.success(request, action.done(changed) % {"count": count_text(changed)})
        log = f"{action.verb} {jobs_text(changed)} {which}."
        if skipped:
            log += f" Skipped {skipped:,} that changed meanwhile."
        LogEntry.objects.filter(pk=entry.pk).update(
            object_repr=f"{jobs_text(changed)} {which}"[:200], change_message=log
        )
    else:
        entry.delete()  # nothing changed: nothing to log
    if skipped:
        messages.info(
            request,
            ngettext(
                "Skipped %(skipped)s of the %(counted)s jobs counted: it changed meanwhile (a "
                "worker took it, or someone else acted on it) and was left as it was.",
                "Skipped %(skipped)s of the %(counted)s jobs counted: they changed meanwhile "
                "(a worker took them, or someone else acted on them) and were left as they "
                "were.",
                skipped,
            )
            % {"skipped": count_text(skipped), "counted": count_text(counted)},
        )


def _number(value: str | None) -> int | None:
    """A count or an id posted back by the confirmation page; None when it is not one."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)
