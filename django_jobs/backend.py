"""A backend for Django's tasks framework: @task functions stored as Job rows, run by runjobs.

    TASKS = {"default": {"BACKEND": "django_jobs.backend.JobsBackend"}}

A task becomes a Job whose name is the task's module path, whose data holds the arguments,
and whose result holds the return value; the result id is the job's primary key. Before a
worker runs such a row it imports the path and runs it only if it is a Task of the framework.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.checks import CheckMessage
from django.core.exceptions import ImproperlyConfigured
from django.dispatch import receiver
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string

from .conf import settings
from .exceptions import (
    InvalidJobData,
    InvalidOption,
    InvalidSchedule,
    InvalidTaskArguments,
    JobsError,
    UnknownTask,
)
from .registry import JobDefinition
from .signals import job_failed, job_succeeded
from .states import JobState, RunOutcome
from .tasks_compat import (
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
    task_finished,
    task_started,
)
from .validation import (
    ATTEMPTS,
    BACKOFF,
    NAME_MAX_LENGTH,
    QUEUE_RULE,
    check_json,
    check_nesting,
    check_queue,
    check_when,
    shown,
)

# The models load only where django_jobs is an installed app; without it, this module still
# imports, so that the framework's system checks can call JobsBackend.check() (E009).
if TYPE_CHECKING:
    from .models import Job, JobRun

logger = logging.getLogger(__name__)

STATUSES = {
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    # Never read in practice: a cancelled row is deleted in the same transaction.
    JobState.CANCELLED: TaskResultStatus.FAILED,
}
FINISHED = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}
OPTIONS = ("MAX_ATTEMPTS", "BACKOFF")
DEFAULT_MAX_ATTEMPTS = 1  # Django's tasks are not retried unless the project asks for it
WORKER_LOST = "django_jobs.exceptions.WorkerLost"
UNKNOWN_ERROR = "builtins.Exception"  # for an error stored without its exception class


class InvalidTaskOption(InvalidTask, InvalidOption):
    """A task option a Job row cannot hold: the framework's InvalidTask, and a JobsError."""


class InvalidTaskTime(InvalidTask, InvalidSchedule):
    """A run_after outside the times django_jobs stores: InvalidTask, and a JobsError."""


class JobsBackend(BaseTaskBackend):
    """Stores tasks as django_jobs Job rows, run by `manage.py runjobs` workers.

    OPTIONS: "MAX_ATTEMPTS" (runs before a failing task is failed for good; default 1, so no
    retries, as with Django's other backends) and "BACKOFF" (seconds before the first retry,
    doubled at each further one; default DJANGO_JOBS["BACKOFF_BASE"]). QUEUES are django_jobs
    queues, chosen by `runjobs --queue`.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        where = f"TASKS[{alias!r}]"
        if apps.is_installed("django_jobs"):  # else check() reports django_jobs.E009
            from .models import Job

            if len(alias) > Job._meta.get_field("task_backend").max_length:  # type: ignore[operator]
                raise InvalidTaskBackend(f"Task backend alias {alias!r} is too long; shorten it.")
        unknown = sorted(set(self.options) - set(OPTIONS))
        if unknown:
            raise InvalidTaskBackend(
                f"{where}['OPTIONS'] has the unknown key {unknown[0]!r}. "
                f"Known keys: {', '.join(OPTIONS)}."
            )
        self.max_attempts = self.options.get("MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)
        if not ATTEMPTS.accepts(self.max_attempts):
            raise InvalidTaskBackend(
                f"{where}['OPTIONS']['MAX_ATTEMPTS'] is {shown(self.max_attempts)}. Use "
                f"{ATTEMPTS.describe()} (1 runs a task once, without retries)."
            )
        self.backoff = self.options.get("BACKOFF", settings.BACKOFF_BASE)
        if not BACKOFF.accepts(self.backoff):
            raise InvalidTaskBackend(
                f"{where}['OPTIONS']['BACKOFF'] is {shown(self.backoff)}. Use {BACKOFF.describe()}."
            )
        for queue in self.queues:
            try:
                check_queue(queue)
            except JobsError:
                raise InvalidTaskBackend(
                    f"{where}['QUEUES'] has the invalid queue {shown(queue)}. Use {QUEUE_RULE}."
                ) from None

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        """Run by the framework's system checks: the app whose tables hold the tasks."""
        from .checks import check_tasks_app

        return [*super().check(**kwargs), *check_tasks_app(self.alias)]

    def _require_app(self) -> None:
        """Refuse, with the fix, rather than let the models fail with a bare RuntimeError."""
        from .checks import check_tasks_app

        for error in check_tasks_app(self.alias):
            raise ImproperlyConfigured(f"{error.msg} {error.hint}")

    def validate_task(self, task: Task) -> None:
        """The framework's checks, plus the bounds of a Job row (validation.py)."""
        super().validate_task(task)
        if len(task.module_path) > NAME_MAX_LENGTH:
            raise InvalidTaskOption(
                f"Task path {task.module_path!r} is longer than {NAME_MAX_LENGTH} characters; "
                "use a shorter module or function name."
            )
        try:
            check_queue(task.queue_name)
        except JobsError as exc:
            raise InvalidTaskOption(str(exc)) from None
        if task.run_after is not None:
            try:
                check_when(task.run_after, name="run_after")
            except JobsError as exc:
                raise InvalidTaskTime(str(exc)) from None

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> TaskResult:
        """Store the task as a Job row, due at its run_after (or now)."""
        self._require_app()
        from .models import Job

        self.validate_task(task)
        # A worker finds the task again by importing its path, so refuse one that would not.
        found = _import(task.module_path)
        if not isinstance(found, Task) or found.func is not task.func:
            raise InvalidTask(
                f"Task path {task.module_path!r} does not lead back to this task; bind the "
                "task to the name of its function, e.g. with the @task decorator."
            )
        data: dict[str, Any] = {
            "args": _json_arguments("args", list(args)),
            "kwargs": _json_arguments("kwargs", dict(kwargs)),
        }
        try:
            check_json(data)  # args and kwargs were each checked; this bounds their sum
        except InvalidJobData as exc:
            raise InvalidTaskArguments(str(exc)) from exc
        next_run_at = timezone.now()
        if task.run_after is not None:
            data["run_after"] = task.run_after.isoformat()
            next_run_at = check_when(task.run_after, name="run_after")  # in UTC
        job, _ = Job.objects.using(settings.DATABASE).create_job(
            name=task.module_path,
            data=data,
            queue=task.queue_name,
            priority=task.priority,
            next_run_at=next_run_at,
            max_attempts=self.max_attempts,
            task_backend=self.alias,
        )
        result = build_result(job, task, runs=[])
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as stored now; raises TaskResultDoesNotExist for an unknown id."""
        self._require_app()
        from .models import Job

        try:
            job = Job.objects.using(settings.DATABASE).exclude(task_backend="").get(pk=result_id)
        except (Job.DoesNotExist, ValueError, TypeError):
            raise TaskResultDoesNotExist(result_id) from None
        return build_result(job, load_task(job))


def _import(path: str) -> Any:
    try:
        return import_string(path)
    except Exception as exc:
        raise UnknownTask(
            f"Task path {path!r} cannot be imported ({type(exc).__name__}: {exc}); deploy the "
            "module that defines it, or delete the job."
        ) from exc


def _json_arguments(path: str, value: Any) -> Any:
    """Arguments as JSON, the way the framework normalizes them (tuples become lists)."""
    try:
        # normalize_json recurses: refuse deep nesting before it can hit the recursion limit.
        check_nesting(value, path)
        try:
            normalized = normalize_json(value)
        except (TypeError, ValueError) as exc:
            check_json(value, path)  # names the offending value
            raise InvalidTaskArguments(f"{path} cannot be stored as JSON: {exc}.") from exc
        # NaN, infinity, huge integers, NUL and non-string keys survive normalize_json.
        check_json(normalized, path)
    except InvalidJobData as exc:
        raise InvalidTaskArguments(str(exc)) from exc
    return normalized


def load_task(job: Job) -> Task:
    """The Task a row names, as it was enqueued; UnknownTask for anything that is not a Task."""
    found = _import(job.name)
    if not isinstance(found, Task):
        raise UnknownTask(
            f"{job.name!r} is a {type(found).__name__}, not a task of Django's tasks framework, "
            f"so job #{job.pk} is never run. Only functions decorated with @task run as tasks."
        )
    raw_run_after = job.data.get("run_after") if isinstance(job.data, dict) else None
    run_after: datetime | None = (
        parse_datetime(raw_run_after) if isinstance(raw_run_after, str) else None
    )
    try:
        return found.using(
            priority=job.priority,
            queue_name=job.queue,
            run_after=run_after,
            backend=job.task_backend,
        )
    except (InvalidTask, InvalidTaskBackend) as exc:
        raise UnknownTask(
            f"Job #{job.pk} cannot run as task {job.name!r} on backend {job.task_backend!r}: {exc}"
        ) from exc


def attempt_runs(job: Job) -> list[JobRun]:
    """One run per attempt of the job's current round (a retry from the admin starts anew)."""
    from .models import JobRun

    if not job.attempts:
        return []
    runs = (
        JobRun.objects.using(job._state.db)
        .filter(job_id=job.pk, attempt__lte=job.attempts)
        .exclude(outcome=RunOutcome.INTERRUPTED)  # handed back by a stopping worker: no attempt
        .order_by("started_at", "pk")
    )
    latest = {run.attempt: run for run in runs}
    return [latest[attempt] for attempt in sorted(latest)]


def _error(run: JobRun) -> TaskError:
    if run.outcome == RunOutcome.ORPHANED:
        return TaskError(exception_class_path=WORKER_LOST, traceback=run.error)
    return TaskError(
        exception_class_path=run.error_class or UNKNOWN_ERROR,
        traceback=run.traceback or run.error,
    )


def build_result(job: Job, task: Task, runs: list[JobRun] | None = None) -> TaskResult:
    """A TaskResult from the job row and its runs."""
    if runs is None:
        runs = attempt_runs(job)
    status = STATUSES[JobState(job.state)]
    # Runs purged from the history leave the job's own timestamps.
    fallback = job.last_started_at if job.attempts else None
    data = job.data if isinstance(job.data, dict) else {}
    result: TaskResult = TaskResult(
        task=task,
        id=str(job.pk),
        status=status,
        enqueued_at=job.created_at,
        started_at=runs[0].started_at if runs else fallback,
        last_attempted_at=runs[-1].started_at if runs else fallback,
        finished_at=job.last_finished_at if status in FINISHED else None,
        args=list(data.get("args") or []),
        kwargs=dict(data.get("kwargs") or {}),
        backend=job.task_backend,
        errors=[
            _error(run) for run in runs if run.outcome in (RunOutcome.FAILED, RunOutcome.ORPHANED)
        ],
        worker_ids=[run.worker_id for run in runs],
    )
    if status == TaskResultStatus.FAILED and not result.errors and job.last_error:
        # The runs were purged by retention before the job: keep the job's own last error.
        result.errors.append(
            TaskError(
                exception_class_path=job.last_error_class or UNKNOWN_ERROR,
                traceback=job.last_traceback or job.last_error,
            )
        )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.result)
    return result


def resolve_task(job: Job) -> tuple[Callable[[Job], Any], JobDefinition]:
    """What a worker runs for a task row: the Task it names, and never anything else."""
    task = load_task(job)
    backend = task.get_backend()
    if not isinstance(backend, JobsBackend):
        raise UnknownTask(
            f"Job #{job.pk} was enqueued by task backend {job.task_backend!r}, which is now a "
            f"{type(backend).__name__}, not a JobsBackend, so it was not run."
        )

    def run(running: Job) -> Any:
        result = build_result(running, task)
        task_started.send(type(backend), task_result=result)
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
        return normalize_json(value)

    definition = JobDefinition(
        name=job.name,
        func=task.func,
        priority=job.priority,
        queue=job.queue,
        max_attempts=job.max_attempts,
        backoff_base=float(backend.backoff),
        backoff_max=float(settings.BACKOFF_MAX),
        backoff_jitter=float(settings.BACKOFF_JITTER),
        is_async=iscoroutinefunction(task.func),
    )
    return run, definition


def _send_task_finished(job: Job) -> None:
    """Send task_finished with the outcome the worker has just written."""
    from .models import Job

    try:
        stored = Job.objects.using(job._state.db).get(pk=job.pk)
        task = load_task(stored)
        result = build_result(stored, task)
        if result.status not in FINISHED:
            return  # this worker lost the lock; the newer owner reports the outcome
        task_finished.send(type(task.get_backend()), task_result=result)
    except Exception:
        # The outcome is already stored; a failing receiver must not look like a failed write.
        logger.exception("Could not send task_finished for job %s.", job)


# The worker sends these with sender=Job; no sender filter, so that this module imports
# without the models.
@receiver(job_succeeded, dispatch_uid="django_jobs.backend.task_succeeded")
def _task_succeeded(sender: type[Job], job: Job, **kwargs: Any) -> None:
    if job.task_backend:
        _send_task_finished(job)


@receiver(job_failed, dispatch_uid="django_jobs.backend.task_failed")
def _task_failed(
    sender: type[Job], job: Job, exception: BaseException, will_retry: bool, **kwargs: Any
) -> None:
    # A refused row names no Task, so there is no TaskResult to send.
    if job.task_backend and not will_retry and not isinstance(exception, UnknownTask):
        _send_task_finished(job)
