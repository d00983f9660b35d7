"""JobsBackend for Django's tasks framework: enqueue, validation and results, in one process."""

from __future__ import annotations

import importlib
import math
import sys
from datetime import datetime, timedelta

import django
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from django_jobs import now
from django_jobs.backend import JobsBackend
from django_jobs.exceptions import (
    InvalidTaskArguments,
    TasksUnavailable,
    UnknownTask,
    WorkerLost,
)
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.tasks_compat import (
    FRAMEWORK,
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
)
from django_jobs.worker import resolve
from tests.clock_support import db_time
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

if django.VERSION >= (6, 0):
    from django.tasks import task
    from django.tasks.backends.base import BaseTaskBackend as FrameworkBase
    from django.tasks.exceptions import TaskResultMismatch
else:
    from django_tasks import task
    from django_tasks.backends.base import BaseTaskBackend as FrameworkBase
    from django_tasks.exceptions import TaskResultMismatch


def test_the_backend_is_built_on_the_framework_of_this_django_version():
    expected = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    assert expected == FRAMEWORK
    assert BaseTaskBackend is FrameworkBase
    backend = task_backends["default"]
    assert isinstance(backend, JobsBackend)
    assert isinstance(backend, FrameworkBase)
    assert backend.supports_defer
    assert backend.supports_priority
    assert backend.supports_get_result
    assert backend.supports_async_task


def test_without_the_framework_the_import_fails_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "django.tasks", None)
    monkeypatch.setitem(sys.modules, "django_tasks", None)
    monkeypatch.delitem(sys.modules, "django_jobs.tasks_compat")
    with pytest.raises(TasksUnavailable, match=r"django-dbjobs\[tasks\]") as caught:
        importlib.import_module("django_jobs.tasks_compat")
    assert isinstance(caught.value, ImportError)  # so TASKS reports "Could not find backend"


def test_enqueue_stores_a_job_row():
    result = tasks.add.enqueue(2, b=3)

    assert isinstance(result, TaskResult)
    job = Job.objects.get(pk=int(result.id))
    assert job.name == "tests.testapp.tasks.add"
    assert job.task_backend == "default"
    assert job.data == {"args": [2], "kwargs": {"b": 3}}
    assert job.queue == "default"
    assert job.priority == 0
    assert job.max_attempts == 1  # Django's tasks are not retried unless OPTIONS ask for it
    assert job.state == JobState.SCHEDULED
    assert job.next_run_at <= db_time()  # written by the database's clock, read by it

    assert result.status == TaskResultStatus.READY
    assert result.backend == "default"
    assert result.task.func is tasks.add.func
    assert result.args == [2]
    assert result.kwargs == {"b": 3}
    assert result.enqueued_at == job.created_at
    assert result.started_at is None
    assert result.finished_at is None
    assert result.last_attempted_at is None
    assert result.errors == []
    assert result.worker_ids == []
    assert result.attempts == 0
    assert not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value


def test_queue_priority_and_options_map_to_the_row():
    result = tasks.send_email.enqueue("ada@example.com")
    job = Job.objects.get(pk=result.id)
    assert (job.queue, job.priority) == ("emails", 5)

    high = tasks.add.using(priority=-100).enqueue(1, 1)
    assert Job.objects.get(pk=high.id).priority == -100

    retried = tasks.add.using(backend="retrying").enqueue(1, 1)
    job = Job.objects.get(pk=retried.id)
    assert (job.task_backend, job.max_attempts) == ("retrying", 3)
    assert retried.backend == "retrying"


def test_run_after_defers_the_row_and_comes_back_in_the_result():
    at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    result = tasks.add.using(run_after=at).enqueue(1, 2)

    job = Job.objects.get(pk=result.id)
    assert job.next_run_at == at
    assert not Job.objects.due().filter(pk=job.pk).exists()
    assert result.task.run_after == at
    assert tasks.add.get_result(result.id).task.run_after == at


def test_get_result_reads_the_row():
    result = tasks.echo.enqueue(1, (2, 3), name="x")
    fetched = tasks.echo.get_result(result.id)

    assert fetched.id == result.id
    assert fetched.status == TaskResultStatus.READY
    assert fetched.args == [1, [2, 3]]  # tuples come back as lists, as JSON stores them
    assert fetched.kwargs == {"name": "x"}
    assert fetched.enqueued_at == result.enqueued_at
    assert fetched.task == result.task

    # The finished state is what get_result reports, however it got there.
    Job.objects.filter(pk=result.id).update(
        state=JobState.SUCCEEDED, result={"ok": 1}, last_finished_at=timezone.now()
    )
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"ok": 1}
    assert result.finished_at is not None


def test_an_orphaned_run_is_an_error_and_an_interrupted_one_no_attempt():
    result = tasks.add.enqueue(1, 2)
    job = Job.objects.get(pk=result.id)
    lost = "Worker dead stopped renewing its lock (it died or lost the database)."
    JobRun.objects.create(
        job=job,
        job_name=job.name,
        attempt=1,
        worker_id="dead",
        outcome=RunOutcome.ORPHANED,
        error=lost,
    )
    # Handed back by a stopping worker: the attempt was given back (attempts went 2 -> 1).
    JobRun.objects.create(
        job=job,
        job_name=job.name,
        attempt=2,
        worker_id="stopped",
        outcome=RunOutcome.INTERRUPTED,
    )
    Job.objects.filter(pk=job.pk).update(attempts=1)

    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert result.worker_ids == ["dead"]
    [error] = result.errors
    assert error.exception_class is WorkerLost
    assert error.traceback == lost


def test_a_result_whose_runs_were_purged_keeps_the_job_error_and_times():
    result = tasks.fail.enqueue("x")
    started = timezone.now() - timedelta(days=40)
    Job.objects.filter(pk=result.id).update(
        state=JobState.FAILED,
        attempts=1,
        last_started_at=started,
        last_finished_at=started + timedelta(seconds=1),
        last_error="ValueError: x",
        last_error_class="builtins.ValueError",
        last_traceback="Traceback ...\nValueError: x",
    )
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.started_at == result.last_attempted_at == started
    assert result.finished_at == started + timedelta(seconds=1)
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert error.traceback.endswith("ValueError: x")

    # A job that stored no class (a lost worker's, or failed before the job kept it).
    Job.objects.filter(pk=result.id).update(last_error_class="")
    result.refresh()
    [error] = result.errors
    assert error.exception_class_path == "builtins.Exception"


def test_get_result_of_an_unknown_id_or_a_plain_job_does_not_exist():
    backend = task_backends["default"]
    plain_job = now("record")
    for result_id in ["999999", "not-a-number", str(plain_job.pk)]:
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)


def test_get_result_of_another_task_is_a_mismatch():
    result = tasks.add.enqueue(1, 2)
    with pytest.raises(TaskResultMismatch):
        tasks.echo.get_result(result.id)


def test_aenqueue_and_aget_result():
    async def enqueue_then_fetch():
        result = await tasks.async_add.aenqueue(1, 2)
        return result, await tasks.async_add.aget_result(result.id)

    result, fetched = async_to_sync(enqueue_then_fetch)()
    assert fetched.id == result.id
    assert fetched.status == TaskResultStatus.READY
    assert Job.objects.get(pk=result.id).name == "tests.testapp.tasks.async_add"


def test_enqueue_sends_task_enqueued():
    from django_jobs.tasks_compat import task_enqueued

    received = []

    def on_enqueued(sender, task_result, **kwargs):
        received.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(on_enqueued)
    try:
        result = tasks.add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(on_enqueued)
    assert received == [(JobsBackend, result.id, TaskResultStatus.READY)]


# Invalid tasks are refused with the framework's InvalidTask, before any row is written.


def test_a_task_not_defined_at_module_level_is_invalid():
    def local_function():
        pass

    with pytest.raises(InvalidTask, match="module level"):
        task(local_function)


def test_a_priority_out_of_range_or_not_whole_is_invalid():
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=101)
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=-101)
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=1.5)


def test_a_queue_the_backend_does_not_list_is_invalid():
    with pytest.raises(InvalidTask, match="nope"):
        tasks.add.using(queue_name="nope")
    # "retrying" lists no QUEUES, so only "default" is valid there.
    with pytest.raises(InvalidTask, match="emails"):
        tasks.add.using(backend="retrying", queue_name="emails")


def test_a_queue_name_a_job_row_cannot_hold_is_invalid_even_where_any_queue_is_allowed():
    open_backend = {"BACKEND": "django_jobs.backend.JobsBackend", "QUEUES": []}
    with override_settings(TASKS={**settings.TASKS, "open": open_backend}):
        assert tasks.add.using(backend="open", queue_name="anything").queue_name == "anything"
        with pytest.raises(InvalidTask, match="at most 100 characters"):
            tasks.add.using(backend="open", queue_name="q" * 101)
        with pytest.raises(InvalidTask, match="at most 100 characters"):
            tasks.add.using(backend="open", queue_name="")


def test_a_task_path_a_job_row_cannot_hold_is_invalid():
    def add(a, b):
        return a + b

    add.__qualname__ = "a" * 200  # module level as far as the framework can tell
    with pytest.raises(InvalidTask, match="longer than 200 characters"):
        task(add)


def test_takes_context_without_a_context_argument_is_invalid():
    with pytest.raises(InvalidTask, match="context"):
        task(takes_context=True)(tasks.plain)


def test_a_naive_run_after_is_invalid():
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=datetime(2030, 1, 1))


def test_a_task_whose_path_does_not_lead_back_to_it_is_refused():
    with pytest.raises(InvalidTask, match=r"tests\.testapp\.tasks\.plain"):
        tasks.misnamed.enqueue(1)
    assert not Job.objects.exists()


def test_arguments_that_are_not_json_are_refused_with_their_position():
    with pytest.raises(TypeError, match=r"args\[1\] is a datetime"):
        tasks.echo.enqueue(1, timezone.now())
    with pytest.raises(InvalidTaskArguments, match=r"kwargs\['x'\] is nan"):
        tasks.echo.enqueue(x=math.nan)
    with pytest.raises(InvalidTaskArguments, match=r"kwargs\['d'\] has the key 1"):
        tasks.echo.enqueue(d={1: "one"})
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"OPTIONS": {"MAX_ATTEMPTS": 0}}, "MAX_ATTEMPTS"),
        ({"OPTIONS": {"MAX_ATTEMPTS": True}}, "MAX_ATTEMPTS"),
        ({"OPTIONS": {"BACKOFF": -1}}, "BACKOFF"),
        ({"OPTIONS": {"BACKOFF": "10"}}, "BACKOFF"),
        ({"OPTIONS": {"RETRIES": 3}}, "unknown key 'RETRIES'"),
        ({"QUEUES": ["default", ""]}, "invalid queue ''"),
    ],
)
def test_invalid_backend_options_are_refused(params, message):
    with pytest.raises(InvalidTaskBackend, match=message):
        JobsBackend("broken", {"BACKEND": "django_jobs.backend.JobsBackend", **params})


def test_a_long_alias_is_refused():
    with pytest.raises(InvalidTaskBackend, match="too long"):
        JobsBackend("a" * 101, {})


# Rows the worker must refuse: only a Task of the framework is ever run.


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("os.system", "not a task of Django's tasks framework"),
        ("tests.testapp.tasks.plain", "not a task of Django's tasks framework"),
        ("tests.testapp.nowhere.add", "cannot be imported"),
        ("os", "cannot be imported"),
    ],
)
def test_resolve_refuses_a_row_that_names_anything_but_a_task(path, message):
    job = Job.objects.create(name=path, task_backend="default", data={"args": ["true"]})
    with pytest.raises(UnknownTask, match=message):
        resolve(job)


def test_resolve_refuses_a_row_of_a_backend_that_is_gone():
    job = Job.objects.create(name="tests.testapp.tasks.add", task_backend="gone", data={})
    with pytest.raises(UnknownTask, match="'gone'"):
        resolve(job)


def test_resolve_gives_the_task_and_the_backend_retry_policy():
    result = tasks.add.using(backend="retrying").enqueue(1, 2)
    func, definition = resolve(Job.objects.get(pk=result.id))
    assert callable(func)
    assert definition.func is tasks.add.func
    assert definition.max_attempts == 3
    assert definition.backoff_base == 0.01


# Task rows are jobs: the admin lists them and its state changes work on them.


def test_the_admin_lists_and_shows_task_rows(admin_client):
    result = tasks.add.enqueue(1, 2)
    # The search matches a job name exactly (docs/admin.md, "Search").
    changelist = admin_client.get(
        reverse("admin:django_jobs_job_changelist"), {"q": "tests.testapp.tasks.add"}
    )
    assert changelist.status_code == 200
    assert "tests.testapp.tasks.add" in changelist.content.decode()
    change = admin_client.get(reverse("admin:django_jobs_job_change", args=[result.id]))
    assert change.status_code == 200


def test_admin_state_changes_show_in_the_result():
    result = tasks.add.using(run_after=timezone.now() + timedelta(days=1)).enqueue(1, 2)
    job = Job.objects.get(pk=result.id)

    job.run_now()
    assert Job.objects.due().filter(pk=job.pk).exists()
    assert tasks.add.get_result(result.id).status == TaskResultStatus.READY

    job.cancel()
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result.id)
