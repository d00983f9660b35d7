"""JobAdmin: the job list with its filters and bulk actions, and the job page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
)
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import alerts, states
from ..conf import settings
from ..forms import RescheduleForm
from ..models import Job, JobRun, JobState
from ..pauses import held_back
from ..registry import registry
from . import display
from .actions import (
    ACTIONS,
    BUTTONS,
    JobAction,
    apply,
    cancel_jobs,
    limited,
    reschedule_action,
    reschedule_rule,
)
from .bulk import bulk_view, selects_across
from .changelist import BigTableMixin
from .filters import FinishedFilter, NameFilter, QueueFilter, StateFilter
from .live import LIVE_SECONDS, buttons_key
from .recurring import upcoming_runs
from .search import JOB_SEARCH_HELP, search_jobs
from .views import JobViewsMixin

RUN_HISTORY_SHOWN = 20  # runs on the job page; the JobRun list has them all
# Read as text, and only on the job page (see JobAdmin.get_object): a row whose JSON Python
# cannot decode (nested 1,000 deep, a 5,000-digit number) still lists, opens and changes.
STORED_JSON = ("data", "result")


def _exact_time_field(name: str) -> Any:
    """A read-only field of the job page showing the instant in `name`, whatever its year."""

    def field(model_admin: JobAdmin, job: Job) -> str:
        return display.exact_time_or_empty(getattr(job, name))

    field.__name__ = f"{name}_display"
    model_field = Job._meta.get_field(name)
    assert isinstance(model_field, models.Field)
    return admin.display(description=model_field.verbose_name)(field)


@admin.register(Job)
class JobAdmin(BigTableMixin, JobViewsMixin, admin.ModelAdmin):
    # Eight columns, so that the list fits beside the admin's navigation sidebar at 1,400 px:
    # the worker and progress of a running job are under its state, a run's duration under
    # its time, a priority other than 0 under the queue.
    list_display = [
        "id",
        "name",
        "state_column",
        "next_run",
        "last_run_column",
        "failure_count",
        "schedule_display",
        "queue_column",
    ]
    list_display_links = ["id", "name"]
    list_filter = [StateFilter, NameFilter, QueueFilter, FinishedFilter]
    # While "finished" filters, its rows come latest finish first (its partial index,
    # migration 0015), unless the user sorts by a column (admin/changelist.py).
    filter_orderings = {FinishedFilter.parameter_name: "last_finished_at"}
    search_fields = ["name"]  # shows the box; get_search_results reads it (admin/search.py)
    search_help_text = JOB_SEARCH_HELP
    # Only columns an index can sort: the primary key, (name, state) and next_run_at.
    sortable_by = ["id", "name", "next_run"]
    list_per_page = 50
    list_max_show_all = 200  # live.MAX_IDS: the live updates take every row of such a page
    actions = list(BUTTONS)

    class Media:
        css = {"all": ["django_jobs/admin.css"]}

    # Permissions: each action's comes from states.ACTIONS, the one table of actions.

    def has_action_permission(self, request: HttpRequest, action: str) -> bool:
        """Whether the user holds the permission that states.ACTIONS gives `action`."""
        return request.user.has_perm(states.permission(action, self.opts.app_label))

    def offers(self, request: HttpRequest, action: str, job: Job) -> bool:
        """Whether this user may apply `action` to `job` in its current state."""
        # The reschedule page also takes a recurring job's new schedule (change_schedule).
        if action in ("cancel", "delete_finished") and job.declared_in_code:
            return False  # it would come back at the next worker start: disable it instead
        rules = [action]
        if action == "reschedule" and job.recurring:
            rules.append("change_schedule")
        return any(
            self.has_action_permission(request, rule) and states.allows(rule, job) for rule in rules
        )

    # has_<action>_permission, as @admin.action(permissions=[<action>]) asks for them.

    def has_run_now_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return self.has_action_permission(request, "run_now")

    def has_retry_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return self.has_action_permission(request, "retry")

    def has_reschedule_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        # The page takes a new time (reschedule) or, for recurring jobs, a new schedule.
        return self.has_action_permission(request, "reschedule") or self.has_action_permission(
            request, "change_schedule"
        )

    def has_disable_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return self.has_action_permission(request, "disable")

    def has_enable_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return self.has_action_permission(request, "enable")

    def has_cancel_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return self.has_action_permission(request, "cancel")

    def has_delete_finished_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return self.has_action_permission(request, "delete_finished")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).using(settings.DATABASE).defer(*STORED_JSON)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Job | None:
        """The job with its data and result as the database's JSON text (see STORED_JSON)."""
        queryset = self.get_queryset(request).annotate(
            **{f"{name}_text": Cast(name, TextField()) for name in STORED_JSON}
        )
        field = Job._meta.pk if from_field is None else Job._meta.get_field(from_field)
        try:
            return queryset.get(**{field.name: field.to_python(object_id)})  # type: ignore[union-attr]
        except (Job.DoesNotExist, ValidationError, ValueError):
            return None

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
        """Each term is a key:value of the data, an id, a unique key or a name (see search)."""
        return search_jobs(queryset, search_term, settings.DATABASE), False

    # Columns of the list, also shown on the job page.

    @admin.display(description=gettext_lazy("state"))
    def state_display(self, job: Job) -> SafeString:
        return display.state_badges(job)

    @admin.display(description=gettext_lazy("next run"), ordering="next_run_at")
    def next_run(self, job: Job) -> SafeString | str:
        if job.state == JobState.RUNNING and not job.recurring:
            return display.EMPTY
        return display.next_run_time(job)

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

    @admin.display(description=gettext_lazy("state"))
    def state_column(self, job: Job) -> SafeString:
        """The badges; for a running job, its progress and its worker below them."""
        badges = display.state_badges(job)
        if job.state != JobState.RUNNING:
            return badges
        parts = [badges]
        if job.progress is not None:
            parts.append(
                format_html("<br>{}", display.progress_bar(job.progress, job.progress_message))
            )
        if job.locked_by:
            parts.append(format_html('<br><span class="djj-note">{}</span>', job.locked_by))
        return format_html("{}" * len(parts), *parts)

    @admin.display(description=gettext_lazy("last run"))
    def last_run_column(self, job: Job) -> SafeString | str:
        """When the last run started, and below it how long it took."""
        started = display.relative_time(job.last_started_at)
        duration = display.last_duration(job)
        if duration is None:
            return started
        return format_html(
            '{}<br><span class="djj-note">{}</span>', started, display.format_duration(duration)
        )

    @admin.display(description=gettext_lazy("queue"))
    def queue_column(self, job: Job) -> SafeString | str:
        """The queue, and below it a priority other than the default 0."""
        if not job.priority:
            return job.queue
        return format_html(
            '{}<br><span class="djj-note">{}</span>',
            job.queue,
            _("priority %(priority)d") % {"priority": job.priority},
        )

    # The job page: every field read-only; state changes go through the buttons.

    @admin.display(description=gettext_lazy("attempts"))
    def attempts_display(self, job: Job) -> str:
        return _("%(attempts)d of %(max)d") % {"attempts": job.attempts, "max": job.max_attempts}

    @admin.display(description=gettext_lazy("cluster limits"))
    def cluster_limits(self, job: Job) -> str:
        """What a limited job is claimed under (claiming/limits.py), as its definition says."""
        limits = []
        definition = registry.get(job.name)
        if definition is not None and definition.concurrency is not None:
            limits.append(
                _("at most %(count)d running at once across the cluster")
                % {"count": definition.concurrency}
            )
        if definition is not None and definition.rate_limit is not None:
            limits.append(
                _("at most %(count)d starts in any %(period)s s across the cluster")
                % {
                    "count": definition.rate_limit.count,
                    "period": f"{definition.rate_limit.period:g}",
                }
            )
        if job.lock_key is not None:
            limits.append(_("one at a time per lock key"))
        if definition is None:
            limits.append(_("its definition is not in the code"))
        return "; ".join(limits) or display.EMPTY

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
    def data_display(self, job: Job) -> SafeString | str:
        return _stored_json(job, "data")

    @admin.display(description=gettext_lazy("result"))
    def result_display(self, job: Job) -> SafeString | str:
        return _stored_json(job, "result")

    # Times: Django's own display converts to local time, which overflows near year 1 and
    # year 9999; display.exact_time falls back to UTC.
    last_started_at_display = _exact_time_field("last_started_at")
    last_finished_at_display = _exact_time_field("last_finished_at")
    created_at_display = _exact_time_field("created_at")
    updated_at_display = _exact_time_field("updated_at")
    locked_until_display = _exact_time_field("locked_until")

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
                        "last_started_at_display",
                        "last_finished_at_display",
                        "last_duration",
                        "created_at_display",
                        "updated_at_display",
                    ]
                },
            ),
            (
                _("Attempts and lock"),
                {
                    "fields": [
                        "attempts_display",
                        "failure_count",
                        "locked_by",
                        "locked_until_display",
                        # Shown where they apply: most jobs have neither.
                        *(["cluster_limits"] if obj is not None and obj.limited else []),
                        *(["lock_key"] if obj is not None and obj.lock_key is not None else []),
                    ]
                },
            ),
        ]
        # A running job may report progress at any time: its page then shows it live.
        if obj is not None and (obj.progress is not None or obj.state == JobState.RUNNING):
            fieldsets.append((_("Progress"), {"fields": ["progress_detail"]}))
        fieldsets.append((_("Data"), {"fields": ["data_display"]}))
        if obj is not None and _has_json(obj, "result"):
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
            self.warn_of(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def warn_of(self, request: HttpRequest, job: Job) -> None:
        """What an operator must see first on a job's page: a pause that holds it back, a
        late-job alert (alerts.py), a cancel its worker has not acted on yet."""
        # Each look is a query: asked only of the jobs it can concern.
        held = held_back(job) if job.state == JobState.SCHEDULED else None
        if held is not None:
            who = _(" by %(who)s") % {"who": held.paused_by} if held.paused_by else ""
            why = f" ({held.reason})" if held.reason else ""
            messages.warning(
                request,
                _(
                    "Paused: %(what)s was paused%(who)s%(why)s, so no worker claims this job "
                    "until it is resumed."
                )
                % {"what": held, "who": who, "why": why},
            )
        alert = alerts.reason(job) if job.recurring and job.enabled else ""
        if alert:
            messages.warning(request, _("Needs attention: %(reason)s") % {"reason": alert})
        if job.state == JobState.RUNNING and job.cancel_requested_at is not None:
            messages.warning(
                request,
                _(
                    "Cancel requested%(who)s at %(when)s. The job has not stopped yet: it keeps "
                    "its lock until it ends, and its run is then recorded as cancelled."
                )
                % {
                    "who": _(" by %(who)s") % {"who": job.cancel_requested_by}
                    if job.cancel_requested_by
                    else "",
                    "when": display.exact_time(job.cancel_requested_at),
                },
            )

    def job_page_context(self, request: HttpRequest, job: Job) -> dict[str, Any]:
        runs = list(
            JobRun.objects.using(settings.DATABASE)
            .filter(job_id=job.pk)
            .order_by("-started_at", "-pk")[:RUN_HISTORY_SHOWN]
        )
        for run in runs:
            run.started_text = display.exact_time(run.started_at)  # type: ignore[attr-defined]
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
            "live_state": buttons_key(job),
            **self.live_context(),
            **self.crumbs_context([("", str(job))]),
        }

    def live_context(self) -> dict[str, Any]:
        """Where the list and the job page ask for their live updates (live.js), how often."""
        return {
            "live_url": reverse(f"{self.admin_site.name}:django_jobs_job_live"),
            "live_seconds": LIVE_SECONDS,
        }

    def job_buttons(self, request: HttpRequest, job: Job) -> list[dict[str, Any]]:
        """The buttons this user may use on this job in its current state (states.ACTIONS)."""
        url = f"{self.admin_site.name}:django_jobs_job_"
        buttons = []
        for name in BUTTONS:
            if not self.offers(request, name, job):
                continue
            if name == "reschedule":
                href, label = reverse(url + "reschedule", args=[job.pk]), _("Reschedule")
            elif name == "cancel":
                href, label = reverse(url + "delete", args=[job.pk]), _("Cancel")
            elif name == "delete_finished":
                href, label = reverse(url + "delete_finished", args=[job.pk]), _("Delete")
            else:
                href, label = reverse(url + "action", args=[job.pk, name]), ACTIONS[name].label
            buttons.append({"name": name, "url": href, "label": label, "post": name in ACTIONS})
        return buttons

    # Bulk actions: the same model methods as the buttons.

    def _bulk(self, request: HttpRequest, queryset: QuerySet[Job], action: JobAction) -> None:
        jobs = limited(request, queryset)
        if jobs is not None:
            apply(self, request, jobs, action)

    @admin.action(permissions=["run_now"], description=gettext_lazy("Run selected jobs now"))
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, ACTIONS["run_now"])

    @admin.action(permissions=["retry"], description=gettext_lazy("Retry selected failed jobs"))
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        if selects_across(request):
            return bulk_view(self, request, queryset, "retry")  # the whole filter, in batches
        self._bulk(request, queryset, ACTIONS["retry"])
        return None

    @admin.action(permissions=["disable"], description=gettext_lazy("Disable selected jobs"))
    def disable(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, ACTIONS["disable"])

    @admin.action(permissions=["enable"], description=gettext_lazy("Enable selected jobs"))
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
                if not self.has_action_permission(request, reschedule_rule(form)):
                    raise PermissionDenied
                apply(self, request, jobs, reschedule_action(form))
                return None
        else:
            zones = {job.timezone for job in jobs if job.recurring}
            form = RescheduleForm(
                recurring=recurring, initial={"timezone": zones.pop() if len(zones) == 1 else ""}
            )
        return self.render_reschedule(request, form, jobs, bulk=True)

    @admin.action(permissions=["cancel"], description=gettext_lazy("Cancel selected jobs"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        jobs = limited(request, queryset)
        if jobs is None:
            return None
        if request.POST.get("post") == "yes":
            cancel_jobs(request, jobs)
            return None
        return self.render_cancel(request, jobs, bulk=True)

    @admin.action(
        permissions=["delete_finished"],
        description=gettext_lazy("Delete selected finished jobs"),
    )
    def delete_finished(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return bulk_view(self, request, queryset, "delete_finished")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            # Django ignores an action the user may not use; a forged one is refused outright.
            allowed = self.get_actions(request)
            for name in request.POST.getlist("action"):
                if name in [*self.actions, "delete_selected"] and name not in allowed:
                    raise PermissionDenied
            # Django casts the ticked ids only when it runs the query: a forged one failed there.
            if not all(map(_job_id, request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))):
                return HttpResponseBadRequest(_("The selected jobs must be given by their ids."))
        extra_context = {
            "title": _("Jobs"),
            **self.live_context(),
            **self.crumbs_context([]),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context)


def _job_id(value: str) -> bool:
    """Whether a ticked box's value can be a job's id on every database (a 64-bit integer)."""
    return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) < 2**63


def _has_json(job: Job, name: str) -> bool:
    """Whether a JSON field holds a value, read as text when JobAdmin.get_object loaded it."""
    text_name = f"{name}_text"
    value = getattr(job, text_name) if hasattr(job, text_name) else getattr(job, name)
    return value is not None


def _stored_json(job: Job, name: str) -> SafeString | str:
    """A JSON field indented, from its text when JobAdmin.get_object loaded it so."""
    text_name = f"{name}_text"
    if hasattr(job, text_name):
        return display.stored_json(getattr(job, text_name))
    return display.pretty_json(getattr(job, name))
