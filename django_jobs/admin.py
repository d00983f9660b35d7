"""Admin registration; the full job dashboard is built on these classes."""

from django.contrib import admin

from .models import Job, JobRun, Worker


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "state",
        "enabled",
        "next_run_at",
        "attempts",
        "queue",
        "priority",
    ]
    list_filter = ["state", "enabled", "queue"]
    search_fields = ["name"]
    show_full_result_count = False


@admin.register(JobRun)
class JobRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "job_name",
        "attempt",
        "outcome",
        "worker_id",
        "started_at",
        "finished_at",
    ]
    list_filter = ["outcome"]
    show_full_result_count = False


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["worker_id", "hostname", "pid", "concurrency", "last_heartbeat_at"]
