"""Job, JobRun and Worker, QuerySets named by state, and the state changes of the admin and API.

The worker's own writes (claim, finish, fail, heartbeat, recovery) live in the claiming
package, where each one is fenced by the lock token of the claim that made it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, models
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .db import (
    EARLIEST_TIME,
    LATEST_TIME,
    DbNow,
    db_now_plus,  # noqa: F401  (re-exported: callers import it with the models)
    write_transaction,
)
from .exceptions import InvalidSchedule, JobStateError, JobStopped
from .inserting import insert_job, insert_jobs
from .notify import ask_to_stop, wake_workers
from .recurring import (  # noqa: F401  (the prefix is re-exported with the models)
    RECURRING_KEY_PREFIX,
    declared_in_code,
    declared_keys,
    declared_refusal,
    first_run,
    owned_by_code,
)
from .registry import registry
from .schedules import get_timezone, parse_schedule
from .states import FINISHED_STATES, STOP_CANCEL, JobState, RunOutcome, allowed_states
from .tracing import capture, capture_many
from .validation import (
    CANCELLED_BY_MAX_LENGTH,
    LOCK_KEY_MAX_LENGTH,
    NAME_MAX_LENGTH,
    check_text,
    check_when,
)

_now = timezone.now  # Job has a field called timezone, which hides the module in its body


def new_token() -> str:
    return uuid.uuid4().hex


def due_q() -> models.Q:
    """The one definition of "due", by the database's clock: the ORM's due(), the admin's
    state filter, and the raw claim statements (compiled from due()) all read it."""
    return models.Q(state=JobState.SCHEDULED, enabled=True, next_run_at__lte=DbNow())


DELETING_ACTIONS = ("cancel", "delete_finished")


def allowed_q(action: str) -> models.Q:
    """The rows `action` may start from (states.ACTIONS), as a condition for one statement."""
    one_off = sorted(allowed_states(action, recurring=False))
    recurring = sorted(allowed_states(action, recurring=True))
    if one_off == recurring:
        return models.Q(state__in=one_off)
    return models.Q(schedule="", state__in=one_off) | (
        ~models.Q(schedule="") & models.Q(state__in=recurring)
    )


def _retry_changes() -> dict[str, Any]:
    """What a retry writes, for one job (Job.retry) and many (JobQuerySet.retry)."""
    return {"state": JobState.SCHEDULED, "next_run_at": DbNow(), "attempts": 0}


class JobQuerySet(models.QuerySet["Job"]):
    def scheduled(self) -> JobQuerySet:
        return self.filter(state=JobState.SCHEDULED)

    def due(self) -> JobQuerySet:
        return self.filter(due_q())

    def running(self) -> JobQuerySet:
        return self.filter(state=JobState.RUNNING)

    def succeeded(self) -> JobQuerySet:
        return self.filter(state=JobState.SUCCEEDED)

    def failed(self) -> JobQuerySet:
        return self.filter(state=JobState.FAILED)

    def recurring(self) -> JobQuerySet:
        return self.exclude(schedule="")

    def disabled(self) -> JobQuerySet:
        return self.filter(enabled=False)

    def stale(self) -> JobQuerySet:
        """Running jobs whose lock expired by the database's clock: their worker is gone."""
        return self.filter(state=JobState.RUNNING, locked_until__lt=DbNow())

    def pending(self) -> JobQuerySet:
        return self.filter(state__in=[JobState.SCHEDULED, JobState.RUNNING])

    def unpaused(self) -> JobQuerySet:
        """Jobs whose queue and name are not paused: what a worker may claim (see Pause)."""
        return self.filter(unpaused_q())

    def holding_slots(self) -> JobQuerySet:
        """Running jobs whose lock still holds by the database's clock: the slots in use of a
        cluster-wide concurrency or lock key (a dead worker's slot comes back at its expiry)."""
        return self.filter(state=JobState.RUNNING, locked_until__gt=DbNow())

    def mark_limited(self) -> int:
        """Set `limited` on pending rows as the registered definitions say (a limit added to or
        removed from a definition since they were created); returns how many rows changed."""
        pending = self.filter(state__in=[JobState.SCHEDULED, JobState.RUNNING])
        limited = [d.name for d in registry.limited()]
        unlimited = [d.name for d in registry if not d.limited]
        changed = 0
        if limited:
            changed += pending.filter(name__in=limited, limited=False).update(limited=True)
        if unlimited:
            changed += pending.filter(
                name__in=unlimited, limited=True, lock_key__isnull=True
            ).update(limited=False)
        return changed

    # Bulk state changes (the admin's actions over a whole filter), one statement each: the
    # state rule of states.ACTIONS is part of it, so a row that a worker or someone else
    # changed since it was read is skipped, never touched. Callers keep each set small (a
    # batch of ids) so that no transaction holds many rows for long.

    def allowing(self, action: str) -> JobQuerySet:
        """The rows `action` may start from (states.ACTIONS); for the actions that delete,
        never a recurring row the code declares (the next worker start would add it again)."""
        rows = self.filter(allowed_q(action))
        if action in DELETING_ACTIONS:
            rows = rows.exclude(unique_key__in=declared_keys())
        return rows

    def retry(self) -> int:
        """Run the failed jobs among these again from their first attempt; returns how many."""
        db = self.db or "default"
        with write_transaction(db):
            retried = self.allowing("retry").update(**_retry_changes(), updated_at=DbNow())
        if retried:
            wake_workers(db, self.values_list("queue", flat=True).distinct().order_by())
        return retried

    def delete_finished(self) -> int:
        """Delete the finished jobs among these (never a pending or running job, nor a
        recurring row the code declares); returns how many. Their runs stay, unlinked."""
        db = self.db or "default"
        doomed = self.allowing("delete_finished")
        with write_transaction(db):
            # Locked first (SQLite's write lock already holds them all): no retry or run now
            # can make one of them pending between this look and the delete.
            ids = list(doomed.select_for_update().order_by().values_list("pk", flat=True))
            if ids:
                # Only the key: a row whose data Python cannot load can still be deleted.
                Job.objects.using(db).filter(pk__in=ids).only("pk").delete()
        return len(ids)

    # The one home for creating job rows: schedule(), schedule_many(), now(), run-now copies,
    # the tasks backend and the recurring sync all come here, and every new row that is due
    # soon wakes idle workers once its transaction commits.

    def create_job(self, *, unique_key: str | None = None, **fields: Any) -> tuple[Job, bool]:
        """Insert one job (fields already validated); returns (job, created).

        With `unique_key`, an existing row holding the key is returned instead (created False).
        """
        db = self.db
        capture(fields)  # the scheduling code's trace context, when OpenTelemetry is installed
        fields["limited"] = is_limited(fields.get("name", ""), fields.get("lock_key"))
        if unique_key is None:
            job = insert_job(Job, db or "default", fields)
            if job is not None:
                return job, True  # type: ignore[return-value]
            return _woken(self.create(**fields), fields), True
        existing = self.filter(unique_key=unique_key).first()
        if existing is not None:
            return existing, False
        try:
            with write_transaction(db or "default"):
                return _woken(self.create(unique_key=unique_key, **fields), fields), True
        except IntegrityError:
            # Another process created the same key between our look and our insert.
            existing = self.filter(unique_key=unique_key).first()
            if existing is None:
                raise
            return existing, False

    def create_jobs(self, rows: list[dict[str, Any]], *, batch_size: int = 1000) -> list[Job]:
        """Insert many jobs (the fields of each, already validated) with one INSERT per batch."""
        capture_many(rows)
        for row in rows:
            row["limited"] = is_limited(row["name"], row.get("lock_key"))
        fast = insert_jobs(Job, self.db or "default", rows, batch_size)
        if fast is not None:
            return fast  # type: ignore[return-value]
        jobs = [Job(**row) for row in rows]
        created: list[Job] = self.bulk_create(jobs, batch_size=batch_size)  # type: ignore[arg-type,assignment]
        soonest = min((j.next_run_at for j in created if j.next_run_at is not None), default=None)
        if soonest is not None:
            wake_workers(self.db, {j.queue for j in created}, due_at=soonest)
        return created


def is_limited(name: str, lock_key: str | None) -> bool:
    """Whether a new job of `name` is claimed under a cluster-wide count: its definition has a
    concurrency or a rate limit, or it has a lock key. The ordinary claim skips such rows."""
    definition = registry.get(name)
    return lock_key is not None or (definition is not None and definition.limited)


class Job(models.Model):
    """One scheduled job: a one-off, a job waiting for its retry, or a recurring definition."""

    name = models.CharField(_("name"), max_length=200)
    data = models.JSONField(_("data"), default=dict, blank=True)
    queue = models.CharField(_("queue"), max_length=100, default="default")
    priority = models.SmallIntegerField(_("priority"), default=0, help_text=_("Higher runs first."))
    state = models.CharField(
        _("state"), max_length=16, choices=JobState.choices, default=JobState.SCHEDULED
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    next_run_at = models.DateTimeField(_("next run at"), null=True, blank=True, default=_now)
    schedule = models.CharField(
        _("schedule"),
        max_length=200,
        blank=True,
        help_text=_('Cron expression or interval ("every 5 minutes") of a recurring job.'),
    )
    timezone = models.CharField(_("timezone"), max_length=64, default="UTC")
    schedule_overridden = models.BooleanField(
        _("schedule overridden"),
        default=False,
        help_text=_(
            "Set when the schedule was changed in the admin, so workers keep it instead of "
            "the schedule declared in code."
        ),
    )
    unique_key = models.CharField(
        _("unique key"),
        max_length=255,
        null=True,
        blank=True,
        unique=True,
        help_text=_("Held while the job is pending, so scheduling the same key twice is a no-op."),
    )
    lock_key = models.CharField(
        _("lock key"),
        max_length=LOCK_KEY_MAX_LENGTH,
        null=True,
        blank=True,
        editable=False,
        help_text=_("Jobs with the same lock key never run at the same time."),
    )
    limited = models.BooleanField(
        _("limited"),
        default=False,
        editable=False,
        help_text=_(
            "Claimed under a cluster-wide count: its job's concurrency or rate limit, or its "
            "lock key."
        ),
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveIntegerField(_("max attempts"), default=3)
    failure_count = models.PositiveIntegerField(_("failures"), default=0)
    locked_by = models.CharField(_("locked by"), max_length=255, null=True, blank=True)
    lock_token = models.CharField(max_length=32, null=True, blank=True, editable=False)
    locked_until = models.DateTimeField(_("locked until"), null=True, blank=True)
    last_started_at = models.DateTimeField(_("last started at"), null=True, blank=True)
    last_finished_at = models.DateTimeField(_("last finished at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    last_error_class = models.CharField(
        _("last error class"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Import path of the exception class that failed the last run."),
    )
    last_traceback = models.TextField(_("last traceback"), blank=True)
    note = models.TextField(
        _("note"),
        blank=True,
        help_text=_("Why django_jobs itself changed this job, e.g. disabled at a sync."),
    )
    trace_context = models.JSONField(
        _("trace context"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "W3C trace context (traceparent, tracestate) of the code that scheduled the job; "
            "its run continues that trace when OpenTelemetry is installed."
        ),
    )
    cancel_requested_at = models.DateTimeField(
        _("cancel requested at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When someone asked the worker to stop this running job (database clock)."),
    )
    cancel_requested_by = models.CharField(
        _("cancel requested by"), max_length=CANCELLED_BY_MAX_LENGTH, blank=True, editable=False
    )
    progress = models.FloatField(_("progress"), null=True, blank=True)
    progress_message = models.CharField(_("progress message"), max_length=255, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    task_backend = models.CharField(
        _("task backend"),
        max_length=100,
        blank=True,
        help_text=_("Alias of the Django tasks backend that enqueued this job, if any."),
    )
    created_at = models.DateTimeField(_("created at"), default=_now)
    updated_at = models.DateTimeField(_("updated at"), default=_now)

    objects = JobQuerySet.as_manager()

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-id"]
        permissions = [
            ("run_job", _("Can run a job now or retry it")),
            ("reschedule_job", _("Can reschedule a job")),
            ("cancel_running_job", _("Can cancel a running job")),
        ]
        indexes = [
            # Serves the claim: equality on state/enabled/queue, then priority and due time order,
            # and the queues page. PostgreSQL's leaves out running jobs (migration 0019).
            models.Index(
                fields=["state", "enabled", "queue", "-priority", "next_run_at"],
                name="django_jobs_claim_idx",
            ),
            # PostgreSQL's holds running jobs only, on (locked_by, locked_until) (migration 0020).
            models.Index(fields=["state", "locked_until"], name="django_jobs_lock_idx"),
            models.Index(fields=["name", "state"], name="django_jobs_name_state_idx"),
            models.Index(fields=["next_run_at"], name="django_jobs_next_run_idx"),
            # Serves the claim of a worker that takes every queue: without it the database
            # sorts every due row to find the first ten (benchmarks/bench.py, workload W4).
            models.Index(
                fields=["state", "enabled", "-priority", "next_run_at", "id"],
                name="django_jobs_due_idx",
            ),
            # Serves the claim of limited jobs (claiming/limits.py): an idle worker finds at
            # once that none is due, however many ordinary jobs are.
            models.Index(
                fields=["limited", "state", "enabled", "-priority", "next_run_at", "id"],
                name="django_jobs_limited_idx",
            ),
            # Counts the running jobs of a lock key.
            models.Index(fields=["lock_key", "state"], name="django_jobs_lock_key_idx"),
        ]
        constraints = [
            # The one value a user writes as a time: kept where every backend and Python
            # itself can read it back, so no row can stop a worker or the admin.
            models.CheckConstraint(
                condition=models.Q(next_run_at__isnull=True)
                | models.Q(next_run_at__gte=EARLIEST_TIME, next_run_at__lte=LATEST_TIME),
                name="django_jobs_next_run_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}"

    @property
    def recurring(self) -> bool:
        return bool(self.schedule)

    @property
    def attempt(self) -> int:
        """The number of the attempt running now (1 for the first run)."""
        return self.attempts

    @property
    def is_due(self) -> bool:
        return (
            self.state == JobState.SCHEDULED
            and self.enabled
            and self.next_run_at is not None
            and self.next_run_at <= timezone.now()
        )

    def set_progress(self, fraction: float | None, message: str = "") -> bool:
        """Record how far a running job has got (0.0 to 1.0); False if its lock was lost."""
        if fraction is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
        self.progress, self.progress_message = fraction, message[:255]
        return bool(self._owned().update(progress=fraction, progress_message=self.progress_message))

    @property
    def stop_requested(self) -> bool:
        """True once this running job passed its timeout or was cancelled: a sync job that
        runs long should look now and then, and return (or call check_stop())."""
        stop = getattr(self, "_stop", None)  # set by the worker that runs it
        return stop is not None and stop.requested

    def check_stop(self) -> None:
        """Raise JobStopped if the job should stop (see stop_requested)."""
        stop = getattr(self, "_stop", None)
        if stop is not None and stop.requested:
            why = "was cancelled" if stop.reason == STOP_CANCEL else "passed its timeout"
            raise JobStopped(f"Job {self} {why}; it stopped at check_stop().")

    def _owned(self) -> JobQuerySet:
        """This row, only while the claim this instance came from still holds it."""
        return Job.objects.using(self._state.db).filter(
            pk=self.pk, state=JobState.RUNNING, lock_token=self.lock_token
        )

    # State changes used by the admin and the API; each is guarded by the state it starts from
    # and written as one conditional UPDATE, so it cannot race a worker's claim.

    def _transition(self, action: str, verb: str, **changes: Any) -> None:
        """Apply `changes` if the row is in a state `action` may start from (states.ACTIONS)."""
        changes.setdefault("updated_at", DbNow())
        allowed = allowed_states(action, recurring=self.recurring)
        touched = (
            Job.objects.using(self._state.db)
            .filter(pk=self.pk, state__in=list(allowed))
            .update(**changes)
        )
        if not touched:
            self.refresh_from_db(fields=["state"])
            raise JobStateError(f"Cannot {verb} job {self} while it is {self.get_state_display()}.")
        self.refresh_from_db()

    def run_now(self) -> Job:
        """Make the job due now; for a recurring job, run a one-off copy so its schedule stays."""
        if self.recurring:
            copy, _ = Job.objects.using(self._state.db).create_job(
                name=self.name,
                data=self.data,
                queue=self.queue,
                priority=self.priority,
                max_attempts=self.max_attempts,
                next_run_at=DbNow(),
            )
            return copy
        finished = list(FINISHED_STATES)
        self._transition(
            "run_now",
            "run now",
            # Before state=: MySQL/MariaDB evaluate SET assignments left to right, so a CASE
            # after it would see the new state and never reset the attempts.
            attempts=models.Case(
                models.When(state__in=finished, then=models.Value(0)),
                default=F("attempts"),
                # Value(0) is an IntegerField: without this the types clash and Django refuses.
                output_field=models.PositiveIntegerField(),
            ),
            state=JobState.SCHEDULED,
            next_run_at=DbNow(),
        )
        return self._wake_workers()

    def retry(self) -> Job:
        """Run a failed job again from its first attempt."""
        self._transition("retry", "retry", **_retry_changes())
        return self._wake_workers()

    def reschedule(self, at: datetime) -> Job:
        """Move a pending or failed one-off job, or the next run of a recurring job, to `at`."""
        if timezone.is_naive(at):
            raise InvalidSchedule(
                f"Cannot reschedule job {self} to the naive datetime {at!r}. Pass an aware "
                "datetime, e.g. django.utils.timezone.make_aware(value)."
            )
        at = check_when(at, name="at")  # within the bounds, in UTC (PostgreSQL refuses +16h)
        reset = {} if self.state == JobState.SCHEDULED else {"attempts": 0}
        self._transition(
            "reschedule",
            "reschedule",
            state=JobState.SCHEDULED,
            next_run_at=at,
            **reset,
        )
        return self._wake_workers(due_at=at)

    def change_schedule(self, expression: str, tz_name: str) -> Job:
        """Give a recurring job a new cron expression or interval and timezone."""
        if not self.recurring:
            raise JobStateError(
                f"Cannot change the schedule of job {self}: it is a one-off job; reschedule it "
                "to a new time instead."
            )
        parsed = parse_schedule(expression)
        get_timezone(tz_name)
        at = first_run(parsed, tz_name, timezone.now())
        # sync_recurring keeps an overridden schedule at the next worker start; setting the
        # schedule the code declares hands the row back to the code.
        from_code = owned_by_code(self.name, parsed.expression, tz_name)
        self._transition(
            "change_schedule",
            "change the schedule of",
            schedule=parsed.expression,
            timezone=tz_name,
            schedule_overridden=not from_code,
            next_run_at=models.Case(
                models.When(state=JobState.RUNNING, then=F("next_run_at")), default=models.Value(at)
            ),
            state=models.Case(
                models.When(state=JobState.RUNNING, then=F("state")),
                default=models.Value(JobState.SCHEDULED),
            ),
        )
        return self._wake_workers(due_at=self.next_run_at)

    def disable(self) -> Job:
        """Stop the job from being claimed; a run in progress finishes."""
        self._transition("disable", "disable", enabled=False)
        return self

    def enable(self) -> Job:
        self._transition("enable", "enable", enabled=True)
        return self._wake_workers(due_at=self.next_run_at)

    def _wake_workers(self, due_at: datetime | None = None) -> Job:
        """Wake idle workers (after commit) when this job is due now or within a poll interval."""
        if self.state == JobState.SCHEDULED and self.enabled:
            wake_workers(self._state.db or "default", [self.queue], due_at=due_at)
        return self

    def cancel_running(self, by: str = "") -> Job:
        """Ask the worker running this job to stop it; its run is recorded as cancelled.

        The worker learns of it at its next heartbeat, or at once on PostgreSQL when it has a
        free thread to listen with, and stops the job as a timeout does (see docs/controls.md).
        A job that never checks job.stop_requested keeps its lock until it returns.
        """
        self._transition(
            "cancel_running",
            "cancel the run of",
            cancel_requested_at=DbNow(),
            cancel_requested_by=check_text("by", by, CANCELLED_BY_MAX_LENGTH),
        )
        ask_to_stop(self._state.db or "default")
        return self

    @property
    def declared_in_code(self) -> bool:
        """The row of a recurring job the code declares: it can be disabled, not cancelled."""
        return declared_in_code(self.name, self.unique_key)

    def cancel(self) -> None:
        """Delete a job that is waiting to run. A running job is not (see cancel_running), nor
        a recurring job the code declares (see recurring.declared_in_code)."""
        if self.declared_in_code:
            raise JobStateError(declared_refusal(str(self)))
        with write_transaction(self._state.db or "default"):
            # Flip the state first: a worker's claim can no longer take the row once it is
            # cancelled, so the delete below never removes a job that started meanwhile.
            self._transition("cancel", "cancel", state=JobState.CANCELLED)
            # Only the key: a row whose data Python cannot load can still be cancelled.
            Job.objects.using(self._state.db).filter(pk=self.pk).only("pk").delete()

    def delete_finished(self) -> None:
        """Delete a finished job (succeeded, failed or cancelled): the admin's Delete. A
        pending or running job is refused (see cancel), as is a recurring row the code
        declares."""
        if self.declared_in_code:
            raise JobStateError(declared_refusal(str(self), doing="deleting"))
        if not Job.objects.using(self._state.db).filter(pk=self.pk).delete_finished():
            self.refresh_from_db(fields=["state"])  # DoesNotExist when someone deleted it
            raise JobStateError(
                f"Cannot delete job {self} while it is {self.get_state_display()}. Only "
                "finished jobs (succeeded, failed or cancelled) are deleted; cancel a waiting "
                "job instead."
            )


def _woken(job: Job, fields: dict[str, Any]) -> Job:
    """Wake idle workers for a new job due now or soon, once its transaction commits."""
    computed = [name for name, value in fields.items() if hasattr(value, "resolve_expression")]
    if computed:
        job.refresh_from_db(fields=computed)  # e.g. next_run_at=DbNow(): the stored value
    due_at = job.next_run_at
    wake_workers(job._state.db or "default", [job.queue], due_at=due_at)
    return job


class JobRun(models.Model):
    """One execution attempt of a job: the run history."""

    # No index of its own: (job, -started_at) below starts with it (one index fewer to write
    # at every run's insert and finish).
    job = models.ForeignKey(
        Job,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="runs",
        db_index=False,
    )
    job_name = models.CharField(_("job name"), max_length=200)
    attempt = models.PositiveIntegerField(_("attempt"), default=1)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=RunOutcome.choices, default=RunOutcome.RUNNING
    )
    worker_id = models.CharField(_("worker"), max_length=255)
    lock_token = models.CharField(max_length=32, editable=False)
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    error_class = models.CharField(
        _("error class"),
        max_length=255,
        blank=True,
        help_text=_("Import path of the exception class that failed the run."),
    )
    traceback = models.TextField(_("traceback"), blank=True)

    class Meta:
        verbose_name = _("job run")
        verbose_name_plural = _("job runs")
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["job", "-started_at"], name="django_jobs_run_job_idx"),
            # started_at alone: the index migration 0007 adds serves it ((started_at, outcome);
            # (started_at) on PostgreSQL since 0016, so that a finish is a HOT update).
            models.Index(fields=["job_name", "started_at"], name="django_jobs_run_name_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job_name} attempt {self.attempt} ({self.outcome})"

    @property
    def duration(self) -> timedelta | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.started_at


def new_run(job: Job, *, worker_id: str, lock_token: str, **fields: Any) -> JobRun:
    """The one way a JobRun is built: the attempt `job` is on, by `worker_id` under a claim."""
    fields.setdefault("outcome", RunOutcome.RUNNING)
    return JobRun(
        job_id=job.pk,
        job_name=job.name,
        attempt=job.attempts,
        worker_id=worker_id,
        lock_token=lock_token,
        **fields,
    )


def default_worker_expiry() -> datetime:
    """For a row made by hand: alive for one default lock lifetime (workers set their own)."""
    from .conf import settings

    return timezone.now() + timedelta(seconds=settings.LOCK_LIFETIME)


class WorkerQuerySet(models.QuerySet["Worker"]):
    """Each worker row carries its own expiry, set by its own heartbeat from its own lock
    lifetime, so workers started with different settings judge each other alike."""

    def alive(self) -> WorkerQuerySet:
        return self.filter(expires_at__gte=DbNow())

    def dead(self) -> WorkerQuerySet:
        return self.filter(expires_at__lt=DbNow())


class Worker(models.Model):
    """One live `runjobs` process; its heartbeat says it is alive."""

    worker_id = models.CharField(_("worker id"), max_length=255, unique=True)
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    queues = models.JSONField(_("queues"), default=list)
    concurrency = models.PositiveIntegerField(_("concurrency"))
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    last_heartbeat_at = models.DateTimeField(_("last heartbeat at"), default=timezone.now)
    expires_at = models.DateTimeField(
        _("expires at"),
        default=default_worker_expiry,
        help_text=_("The worker is dead once this passes without a heartbeat (database clock)."),
    )
    lock_lifetime = models.FloatField(_("lock lifetime"), default=30.0)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["hostname", "pid"]

    def __str__(self) -> str:
        return self.worker_id


class PauseKind(models.TextChoices):
    QUEUE = "queue", _("queue")
    NAME = "name", _("job name")


def paused_q() -> models.Q:
    """The Pause rows that hold back the job of the outer query: its queue's or its name's.

    The claim reads it in the same statement that locks the rows, so a pause that has
    committed holds for every claim that starts after it, on every host."""
    return models.Q(kind=PauseKind.QUEUE, value=OuterRef("queue")) | models.Q(
        kind=PauseKind.NAME, value=OuterRef("name")
    )


def unpaused_q() -> models.Q:
    """Jobs whose queue and name are not paused (see paused_q())."""
    return models.Q(~Exists(Pause.objects.filter(paused_q())))


class Pause(models.Model):
    """A queue or a job name that no worker claims from until it is resumed.

    Resuming deletes the row. Running jobs are not touched: they finish as usual.
    """

    kind = models.CharField(_("kind"), max_length=10, choices=PauseKind.choices)
    value = models.CharField(_("queue or job name"), max_length=NAME_MAX_LENGTH)
    paused_at = models.DateTimeField(_("paused at"), default=timezone.now)
    paused_by = models.CharField(_("paused by"), max_length=150, blank=True)
    reason = models.CharField(_("reason"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("paused queue or job name")
        verbose_name_plural = _("paused queues and job names")
        ordering = ["kind", "value"]
        # Pausing and resuming is one permission; the admin's add/delete stand for them.
        default_permissions = ("view",)
        permissions = [("pause_jobs", _("Can pause and resume queues and job names"))]
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="django_jobs_pause_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.value}"


# The overview's numbers kept by the workers (stats.py): on a big table the admin reads these
# instead of counting every job and every run of the day.


class StatsMark(models.Model):
    """The one row through which the workers take turns keeping the overview's numbers.

    Every time here is the database's: `taken_at` is a compare-and-set, so one worker of the
    cluster counts per period; `counted_at` dates the JobCount rows; the runs that started
    before `runs_through` are in RunCount.
    """

    key = models.CharField(max_length=32, primary_key=True)
    taken_at = models.DateTimeField(null=True, blank=True)
    counted_at = models.DateTimeField(null=True, blank=True)
    runs_through = models.DateTimeField(null=True, blank=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.key} counted at {self.counted_at}, runs through {self.runs_through}"


class JobCount(models.Model):
    """How many jobs had these values when a worker counted them (StatsMark.counted_at)."""

    name = models.CharField(max_length=NAME_MAX_LENGTH)
    state = models.CharField(max_length=16)
    enabled = models.BooleanField()
    is_due = models.BooleanField()
    is_recurring = models.BooleanField()
    count = models.BigIntegerField()

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.name} {self.state}: {self.count}"


class RunCount(models.Model):
    """How many runs started in this minute (UTC) had this outcome when a worker counted them.

    A minute that still held a running run is counted again at every refresh, so a finished
    run is counted under its final outcome."""

    minute = models.DateTimeField()
    outcome = models.CharField(max_length=16)
    count = models.BigIntegerField()

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "outcome"], name="django_jobs_runcount_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.outcome}: {self.count}"
