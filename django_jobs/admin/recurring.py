"""The recurring jobs page ("cron"), and the next runs of a recurring job (also on its page).

The page reads only the rows that have a schedule (the partial index
django_jobs_recurring_idx on PostgreSQL and SQLite), each with its last run in the same
query, and then the pauses of their names and queues: two queries, whatever the number of
rows. Its buttons post to the job page's own action view (run now, disable, enable), and
pausing goes through pauses.py, as the Pause admin does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from ..conf import settings
from ..exceptions import JobsError
from ..models import Job, JobRun, JobState, Pause, PauseKind
from ..pauses import checked_target, pause_target, resume_target
from ..recurring import RECURRING_KEY_PREFIX, declared_in_code, preview
from ..schedules import get_timezone, parse_schedule
from . import display
from .pauses import PAUSE_PERMISSION

if TYPE_CHECKING:
    from .jobs import JobAdmin

UPCOMING_SHOWN = 5
MAX_ROWS = 500  # recurring rows listed; more would make the page slow and unreadable
TEMPLATE = "admin/django_jobs/job/recurring.html"


# The next runs, with their DST marks (the job page and the recurring jobs page)


def upcoming_runs(job: Job, now: datetime | None = None) -> dict[str, Any] | None:
    """A recurring job's next runs in its timezone, each flagged when a DST change precedes it."""
    if not job.schedule:
        return None
    now = now or timezone.now()
    try:
        schedule, tz = parse_schedule(job.schedule), get_timezone(job.timezone)
    except JobsError as exc:
        return {"error": str(exc), "runs": []}
    runs: list[tuple[datetime, bool]] = []
    after, error = now, ""
    if job.next_run_at is not None and job.state != JobState.RUNNING:
        first = job.next_run_at
        first_offset, now_offset = _offset(first, tz), _offset(now, tz)
        runs.append((first, None not in (first_offset, now_offset) and first_offset != now_offset))
        after = max(first, now)
    try:
        runs += preview(schedule, job.timezone, after=after, count=UPCOMING_SHOWN - len(runs))
    except JobsError as exc:
        error = str(exc)
    except (OverflowError, ValueError):
        error = _("No later run fits in the calendar, which ends with the year 9999.")
    rows = []
    previous_offset = _offset(now, tz)
    for run, dst_change in runs:
        offset = _offset(run, tz)
        rows.append(
            {
                "at": run,
                "local_text": zone_time_text(run, tz),
                "offset": _utc_offset_text(offset),
                "dst_change": dst_change,
                "from_offset": _utc_offset_text(previous_offset),
                "relative": display.relative_text(run, now),
            }
        )
        previous_offset = offset
    return {"timezone": job.timezone, "runs": rows, "error": error}


def zone_time_text(at: datetime, tz: Any) -> str:
    """The instant on the wall clock of `tz`: "Tue 2026-12-01 03:00:00 CET"."""
    try:
        return at.astimezone(tz).strftime("%a %Y-%m-%d %H:%M:%S %Z")
    except (OverflowError, ValueError):
        return display.utc_text(at)  # the zone's wall clock is past the calendar


def _offset(at: datetime, tz: Any) -> timedelta | None:
    """The UTC offset of `tz` at `at`; None where its wall clock is past the calendar's end."""
    try:
        return at.astimezone(tz).utcoffset()
    except (OverflowError, ValueError):
        return None


def _utc_offset_text(offset: Any) -> str:
    if offset is None:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{mins:02d}"


# The page's rows


@dataclass
class RecurringRow:
    job: Job
    name_pause: Pause | None = None
    queue_pause: Pause | None = None
    buttons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        """ "code" (declared in code), "removed" (its definition left the code) or "admin"."""
        job = self.job
        if declared_in_code(job.name, job.unique_key):
            return "code"
        if (job.unique_key or "").startswith(RECURRING_KEY_PREFIX):
            return "removed"
        return "admin"


def recurring_jobs(using: str) -> QuerySet[Job]:
    """Every row with a schedule, by name, each with its last run's id and outcome."""
    last_run = (
        JobRun.objects.using(using).filter(job_id=OuterRef("pk")).order_by("-started_at", "-pk")
    )
    return (
        Job.objects.using(using)
        .recurring()
        .defer("data", "result", "last_traceback", "trace_context")
        .annotate(
            last_run_id=Subquery(last_run.values("pk")[:1]),
            last_run_outcome=Subquery(last_run.values("outcome")[:1]),
        )
        .order_by("name", "pk")
    )


def recurring_rows(using: str) -> tuple[list[RecurringRow], bool]:
    """The page's rows (at most MAX_ROWS), and whether there were more."""
    jobs = list(recurring_jobs(using)[: MAX_ROWS + 1])
    more = len(jobs) > MAX_ROWS
    rows = [RecurringRow(job) for job in jobs[:MAX_ROWS]]
    names = {row.job.name for row in rows}
    queues = {row.job.queue for row in rows}
    pauses: dict[tuple[str, str], Pause] = {}
    if rows:
        for found in Pause.objects.using(using).filter(
            Q(kind=PauseKind.NAME, value__in=names) | Q(kind=PauseKind.QUEUE, value__in=queues)
        ):
            pauses[(found.kind, found.value)] = found
    for row in rows:
        row.name_pause = pauses.get((PauseKind.NAME, row.job.name))
        row.queue_pause = pauses.get((PauseKind.QUEUE, row.job.queue))
    return rows, more


# The views (JobViewsMixin routes to them)


def page_url(model_admin: JobAdmin) -> str:
    return reverse(f"{model_admin.admin_site.name}:django_jobs_job_recurring")


def recurring_view(model_admin: JobAdmin, request: HttpRequest) -> HttpResponse:
    """Every recurring definition: schedule, next and last run, state, buttons, next runs."""
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    site = model_admin.admin_site.name
    rows, more = recurring_rows(settings.DATABASE)
    may_pause = request.user.has_perm(PAUSE_PERMISSION)
    now = timezone.now()
    shown = []
    for row in rows:
        job = row.job
        shown.append(
            {
                "job": job,
                "url": model_admin.job_url(job),
                "origin": row.origin,
                "schedule_words": display.schedule_words(job),
                "next_run": _next_run(row, now),
                "upcoming": upcoming_runs(job, now),
                "last_run": _last_run(site, job, now),
                "state": display.state_badges(job),
                "name_pause": row.name_pause,
                "queue_pause": row.queue_pause,
                "buttons": _buttons(model_admin, request, row, may_pause),
            }
        )
    context = {
        **model_admin.page_context(
            request, _("Recurring jobs"), [("", _("Recurring jobs"))], under_list=False
        ),
        "rows": shown,
        "more": more,
        "max_rows": MAX_ROWS,
        "page_url": page_url(model_admin),
        "list_url": model_admin.changelist_url() + "?state=recurring",
        "pauses_url": reverse(f"{site}:django_jobs_pause_changelist"),
        "overview_url": reverse(f"{site}:django_jobs_job_overview"),
        "queues_url": reverse(f"{site}:django_jobs_job_queues"),
    }
    return TemplateResponse(request, TEMPLATE, context)


def _next_run(row: RecurringRow, now: datetime) -> dict[str, Any] | None:
    job = row.job
    if job.next_run_at is None:
        return None
    try:
        local = zone_time_text(job.next_run_at, get_timezone(job.timezone))
    except JobsError:
        local = display.utc_text(job.next_run_at)
    if not job.enabled:
        when = _("not while disabled")
    elif row.name_pause or row.queue_pause:
        when = _("held back while paused")
    else:
        when = display.relative_text(job.next_run_at, now)
    return {"at": job.next_run_at, "local_text": local, "when": when}


def _last_run(site: str, job: Job, now: datetime) -> dict[str, Any] | None:
    run_id = getattr(job, "last_run_id", None)
    if job.last_started_at is None and run_id is None:
        return None
    outcome = getattr(job, "last_run_outcome", None)
    label = JobRun(outcome=outcome).get_outcome_display() if outcome else ""
    return {
        "started": display.relative_time(job.last_started_at, now),
        "outcome": display.badge(outcome, label) if outcome else "",
        "url": reverse(f"{site}:django_jobs_jobrun_change", args=[run_id]) if run_id else "",
    }


def _buttons(
    model_admin: JobAdmin, request: HttpRequest, row: RecurringRow, may_pause: bool
) -> list[dict[str, Any]]:
    """The buttons this user may use on this row: the job page's own actions, and a pause."""
    job = row.job
    action_url = f"{model_admin.admin_site.name}:django_jobs_job_action"
    buttons: list[dict[str, Any]] = [
        {
            "name": name,
            "label": label,
            "url": reverse(action_url, args=[job.pk, name]),
            "fields": [],
        }
        for name, label in (
            ("run_now", _("Run now")),
            ("disable", _("Disable")),
            ("enable", _("Enable")),
        )
        if model_admin.offers(request, name, job)
    ]
    if may_pause:
        do = "resume" if row.name_pause else "pause"
        buttons.append(
            {
                "name": do,
                "label": _("Resume") if do == "resume" else _("Pause"),
                "url": reverse(f"{model_admin.admin_site.name}:django_jobs_job_recurring_pause"),
                "fields": [("name", job.name), ("do", do)],
            }
        )
    return buttons


def pause_view(model_admin: JobAdmin, request: HttpRequest) -> HttpResponse:
    """POST name=..., do=pause|resume: pause or resume every job of a name (pause_jobs)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not request.user.has_perm(PAUSE_PERMISSION):
        raise PermissionDenied
    do = request.POST.get("do")
    if do not in ("pause", "resume"):
        return HttpResponseBadRequest(_("Say do=pause or do=resume."))
    back = HttpResponseRedirect(page_url(model_admin))
    try:
        what = checked_target(PauseKind.NAME, request.POST.get("name", ""))
    except JobsError as exc:
        messages.error(request, str(exc))
        return back
    using = settings.DATABASE
    existing = Pause.objects.using(using).filter(kind=what.kind, value=what.value).first()
    user_id = cast(int, request.user.pk)
    if do == "pause":
        if existing is not None:
            messages.info(
                request, _("%(what)s was already paused.") % {"what": capfirst(str(what))}
            )
            return back
        made = pause_target(what, by=request.user.get_username(), using=using)
        LogEntry.objects.log_actions(
            user_id, [made], ADDITION, "Paused from the recurring jobs page.", single_object=True
        )
        messages.success(
            request,
            _("Paused %(what)s: no worker claims its jobs until it is resumed.") % {"what": what},
        )
    elif existing is not None and resume_target(what, using=using):
        LogEntry.objects.log_actions(
            user_id,
            [existing],
            DELETION,
            "Resumed from the recurring jobs page.",
            single_object=True,
        )
        messages.success(request, _("Resumed %(what)s; idle workers were woken.") % {"what": what})
    else:
        messages.info(request, _("%(what)s was not paused.") % {"what": capfirst(str(what))})
    return back
