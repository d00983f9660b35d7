"""The job admin's own pages: overview, job page buttons, reschedule, cancel, create a job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import django
from django.contrib import messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from ..conf import settings
from ..exceptions import JobsError, JobStateError
from ..forms import CreateJobForm, RescheduleForm
from ..models import Job
from . import display, recurring
from .actions import (
    ACTIONS,
    apply,
    cancel_jobs,
    cancel_states,
    log_deletion,
    report_errors,
    reschedule_action,
    reschedule_rule,
    unreadable,
)
from .display import STATE_LABELS
from .live import OVERVIEW_LIVE_SECONDS, error, job_rows, json_response, live_view
from .overview import (
    RANGES,
    build_chart,
    counted_text,
    counts_by_name,
    live_workers,
    run_buckets,
)
from .queues import QUEUE_STATES, THROUGHPUT_SPAN, queue_rows

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _Base = ModelAdmin[Job]
else:
    _Base = object

TEMPLATE_DIR = "admin/django_jobs/job/"
# The overview's parts that its live updates replace: (element id, template)
OVERVIEW_SECTIONS = {
    "djj-counts-body": TEMPLATE_DIR + "overview_counts.html",
    "djj-chart-body": TEMPLATE_DIR + "overview_chart.html",
    "djj-workers-body": TEMPLATE_DIR + "overview_workers.html",
}


class JobViewsMixin(_Base):
    """Views JobAdmin adds to Django's list and change pages; each checks its permission."""

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("overview/", wrap(self.overview_view), name=f"{info}_overview"),
            path(
                "overview/live/",
                live_view(self, self.overview_live_view),  # type: ignore[arg-type]
                name=f"{info}_overview_live",
            ),
            path("queues/", wrap(self.queues_view), name=f"{info}_queues"),
            path("recurring/", wrap(self.recurring_view), name=f"{info}_recurring"),
            path(
                "recurring/pause/", wrap(self.recurring_pause_view), name=f"{info}_recurring_pause"
            ),
            path("live/", live_view(self, self.live_view), name=f"{info}_live"),  # type: ignore[arg-type]
            path(
                "<path:object_id>/actions/<str:action>/",
                wrap(self.job_action_view),
                name=f"{info}_action",
            ),
            path(
                "<path:object_id>/delete-finished/",
                wrap(self.delete_finished_view),
                name=f"{info}_delete_finished",
            ),
            path(
                "<path:object_id>/reschedule/",
                wrap(self.reschedule_view),
                name=f"{info}_reschedule",
            ),
            *super().get_urls(),
        ]

    # Helpers

    def page_context(
        self,
        request: HttpRequest,
        title: str,
        crumbs: list[tuple[str, str]],
        *,
        under_list: bool = True,
    ) -> dict[str, Any]:
        """The context every page of the admin gets, with breadcrumbs up to this page."""
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "media": self.media,
            **self.crumbs_context(crumbs, under_list=under_list),
        }

    def crumbs_context(
        self, crumbs: list[tuple[str, str]], *, under_list: bool = True
    ) -> dict[str, Any]:
        """Breadcrumbs: "Home > Jobs > All jobs > ..." (the app and its model share a name,
        so the list reads "All jobs" rather than "Jobs > Jobs"); the overview and queues pages
        hang from the app: "Home > Jobs > Queues"."""
        opts = self.opts
        trail = [
            (reverse(f"{self.admin_site.name}:index"), _("Home")),
            (
                reverse(f"{self.admin_site.name}:app_list", args=[opts.app_label]),
                str(opts.app_config.verbose_name),
            ),
        ]
        if under_list:
            trail.append((self.changelist_url(), _("All jobs")))
        return {
            "crumbs": [*trail, *crumbs],
            # Django 6 marks breadcrumbs up as a list; 5.2 as a line of links.
            "crumbs_as_list": django.VERSION >= (6, 0),
        }

    def job_url(self, job: Job) -> str:
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[job.pk]
        )

    def changelist_url(self) -> str:
        opts = self.opts
        return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")

    def get_job(self, request: HttpRequest, object_id: str) -> Job:
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404(_("Job #%(id)s does not exist.") % {"id": object_id})
        return job

    # Job page buttons: run now, retry, disable, enable (reschedule and cancel have a page)

    def job_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        spec = ACTIONS.get(action)
        if spec is None:
            raise Http404(_("Unknown action %(action)r.") % {"action": action})
        if not self.has_action_permission(request, action):  # type: ignore[attr-defined]
            raise PermissionDenied
        job = self.get_job(request, object_id)
        apply(self, request, [job], spec)  # type: ignore[arg-type]
        # The recurring jobs page posts here too, and is shown again; no other URL is followed.
        back = recurring.page_url(self)  # type: ignore[arg-type]
        return HttpResponseRedirect(back if request.POST.get("next") == back else self.job_url(job))

    # Reschedule: a page with a form (also the bulk action's intermediate page)

    def reschedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_reschedule_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        job = self.get_job(request, object_id)
        if request.method == "POST":
            form = RescheduleForm(request.POST, recurring=job.recurring)
            if form.is_valid():
                if not self.has_action_permission(request, reschedule_rule(form)):  # type: ignore[attr-defined]
                    raise PermissionDenied
                apply(self, request, [job], reschedule_action(form))  # type: ignore[arg-type]
                return HttpResponseRedirect(self.job_url(job))
        else:
            form = RescheduleForm(recurring=job.recurring, initial={"timezone": job.timezone})
        return self.render_reschedule(request, form, [job], bulk=False)

    def render_reschedule(
        self, request: HttpRequest, form: RescheduleForm, jobs: list[Job], *, bulk: bool
    ) -> HttpResponse:
        fields = ["when", "schedule", "timezone"] if form.recurring else ["when"]
        title = _("Reschedule jobs") if bulk else _("Reschedule %(job)s") % {"job": jobs[0]}
        for job in jobs:
            job.next_run_text = display.exact_time_or_empty(job.next_run_at)  # type: ignore[attr-defined]
        crumbs = [("", _("Reschedule"))]
        if not bulk:
            crumbs.insert(0, (self.job_url(jobs[0]), str(jobs[0])))
        context = {
            **self.page_context(request, title, crumbs),
            "adminform": helpers.AdminForm(form, [(None, {"fields": fields})], {}),  # type: ignore[arg-type]
            "form": form,
            "jobs": jobs,
            "bulk": bulk,
            "recurring": form.recurring,
            "back_url": self.changelist_url() if bulk else self.job_url(jobs[0]),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, TEMPLATE_DIR + "reschedule.html", context)

    # Cancel: Django's delete page, turned into "cancel this waiting job"

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        job = self.get_job(request, object_id)
        if not self.has_cancel_permission(request, job):  # type: ignore[attr-defined]
            raise PermissionDenied
        if request.method == "POST":
            if cancel_jobs(request, [job]):
                return HttpResponseRedirect(self.changelist_url())
            return HttpResponseRedirect(self.job_url(job))
        return self.render_cancel(request, [job], bulk=False)

    # Delete a finished job (the bulk form is in bulk.py)

    def delete_finished_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_delete_finished_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        job = self.get_job(request, object_id)
        if request.method == "POST":
            try:
                job.delete_finished()
            except Job.DoesNotExist:
                report_errors(request, [_("Job #%(id)s no longer exists.") % {"id": job.pk}])
                return HttpResponseRedirect(self.changelist_url())
            except JobStateError as exc:
                report_errors(request, [str(exc)])
                return HttpResponseRedirect(self.job_url(job))
            except (RecursionError, ValueError) as exc:
                report_errors(request, [unreadable(job, exc)])
                return HttpResponseRedirect(self.job_url(job))
            log_deletion(request, job, "Deleted (finished).")
            messages.success(request, _("Deleted %(job)s.") % {"job": job})
            return HttpResponseRedirect(self.changelist_url())
        if not self.offers(request, "delete_finished", job):  # type: ignore[attr-defined]
            messages.error(
                request,
                _(
                    "Job %(job)s cannot be deleted: only finished jobs (succeeded, failed or "
                    "cancelled) are, and never a recurring job declared in the code."
                )
                % {"job": job},
            )
            return HttpResponseRedirect(self.job_url(job))
        crumbs = [(self.job_url(job), str(job)), ("", _("Delete"))]
        context = {
            **self.page_context(request, _("Delete %(job)s") % {"job": job}, crumbs),
            "question": _("Delete %(job)s (%(state)s)? Its run history stays.")
            % {"job": job, "state": job.get_state_display()},
            "confirm": _("Yes, delete"),
            "deleting": True,
            "back_url": self.job_url(job),
        }
        return TemplateResponse(request, TEMPLATE_DIR + "bulk.html", context)

    def render_cancel(self, request: HttpRequest, jobs: list[Job], *, bulk: bool) -> HttpResponse:
        title = _("Cancel jobs") if bulk else _("Cancel %(job)s") % {"job": jobs[0]}
        crumbs = [("", _("Cancel"))]
        if not bulk:
            crumbs.insert(0, (self.job_url(jobs[0]), str(jobs[0])))
        context = {
            **self.page_context(request, title, crumbs),
            "jobs": jobs,
            "bulk": bulk,
            "cancel_states": cancel_states(*{job.recurring for job in jobs}),
            "back_url": self.changelist_url() if bulk else self.job_url(jobs[0]),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, TEMPLATE_DIR + "cancel.html", context)

    # Create a job

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = CreateJobForm(request.POST)
            if form.is_valid():
                try:
                    job = form.save()
                except JobsError as exc:
                    form.add_error(None, str(exc))
                else:
                    self.log_addition(request, job, "Scheduled from the admin.")
                    messages.success(
                        request,
                        _("Scheduled %(job)s to run at %(at)s.")
                        % {"job": job, "at": display.exact_time_or_empty(job.next_run_at)},
                    )
                    return HttpResponseRedirect(self.job_url(job))
        else:
            form = CreateJobForm()
        fields = ["name", "data", "when", "priority", "queue"]
        context = {
            **self.page_context(request, _("Schedule a job"), [("", _("Schedule a job"))]),
            "adminform": helpers.AdminForm(form, [(None, {"fields": fields})], {}),  # type: ignore[arg-type]
            "form": form,
            "errors": helpers.AdminErrorList(form, []),  # type: ignore[arg-type]
            "no_jobs": not form.fields["name"].choices[1:],  # type: ignore[attr-defined]
        }
        return TemplateResponse(request, TEMPLATE_DIR + "add.html", context)

    # The overview

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        range_key = request.GET.get("range", "hour")
        if range_key not in RANGES:
            range_key = "hour"
        context = {
            **self.page_context(
                request, _("Jobs overview"), [("", _("Overview"))], under_list=False
            ),
            **self.overview_context(range_key),
            "ranges": [
                (key, label, "?" + urlencode({"range": key}))
                for key, (_s, _w, label) in RANGES.items()
            ],
            "live_url": reverse(f"{self.admin_site.name}:django_jobs_job_overview_live")
            + "?"
            + urlencode({"range": range_key}),
            "live_seconds": OVERVIEW_LIVE_SECONDS,
        }
        return TemplateResponse(request, TEMPLATE_DIR + "overview.html", context)

    def queues_view(self, request: HttpRequest) -> HttpResponse:
        """Per queue: capped counts by state, the oldest due job's wait, the last hour's runs."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        list_url = self.changelist_url()
        rows = []
        for row in queue_rows(settings.DATABASE):
            wait = row.oldest_wait
            rows.append(
                {
                    "queue": row.queue,
                    "url": f"{list_url}?{urlencode({'queue': row.queue})}",
                    "paused": row.paused,
                    "cells": [
                        {
                            "key": key,
                            "count": row.counts[key],
                            "text": display.count_text(row.counts[key]),
                            "url": f"{list_url}?{urlencode({'queue': row.queue, 'state': key})}",
                        }
                        for key in QUEUE_STATES
                    ],
                    "oldest_wait": display.format_duration(wait) if wait is not None else "",
                    "oldest_due_text": display.exact_time_or_empty(row.oldest_due_at),
                    "runs": display.count_text(row.runs),
                    "failed_runs": display.count_text(row.failed_runs),
                    "per_minute": f"{row.runs / (THROUGHPUT_SPAN.total_seconds() / 60):.1f}",
                }
            )
        context = {
            **self.page_context(request, _("Queues"), [("", _("Queues"))], under_list=False),
            "columns": [(key, STATE_LABELS[key]) for key in QUEUE_STATES],
            "rows": rows,
            "overview_url": reverse(f"{self.admin_site.name}:django_jobs_job_overview"),
        }
        return TemplateResponse(request, TEMPLATE_DIR + "queues.html", context)

    def recurring_view(self, request: HttpRequest) -> HttpResponse:
        return recurring.recurring_view(self, request)  # type: ignore[arg-type]

    def recurring_pause_view(self, request: HttpRequest) -> HttpResponse:
        return recurring.pause_view(self, request)  # type: ignore[arg-type]

    def overview_live_view(self, request: HttpRequest) -> HttpResponse:
        """GET ?range=hour: the overview's sections as HTML, for its live updates."""
        range_key = request.GET.get("range", "hour")
        if range_key not in RANGES:
            return error(
                _("Unknown range %(range)r; use one of: %(ranges)s.")
                % {"range": range_key[:100], "ranges": ", ".join(RANGES)},
                400,
            )
        context = self.overview_context(range_key)
        sections = {
            key: render_to_string(template, context, request)
            for key, template in OVERVIEW_SECTIONS.items()
        }
        return json_response({"sections": sections, "at": timezone.now().isoformat()})

    def live_view(self, request: HttpRequest) -> HttpResponse:
        """GET ?ids=1,2,3: the changing cells of those jobs, for the list and the job page."""
        return job_rows(self, request)  # type: ignore[arg-type]

    def overview_context(self, range_key: str) -> dict[str, Any]:
        """The counts per name, the chart and the live workers: the overview's numbers."""
        using = settings.DATABASE
        rows, totals, counted = counts_by_name(using)
        list_url = self.changelist_url()
        keys = [*STATE_LABELS, "total"]

        def cells(name: str | None, counts: dict[str, int]) -> list[dict[str, Any]]:
            result = []
            for key in keys:
                query = {"name": name} if name is not None else {}
                if key != "total":
                    query["state"] = key
                url = f"{list_url}?{urlencode(query)}" if query else list_url
                count = counts[key]
                text = display.count_text(count)
                result.append({"key": key, "count": count, "text": text, "url": url})
            return result

        now = timezone.now()
        workers = list(live_workers(using))
        for worker in workers:
            worker.heartbeat_age = max(0, int((now - worker.last_heartbeat_at).total_seconds()))  # type: ignore[attr-defined]
            worker.heartbeat_text = display.exact_time(worker.last_heartbeat_at)  # type: ignore[attr-defined]
        chart = build_chart(run_buckets(using, range_key, now), range_key)
        return {
            "columns": [(key, STATE_LABELS.get(key, _("total"))) for key in keys],
            "rows": [{"name": row["name"], "cells": cells(row["name"], row)} for row in rows],
            "totals": cells(None, totals),
            "counted_text": counted_text(counted),
            "chart": chart,
            "range_key": range_key,
            "workers": workers,
            "workers_url": reverse(f"{self.admin_site.name}:django_jobs_worker_changelist"),
            "runs_url": reverse(f"{self.admin_site.name}:django_jobs_jobrun_changelist"),
        }
