"""Read-only admins: the run history (JobRun) and the workers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy

from ..conf import settings
from ..models import JobRun, Worker
from . import display
from .changelist import BigTableMixin, UrlLookupsMixin
from .filters import OutcomeFilter, RunNameFilter
from .overview import in_progress_count, is_alive
from .search import RUN_SEARCH_HELP, search_runs


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by workers only: viewable, never added, changed or deleted here."""

    actions = None

    class Media:
        css = {"all": ["django_jobs/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(JobRun)
class JobRunAdmin(BigTableMixin, ReadOnlyAdmin):
    # Eight columns, so that the list fits beside the navigation sidebar at 1,400 px: the
    # job's name and id are one link; the finish is on the run's page (start + duration).
    list_display = [
        "id",
        "job_column",
        "attempt",
        "outcome_display",
        "worker_id",
        "started_display",
        "duration_display",
        "error_display",
    ]
    list_filter = [OutcomeFilter, RunNameFilter]
    link_lookups = ("job__id__exact",)  # the job page's "All runs of this job"
    search_fields = ["job_name", "worker_id"]  # exact terms: see get_search_results
    search_help_text = RUN_SEARCH_HELP
    # The primary key and started_at (its own index, and the second column of (job, started_at)).
    sortable_by = ["id", "started_display"]
    list_per_page = 50
    fields = readonly_fields = (
        "job_link",
        "job_name",
        "attempt",
        "outcome_display",
        "worker_id",
        "started_display",
        "finished_display",
        "duration_display",
        "error_class",
        "error_text",
        "traceback_text",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobRun]:
        return super().get_queryset(request).using(settings.DATABASE)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[JobRun], search_term: str
    ) -> tuple[QuerySet[JobRun], bool]:
        """Equality on indexed columns: a substring search would read every run."""
        return search_runs(queryset, search_term), False

    @admin.display(description=gettext_lazy("job"), ordering="job_id")
    def job_link(self, run: JobRun) -> SafeString | str:
        # Links by id alone: no query per row, and a run of a deleted job keeps its name.
        if run.job_id is None:
            return display.EMPTY
        url = reverse(f"{self.admin_site.name}:django_jobs_job_change", args=[run.job_id])
        return format_html('<a href="{}">#{}</a>', url, run.job_id)

    @admin.display(description=gettext_lazy("job"), ordering="job_id")
    def job_column(self, run: JobRun) -> SafeString | str:
        """The job's name and id, linked to the job; the name alone once the job is gone."""
        if run.job_id is None:
            return run.job_name
        url = reverse(f"{self.admin_site.name}:django_jobs_job_change", args=[run.job_id])
        return format_html('<a href="{}">{} #{}</a>', url, run.job_name, run.job_id)

    # Times go through display.exact_time, which shows any stored instant, year 1 to 9999.

    @admin.display(description=gettext_lazy("started at"), ordering="started_at")
    def started_display(self, run: JobRun) -> str:
        return display.exact_time_or_empty(run.started_at)

    @admin.display(description=gettext_lazy("finished at"))
    def finished_display(self, run: JobRun) -> str:
        return display.exact_time_or_empty(run.finished_at)

    @admin.display(description=gettext_lazy("outcome"))
    def outcome_display(self, run: JobRun) -> SafeString:
        return display.badge(run.outcome, run.get_outcome_display())

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, run: JobRun) -> str:
        return display.format_duration(run.duration)

    @admin.display(description=gettext_lazy("error"))
    def error_display(self, run: JobRun) -> str:
        return display.first_line(run.error) or display.EMPTY

    @admin.display(description=gettext_lazy("error"))
    def error_text(self, run: JobRun) -> SafeString | str:
        return display.preformatted(run.error)

    @admin.display(description=gettext_lazy("traceback"))
    def traceback_text(self, run: JobRun) -> SafeString | str:
        return display.preformatted(run.traceback)


@admin.register(Worker)
class WorkerAdmin(UrlLookupsMixin, ReadOnlyAdmin):
    list_display = [
        "worker_id",
        "hostname",
        "pid",
        "queues_display",
        "concurrency",
        "started_display",
        "heartbeat_display",
        "alive_display",
        "in_progress_display",
    ]
    search_fields = ["worker_id", "hostname"]
    show_full_result_count = False
    fields = readonly_fields = (
        "worker_id",
        "hostname",
        "pid",
        "queues_display",
        "concurrency",
        "started_display",
        "last_heartbeat_display",
        "heartbeat_display",
        "alive_display",
        "in_progress_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return (
            super()
            .get_queryset(request)
            .using(settings.DATABASE)
            .annotate(in_progress=in_progress_count(), is_alive=is_alive())
        )

    @admin.display(description=gettext_lazy("queues"))
    def queues_display(self, worker: Worker) -> str:
        return ", ".join(str(queue) for queue in worker.queues) or str(gettext_lazy("all"))

    @admin.display(description=gettext_lazy("started at"), ordering="started_at")
    def started_display(self, worker: Worker) -> str:
        return display.exact_time_or_empty(worker.started_at)

    @admin.display(description=gettext_lazy("last heartbeat at"))
    def last_heartbeat_display(self, worker: Worker) -> str:
        return display.exact_time_or_empty(worker.last_heartbeat_at)

    @admin.display(description=gettext_lazy("last heartbeat"), ordering="last_heartbeat_at")
    def heartbeat_display(self, worker: Worker) -> SafeString | str:
        age = max(0, int((timezone.now() - worker.last_heartbeat_at).total_seconds()))
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            worker.last_heartbeat_at.isoformat(),
            display.exact_time(worker.last_heartbeat_at),
            gettext_lazy("%(seconds)d s ago") % {"seconds": age},
        )

    @admin.display(description=gettext_lazy("alive"))
    def alive_display(self, worker: Worker) -> SafeString:
        # Each row carries its own expiry (database clock), as the workers judge each other.
        if getattr(worker, "is_alive", False):
            return display.badge("alive", gettext_lazy("alive"))
        return display.badge("stale", gettext_lazy("stale"))

    @admin.display(description=gettext_lazy("jobs in progress"), ordering="in_progress")
    def in_progress_display(self, worker: Worker) -> int:
        return int(getattr(worker, "in_progress", 0) or 0)
