"""JobAdmin: the job list with its filters and bulk actions, and the job page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..conf import settings
from ..exceptions import JobsError
from ..forms import RescheduleForm
from ..models import Job, JobRun, JobState
from ..registry import registry
from ..schedules import get_timezone, parse_schedule, upcoming
from . import display
from .actions import ACTIONS, JobAction, apply, cancel_jobs, limited, reschedule_action
from .changelist import BigTableMixin
from .filters import NameFilter, QueueFilter, StateFilter
from .views import JobViewsMixin

RUN_HISTORY_SHOWN = 20  # runs on the job page; the JobRun list has them all
UPCOMING_SHOWN = 5


@admin.register(Job)
class JobAdmin(BigTableMixin, JobViewsMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "state_display",
        "next_run",
        "last_run",
        "last_duration",
        "failure_count",
        "schedule_display",
        "priority",
        "queue",
        "locked_by",
        "progress_display",
    ]
    list_display_links = ["id", "name"]
    list_filter = [StateFilter, NameFilter, QueueFilter]
    search_fields = ["name"]  # and data: see get_search_results
    search_help_text = gettext_lazy("Searches job names and data.")
    # Only columns an index can sort: the primary key, (name, state) and next_run_at.
    sortable_by = ["id", "name", "next_run"]
    list_per_page = 50
    actions = ["run_now", "retry", "reschedule", "disable", "enable", "cancel"]

    class Media:
        css = {"all": ["django_jobs/admin.css"]}

    # Permissions beyond view/add/change/delete, for @admin.action(permissions=[...]).

    def has_run_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.run_job")

    def has_reschedule_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.reschedule_job")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).using(settings.DATABASE)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Keeps Django 6.1's action_location argument; passes it on only when given (5.2 has none).
        kwargs = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **kwargs)
        # Deleting rows by hand would bypass Job.cancel(), which refuses running jobs.
        actions.pop("delete_selected", None)
        return actions

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """Every word must appear in the name or in the data's JSON text."""
        words = [
            unescape_string_literal(word) if word[:1] in "\"'" and word[-1:] == word[:1] else word
            for word in smart_split(search_term)
        ]
        words = [word for word in words if word]
        if not words:
            return queryset, False
        queryset = queryset.alias(data_text=Cast("data", TextField()))
        for word in words:
            queryset = queryset.filter(Q(name__icontains=word) | Q(data_text__icontains=word))
        return queryset, False

    # Columns of the list, also shown on the job page.

    @admin.display(description=gettext_lazy("state"))
    def state_display(self, job: Job) -> SafeString:
        return display.state_badges(job)

    @admin.display(description=gettext_lazy("next run"), ordering="next_run_at")
    def next_run(self, job: Job) -> SafeString | str:
        if job.state == JobState.RUNNING and not job.recurring:
            return display.EMPTY
        return display.relative_time(job.next_run_at)

    @admin.display(description=gettext_lazy("last run"))
    def last_run(self, job: Job) -> SafeString | str:
        return display.relative_time(job.last_started_at)

    @admin.display(description=gettext_lazy("last duration"))
    def last_duration(self, job: Job) -> str:
        return display.format_duration(display.last_duration(job))

    @admin.display(description=gettext_lazy("schedule"))
    def schedule_display(self, job: Job) -> SafeString | str:
        return display.schedule_words(job)

    @admin.display(description=gettext_lazy("progress"))
    def progress_display(self, job: Job) -> SafeString | str:
        return display.progress_bar(job.progress, job.progress_message)

    # The job page: every field read-only; state changes go through the buttons.

    @admin.display(description=gettext_lazy("attempts"))
    def attempts_display(self, job: Job) -> str:
        return _("%(attempts)d of %(max)d") % {"attempts": job.attempts, "max": job.max_attempts}

    @admin.display(description=gettext_lazy("schedule"))
    def schedule_detail(self, job: Job) -> SafeString | str:
        if not job.schedule:
            return display.EMPTY
        words = display.schedule_words(job)
        definition = registry.get(job.name)
        if job.schedule_overridden:
            code = (
                f"{definition.schedule.expression} ({definition.timezone})"
                if definition is not None and definition.schedule is not None
                else _("none")
            )
            return format_html(
                '{} <code>{}</code><br><span class="djj-note">{}</span>',
                words,
                job.schedule,
                _(
                    "Set in the admin; workers keep it. The code declares %(code)s; set that "
                    "schedule again to hand the job back to the code."
                )
                % {"code": code},
            )
        return format_html("{} <code>{}</code>", words, job.schedule)

    @admin.display(description=gettext_lazy("data"))
    def data_display(self, job: Job) -> SafeString:
        return display.pretty_json(job.data)

    @admin.display(description=gettext_lazy("result"))
    def result_display(self, job: Job) -> SafeString:
        return display.pretty_json(job.result)

    @admin.display(description=gettext_lazy("last error"))
    def last_error_display(self, job: Job) -> SafeString | str:
        return display.preformatted(job.last_error)

    @admin.display(description=gettext_lazy("traceback"))
    def last_traceback_display(self, job: Job) -> SafeString | str:
        return display.preformatted(job.last_traceback)

    @admin.display(description=gettext_lazy("progress"))
    def progress_detail(self, job: Job) -> SafeString | str:
        bar = display.progress_bar(job.progress, job.progress_message)
        if job.progress_message:
            return format_html("{} {}", bar, job.progress_message)
        return bar

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> list[Any]:
        job_fields = ["name", "state_display", "enabled", "queue", "priority", "unique_key"]
        if obj is not None and obj.task_backend:
            job_fields.append("task_backend")
        fieldsets: list[Any] = [
            (None, {"fields": job_fields}),
            (
                _("Timing"),
                {
                    "fields": [
                        "next_run",
                        *(["schedule_detail", "timezone"] if obj and obj.schedule else []),
                        "last_run",
                        "last_started_at",
                        "last_finished_at",
                        "last_duration",
                        "created_at",
                        "updated_at",
                    ]
                },
            ),
            (
                _("Attempts and lock"),
                {"fields": ["attempts_display", "failure_count", "locked_by", "locked_until"]},
            ),
        ]
        if obj is not None and obj.progress is not None:
            fieldsets.append((_("Progress"), {"fields": ["progress_detail"]}))
        fieldsets.append((_("Data"), {"fields": ["data_display"]}))
        if obj is not None and obj.result is not None:
            fieldsets.append((_("Result"), {"fields": ["result_display"]}))
        if obj is not None and (obj.last_error or obj.last_traceback):
            fields = ["last_error_class", "last_error_display", "last_traceback_display"]
            fieldsets.append((_("Last error"), {"fields": fields}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        fieldsets = self.get_fieldsets(request, obj)
        return [name for _title, options in fieldsets for name in options["fields"]]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST":
            # Saving the form would write every column, worker-owned ones included.
            return HttpResponseNotAllowed(["GET"])
        return super().change_view(request, object_id, form_url, extra_context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Job | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(self.job_page_context(request, obj))
            context["title"] = _("Job")  # not "Change job": the page changes nothing itself
        return super().render_change_form(request, context, add, change, form_url, obj)

    def job_page_context(self, request: HttpRequest, job: Job) -> dict[str, Any]:
        runs = list(
            JobRun.objects.using(settings.DATABASE)
            .filter(job_id=job.pk)
            .order_by("-started_at", "-pk")[:RUN_HISTORY_SHOWN]
        )
        for run in runs:
            run.duration_text = display.format_duration(run.duration)  # type: ignore[attr-defined]
            run.outcome_badge = display.badge(run.outcome, run.get_outcome_display())  # type: ignore[attr-defined]
        return {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
            "job_buttons": self.job_buttons(request, job),
            "runs": runs,
            "runs_url": reverse(
                f"{self.admin_site.name}:django_jobs_jobrun_changelist",
            )
            + f"?job__id__exact={job.pk}",
            "upcoming": upcoming_runs(job),
        }

    def job_buttons(self, request: HttpRequest, job: Job) -> list[dict[str, Any]]:
        """The buttons this user may use on this job in its current state."""
        running = job.state == JobState.RUNNING
        allowed = {
            "run_now": self.has_run_permission(request) and (job.recurring or not running),
            "retry": self.has_run_permission(request) and job.state == JobState.FAILED,
            "reschedule": self.has_reschedule_permission(request)
            and (job.state in (JobState.SCHEDULED, JobState.FAILED) or job.recurring),
            "disable": self.has_change_permission(request, job) and job.enabled,
            "enable": self.has_change_permission(request, job) and not job.enabled,
            "cancel": self.has_delete_permission(request, job) and job.state == JobState.SCHEDULED,
        }
        url = f"{self.admin_site.name}:django_jobs_job_"
        buttons = []
        for name, ok in allowed.items():
            if not ok:
                continue
            if name == "reschedule":
                href, label = reverse(url + "reschedule", args=[job.pk]), _("Reschedule")
            elif name == "cancel":
                href, label = reverse(url + "delete", args=[job.pk]), _("Cancel")
            else:
                href, label = reverse(url + "action", args=[job.pk, name]), ACTIONS[name].label
            buttons.append({"name": name, "url": href, "label": label, "post": name in ACTIONS})
        return buttons

    # Bulk actions: the same model methods as the buttons.

    def _bulk(self, request: HttpRequest, queryset: QuerySet[Job], action: JobAction) -> None:
        jobs = limited(request, queryset)
        if jobs is not None:
            apply(self, request, jobs, action)

    @admin.action(permissions=["run"], description=gettext_lazy("Run selected jobs now"))
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, ACTIONS["run_now"])

    @admin.action(permissions=["run"], description=gettext_lazy("Retry selected failed jobs"))
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, ACTIONS["retry"])

    @admin.action(permissions=["change"], description=gettext_lazy("Disable selected jobs"))
    def disable(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, ACTIONS["disable"])

    @admin.action(permissions=["change"], description=gettext_lazy("Enable selected jobs"))
    def enable(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, ACTIONS["enable"])

    @admin.action(permissions=["reschedule"], description=gettext_lazy("Reschedule selected jobs"))
    def reschedule(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        jobs = limited(request, queryset)
        if jobs is None:
            return None
        recurring = any(job.recurring for job in jobs)
        if "apply" in request.POST:
            form = RescheduleForm(request.POST, recurring=recurring)
            if form.is_valid():
                apply(self, request, jobs, reschedule_action(form))
                return None
        else:
            zones = {job.timezone for job in jobs if job.recurring}
            form = RescheduleForm(
                recurring=recurring, initial={"timezone": zones.pop() if len(zones) == 1 else ""}
            )
        return self.render_reschedule(request, form, jobs, bulk=True)

    @admin.action(permissions=["delete"], description=gettext_lazy("Cancel selected jobs"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        jobs = limited(request, queryset)
        if jobs is None:
            return None
        if request.POST.get("post") == "yes":
            cancel_jobs(request, jobs)
            return None
        return self.render_cancel(request, jobs, bulk=True)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            # Django ignores an action the user may not use; a forged one is refused outright.
            allowed = self.get_actions(request)
            for name in request.POST.getlist("action"):
                if name in [*self.actions, "delete_selected"] and name not in allowed:
                    raise PermissionDenied
        extra_context = {"title": _("Jobs"), **(extra_context or {})}
        return super().changelist_view(request, extra_context)


def upcoming_runs(job: Job, now: datetime | None = None) -> dict[str, Any] | None:
    """A recurring job's next runs in its timezone, each flagged when a DST change precedes it."""
    if not job.schedule:
        return None
    now = now or timezone.now()
    try:
        schedule, tz = parse_schedule(job.schedule), get_timezone(job.timezone)
        runs: list[tuple[datetime, bool]] = []
        after = now
        if job.next_run_at is not None and job.state != JobState.RUNNING:
            first = job.next_run_at
            runs.append((first, first.astimezone(tz).utcoffset() != now.astimezone(tz).utcoffset()))
            after = max(first, now)
        runs += upcoming(schedule, after=after, tz=tz, count=UPCOMING_SHOWN - len(runs))
    except JobsError as exc:
        return {"error": str(exc), "runs": []}
    rows = []
    previous_offset = now.astimezone(tz).utcoffset()
    for run, dst_change in runs:
        local = run.astimezone(tz)
        offset = local.utcoffset()
        rows.append(
            {
                "at": run,
                "local": local,
                "local_text": local.strftime("%a %Y-%m-%d %H:%M %Z"),
                "offset": _utc_offset_text(offset),
                "dst_change": dst_change,
                "from_offset": _utc_offset_text(previous_offset),
                "relative": display.relative_text(run, now),
            }
        )
        previous_offset = offset
    return {"timezone": job.timezone, "runs": rows, "error": ""}


def _utc_offset_text(offset: Any) -> str:
    if offset is None:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{mins:02d}"
