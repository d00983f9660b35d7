"""The enqueue hot path (inserting.py): the rows it writes are the ORM's, on every database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models.signals import post_init, pre_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_jobs import inserting, now, schedule, schedule_many
from django_jobs.models import Job
from tests.test_notify import listening, postgresql_only  # noqa: F401  (a fixture)
from tests.test_prepared_claims import prepared_statements

# Set by the database or at the call, so never compared.
MOVING = {"id", "created_at", "updated_at", "next_run_at"}


def stored(job: Job) -> dict[str, Any]:
    row = Job.objects.filter(pk=job.pk).values().get()
    return {k: v for k, v in row.items() if k not in MOVING}


def orm_row(**fields: Any) -> dict[str, Any]:
    """The row Model.create() writes for the same fields: what the fast path must match."""
    fields.setdefault("limited", False)
    return stored(Job.objects.create(**fields))


def same_instance(job: Job) -> None:
    """The returned instance holds what was stored, and knows it was saved, and where."""
    fresh = Job.objects.get(pk=job.pk)
    assert not job._state.adding and job._state.db == "default"
    for f in Job._meta.concrete_fields:
        assert getattr(job, f.attname) == getattr(fresh, f.attname), f.name


@pytest.mark.django_db
def test_a_job_from_now_is_the_row_the_orm_writes():
    job = now("record", {"a": [1, 2.5, True, None, "é"]}, priority="high", lock_key="k")
    assert stored(job) == orm_row(
        name="record",
        data={"a": [1, 2.5, True, None, "é"]},
        priority=10,
        lock_key="k",
        limited=True,
        max_attempts=job.max_attempts,
        queue=job.queue,
    )
    same_instance(job)


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_the_job_is_committed_in_one_statement_and_readable_at_once():
    # On PostgreSQL: the INSERT, its COMMIT and the NOTIFY in one query string.
    job = now("record", {"n": 1})
    same_instance(job)
    later = schedule(timedelta(hours=1), "record")
    assert later.next_run_at == Job.objects.get(pk=later.pk).next_run_at
    assert not connection.in_atomic_block and connection.get_autocommit()
    assert Job.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_job_made_in_a_rolled_back_transaction_is_gone():
    with pytest.raises(RuntimeError), transaction.atomic():
        job = now("record")
        assert Job.objects.filter(pk=job.pk).exists()
        raise RuntimeError("rolled back")
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_failed_insert_raises_djangos_error_and_leaves_the_connection_usable(monkeypatch):
    # name is NOT NULL: the database refuses the row.
    monkeypatch.setattr(Job._meta.get_field("name"), "get_db_prep_save", lambda v, connection: None)
    with pytest.raises(DatabaseError):
        now("record")
    monkeypatch.undo()
    assert not Job.objects.exists()
    now("record")  # not left in an aborted transaction
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_a_pre_save_receiver_still_hears_every_new_job():
    heard = []

    def receiver(sender: Any, instance: Job, **kwargs: Any) -> None:
        heard.append(instance.name)

    pre_save.connect(receiver, sender=Job)
    try:
        job = now("record")
    finally:
        pre_save.disconnect(receiver, sender=Job)
    assert heard == ["record"]
    same_instance(job)


@pytest.mark.django_db(transaction=True)
def test_captured_queries_and_execute_wrappers_see_the_insert():
    seen = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        job = now("record")
    with CaptureQueriesContext(connection) as captured:
        other = now("record")
    assert any(sql.startswith("INSERT") for sql in seen)
    assert any(q["sql"].startswith("INSERT") for q in captured.captured_queries)
    same_instance(job)
    same_instance(other)


@pytest.mark.django_db
def test_schedule_many_writes_the_rows_the_orm_writes_in_order_across_batches():
    at = timezone.now() + timedelta(hours=1)
    items: list[Any] = [
        ("now", "record", None),
        (at, "record", {"x": 1}),
        ("now", "record", {"x": True}, {"queue": "q2", "priority": 5}),
        ("in 2 hours", "record", {"x": 1.0}, {"lock_key": "k", "max_attempts": 7}),
        ("now", "record", {}),
    ]
    jobs = schedule_many(items, batch_size=2)
    assert [j.queue for j in jobs] == ["default", "default", "q2", "default", "default"]
    # 1, True and 1.0 are three values in JSON, however equal Python finds them.
    assert [stored(j)["data"] for j in jobs] == [{}, {"x": 1}, {"x": True}, {"x": 1.0}, {}]
    assert repr(stored(jobs[3])["data"]) == "{'x': 1.0}"
    assert Job.objects.get(pk=jobs[1].pk).next_run_at == at
    for job in jobs:
        same_instance(job)
    assert stored(jobs[3]) == orm_row(
        name="record",
        data={"x": 1.0},
        lock_key="k",
        limited=True,
        max_attempts=7,
        queue="default",
    )


@pytest.mark.django_db
def test_schedule_many_of_one_shared_row_and_of_nothing():
    assert schedule_many([]) == []
    (job,) = schedule_many([("now", "record", None)])
    same_instance(job)
    jobs = schedule_many([("now", "record", {"same": "data"})] * 3)
    assert len({j.pk for j in jobs}) == 3
    assert all(stored(j)["data"] == {"same": "data"} for j in jobs)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_in_autocommit_the_notify_follows_the_commit_and_a_failed_insert_sends_none(
    listening,  # noqa: F811  (the fixture imported above)
    monkeypatch,
):
    job = now("record", queue="fast")
    assert listening() == ["fast"]
    assert Job.objects.filter(pk=job.pk).exists()

    monkeypatch.setattr(Job._meta.get_field("name"), "get_db_prep_save", lambda v, connection: None)
    with pytest.raises(DatabaseError):
        now("record", queue="failed")
    assert listening(timeout=0.3) == []


@pytest.mark.django_db
def test_post_init_receivers_see_every_returned_job_and_the_jobs_save_as_any_other():
    seen = []

    def receiver(sender: Any, instance: Job, **kwargs: Any) -> None:
        seen.append(instance.name)

    post_init.connect(receiver, sender=Job)
    try:
        jobs = [now("record"), *schedule_many([("now", "record", None)] * 2)]
    finally:
        post_init.disconnect(receiver, sender=Job)
    assert seen == ["record"] * 3
    fast = schedule_many([("now", "record", None)])[0]
    for job in (*jobs, fast):
        same_instance(job)
        job.priority = 3
        job.save(update_fields=["priority"])
        job.refresh_from_db()
        assert job.priority == 3 and str(job) == f"record #{job.pk}"


@pytest.mark.django_db(transaction=True)
def test_schedule_many_stores_all_batches_or_none_and_the_connection_stays_usable(monkeypatch):
    queue = Job._meta.get_field("queue")
    real = queue.get_db_prep_save

    # queue is NOT NULL: the database refuses the row of the third batch.
    def refused(value: Any, connection: Any) -> Any:
        return None if value == "boom" else real(value, connection)

    monkeypatch.setattr(queue, "get_db_prep_save", refused)
    items: list[Any] = [("now", "record", {"n": n}) for n in range(5)]
    items.append(("now", "record", {}, {"queue": "boom"}))
    with pytest.raises(DatabaseError):
        schedule_many(items, batch_size=2)
    assert not Job.objects.exists()
    monkeypatch.undo()
    jobs = schedule_many(items[:5], batch_size=2)
    assert [stored(j)["data"] for j in jobs] == [{"n": n} for n in range(5)]


@pytest.mark.django_db
def test_schedule_many_with_queries_captured_sends_one_insert_per_batch():
    with CaptureQueriesContext(connection) as captured:
        jobs = schedule_many([("now", "record", {"n": n}) for n in range(5)], batch_size=2)
    inserts = [q for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 3
    assert [stored(j)["data"] for j in jobs] == [{"n": n} for n in range(5)]
    for job in jobs:
        same_instance(job)


@pytest.mark.django_db
def test_a_batch_larger_than_the_backends_bind_limit_is_split_and_keeps_its_order():
    # SQLite binds at most 999 values per statement in Django's reckoning: 250 rows of
    # 10 values go in three statements there, in one elsewhere.
    jobs = schedule_many([("now", "record", {"n": n}) for n in range(250)], batch_size=1000)
    assert [stored(j)["data"]["n"] for j in jobs] == list(range(250))
    assert Job.objects.count() == 250
    assert [j.pk for j in jobs] == sorted(j.pk for j in jobs)


def test_only_plain_constants_are_written_as_literals():
    assert inserting._plain_literal(None) == "NULL"
    assert inserting._plain_literal(True) == "1"
    assert inserting._plain_literal(0) == "0"
    assert inserting._plain_literal("scheduled") == "'scheduled'"
    assert inserting._plain_literal("") == "''"
    for value in ("it's", "back\\slash", "50%", 1.5, b"x", {"a": 1}):
        assert inserting._plain_literal(value) is None


# Closing the driver's connection under Django stands for a server restart on PostgreSQL;
# SQLite's connections never go stale, and MySQLdb's refuse to be closed twice.
@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_with_health_checks_a_connection_that_died_is_replaced_before_the_insert():
    now("record")
    connection.health_check_enabled, connection.health_check_done = True, False
    connection.connection.close()  # as a server restart between two requests would
    try:
        job = now("record")
        jobs = schedule_many([("now", "record", None)] * 2)
    finally:
        connection.health_check_enabled = False
    assert Job.objects.filter(pk__in=[job.pk, *(j.pk for j in jobs)]).count() == 3


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_in_autocommit_a_failed_notify_is_logged_and_the_stored_job_returned(monkeypatch, caplog):
    # PostgreSQL refuses a channel name of more than 63 bytes in pg_notify(), after the
    # COMMIT of the job: as when its notification queue is full.
    monkeypatch.setattr(inserting, "CHANNEL", "c" * 100)
    job = now("record")
    assert Job.objects.filter(pk=job.pk).exists()
    assert "Could not notify workers of new jobs" in caplog.text
    assert not connection.in_atomic_block and Job.objects.count() == 1


def server_statements() -> list[str]:
    """The statements this session prepared with SQL PREPARE (not psycopg's own)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE from_sql ORDER BY name")
        return [name for (name,) in cursor.fetchall()]


@contextlib.contextmanager
def prepared_inserts() -> Iterator[None]:
    """Prepared statements on (as OPTIONS["prepare_threshold"]), and none left afterwards."""
    with prepared_statements():
        yield
    inserting._PREPARED.pop(connection.connection, None)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_with_prepared_statements_the_insert_is_prepared_once_and_writes_the_orms_row(
    listening,  # noqa: F811  (the fixture imported above)
):
    with prepared_inserts():
        first = now("record", {"a": [1, 2.5, "é"]}, priority="high", lock_key="k", queue="50%s")
        assert server_statements() == ["django_jobs_insert_1"]
        second = now("record", {"it's": "50%s"}, queue="50%s")
        assert server_statements() == ["django_jobs_insert_1"]  # not prepared again
    assert listening(expect=2) == ["50%s", "50%s"]
    assert stored(first) == orm_row(
        name="record",
        data={"a": [1, 2.5, "é"]},
        priority=10,
        lock_key="k",
        limited=True,
        max_attempts=first.max_attempts,
        queue="50%s",
    )
    assert stored(second)["data"] == {"it's": "50%s"}
    same_instance(first)
    same_instance(second)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_prepared_insert_deallocated_behind_its_back_stores_the_job_once_and_comes_back():
    with prepared_inserts():
        now("record")
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")  # as a pooler's reset query would
        job = now("record", {"n": 2})
        assert Job.objects.filter(data={"n": 2}).count() == 1
        same_instance(job)
        now("record", {"n": 3})
        assert server_statements() == ["django_jobs_insert_1"]  # prepared again
    assert Job.objects.count() == 3


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_name_the_session_already_holds_turns_prepared_inserts_off_for_it():
    with prepared_inserts():
        with connection.cursor() as cursor:
            cursor.execute("PREPARE django_jobs_insert_1 AS SELECT 1")  # not ours
        job = now("record")
        now("record")
        same_instance(job)
        assert inserting._PREPARED[connection.connection] is None
    assert Job.objects.count() == 2


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_failed_prepared_insert_raises_djangos_error_stores_nothing_and_sends_none(
    listening,  # noqa: F811  (the fixture imported above)
    monkeypatch,
):
    with prepared_inserts():
        now("record")
        assert listening() == ["default"]
        monkeypatch.setattr(
            Job._meta.get_field("name"), "get_db_prep_save", lambda v, connection: None
        )
        with pytest.raises(DatabaseError):
            now("record", queue="failed")
        monkeypatch.undo()
        assert listening(timeout=0.3) == []
        now("record")  # the connection is usable, the statement still prepared
        assert server_statements() == ["django_jobs_insert_1"]
    assert Job.objects.count() == 2
