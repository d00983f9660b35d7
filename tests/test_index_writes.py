"""Migrations 0016 to 0020 on PostgreSQL: partial indexes a claim and a finish write nothing
to, and run rows that a finish rewrites in place (HOT updates) rather than in every index of the
table."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from django_jobs.admin.search import search_jobs
from django_jobs.claiming import Outcome, claim_and_start, finish_many
from django_jobs.models import Job, JobRun

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="Migration 0016 changes PostgreSQL only: SQLite cannot match a partial index to "
        "a bound parameter and MariaDB has none, so both keep the models' full indexes.",
    ),
]

MIGRATION = import_module("django_jobs.migrations.0016_fewer_index_writes")
UNIQUE_KEY = import_module("django_jobs.migrations.0017_partial_unique_key")
DATA_INDEX = import_module("django_jobs.migrations.0018_partial_data_index")
WITHOUT_RUNNING = import_module("django_jobs.migrations.0019_claim_index_without_running")
ONE_RUNNING_INDEX = import_module("django_jobs.migrations.0020_one_running_index")


def index_definitions(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return dict(cursor.fetchall())


def run_table_options() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [JobRun._meta.db_table]
        )
        return list(cursor.fetchone()[0] or [])


def test_claim_and_lock_indexes_hold_only_the_rows_their_queries_ask_for():
    jobs = index_definitions(Job._meta.db_table)
    assert jobs["django_jobs_due_idx"].endswith("WHERE ((state)::text = 'scheduled'::text)")
    assert jobs["django_jobs_lock_idx"].endswith("WHERE ((state)::text = 'running'::text)")
    assert jobs["django_jobs_lock_key_idx"].endswith("WHERE (lock_key IS NOT NULL)")
    # The per-queue claim index leaves out running jobs: a claim writes nothing there, and
    # the admin reads every other state's queues from it (migration 0019).
    assert jobs["django_jobs_claim_idx"].endswith("WHERE (NOT ((state)::text = 'running'::text))")
    # The (name, state) index stays whole: a cluster-wide limit counts a name's running jobs
    # from it at each of its claims.
    assert "WHERE" not in jobs["django_jobs_name_state_idx"]
    runs = index_definitions(JobRun._meta.db_table)
    assert runs["django_jobs_run_chart_idx"].endswith("(started_at)")
    assert "outcome" not in " ".join(runs.values())
    assert run_table_options() == [f"fillfactor={MIGRATION.RUN_FILLFACTOR}"]


def test_the_migration_goes_back_to_the_full_indexes():
    # DDL is transactional on PostgreSQL: the test's transaction undoes both steps.
    with connection.schema_editor() as editor:
        MIGRATION.full_indexes(apps, editor)
    jobs = index_definitions(Job._meta.db_table)
    for name in ("django_jobs_due_idx", "django_jobs_lock_idx", "django_jobs_lock_key_idx"):
        assert "WHERE" not in jobs[name], name
    runs = index_definitions(JobRun._meta.db_table)
    assert runs["django_jobs_run_chart_idx"].endswith("(started_at, outcome)")
    assert run_table_options() == []
    with connection.schema_editor() as editor:
        MIGRATION.fewer_writes(apps, editor)
    test_claim_and_lock_indexes_hold_only_the_rows_their_queries_ask_for()


def hot_updates_of_runs() -> tuple[int, int]:
    """Updates of the run table in this transaction: (all, rewritten in place)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = "
            "%s::regclass",
            [JobRun._meta.db_table],
        )
        return cursor.fetchone()


def test_a_finish_rewrites_each_run_in_place():
    # An empty run table (undone with the test's transaction): the runs share a page with
    # the free fifth that the fillfactor keeps, whatever earlier tests left behind.
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(JobRun._meta.db_table)}")
    due = timezone.now() - timedelta(seconds=1)
    Job.objects.bulk_create(Job(name="record", next_run_at=due) for _ in range(20))
    claimed = claim_and_start(worker_id="w1", queues=[], limit=20, lock_lifetime=30)
    assert len(claimed) == 20
    before = hot_updates_of_runs()
    assert all(finish_many([Outcome(job, run) for job, run in claimed], using="default"))
    updated, in_place = (a - b for a, b in zip(hot_updates_of_runs(), before, strict=True))
    assert updated == 20
    assert in_place == 20
    assert set(JobRun.objects.values_list("outcome", flat=True)) == {"succeeded"}


def test_the_unique_key_index_holds_only_jobs_with_a_key():
    # PostgreSQL writes an entry in every index at each claim and finish, the NULL keys of
    # Django's unique constraint included, and again in its varchar_pattern_ops twin.
    on_key = [
        definition
        for definition in index_definitions(Job._meta.db_table).values()
        if "(unique_key" in definition
    ]
    assert on_key == [
        "CREATE UNIQUE INDEX django_jobs_unique_key ON public.django_jobs_job USING btree "
        "(unique_key) WHERE (unique_key IS NOT NULL)"
    ]


def test_a_key_is_still_held_once_and_found_by_its_index():
    Job.objects.create(name="record", unique_key="k1")
    Job.objects.bulk_create(Job(name="record") for _ in range(3))  # no key: as many as wanted
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(name="record", unique_key="k1")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = Job.objects.filter(unique_key="k1").explain()
    assert "django_jobs_unique_key" in plan, plan


def test_the_unique_key_migration_goes_back_to_django_s_constraint():
    with connection.schema_editor() as editor:
        UNIQUE_KEY.whole_key(apps, editor)
    on_key = [
        definition.split(" ON ")[0]
        for definition in index_definitions(Job._meta.db_table).values()
        if "(unique_key" in definition
    ]
    assert sorted(on_key) == [
        "CREATE INDEX django_jobs_job_unique_key_6e55413b_like",
        "CREATE UNIQUE INDEX django_jobs_job_unique_key_6e55413b_uniq",
    ]
    with connection.schema_editor() as editor:
        UNIQUE_KEY.partial_key(apps, editor)
    test_the_unique_key_index_holds_only_jobs_with_a_key()


def test_the_data_index_holds_only_jobs_with_data():
    # A job without arguments ({}) can match no key:value search, yet took an entry in the
    # GIN index at its insert, claim and finish.
    definition = index_definitions(Job._meta.db_table)["django_jobs_data_gin"]
    assert definition.endswith("USING gin (data jsonb_path_ops) WHERE (NOT (data = '{}'::jsonb))")


def test_a_key_value_search_is_answered_by_the_data_index():
    Job.objects.bulk_create(Job(name="record") for _ in range(3))
    wanted = Job.objects.create(name="record", data={"email": "ada@example.com"})
    Job.objects.create(name="record", data={"email": "bob@example.com"})
    found = search_jobs(Job.objects.all(), "email:ada@example.com", "default")
    assert list(found) == [wanted]
    # On five rows any path is as cheap as another, and the planner's pick moves with the
    # table's statistics (which other tests' ANALYZE leaves behind): take away the sequential
    # scan and the ordered walk of the primary key, and ask whether the data index answers.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
    plan = found.explain()
    assert "Bitmap Index Scan on django_jobs_data_gin" in plan, plan


def test_the_data_index_migration_goes_back_to_the_whole_index():
    with connection.schema_editor() as editor:
        DATA_INDEX.whole_index(apps, editor)
    definition = index_definitions(Job._meta.db_table)["django_jobs_data_gin"]
    assert definition.endswith("USING gin (data jsonb_path_ops)")
    with connection.schema_editor() as editor:
        DATA_INDEX.partial_index(apps, editor)
    test_the_data_index_holds_only_jobs_with_data()


def test_the_claim_index_answers_every_state_but_running():
    Job.objects.bulk_create(
        Job(name="record", queue=f"q{i % 3}", state=state, next_run_at=None)
        for i in range(30)
        for state in ("scheduled", "succeeded", "running")
    )
    # Which plan wins on a few rows is the planner's guess: the other index paths to these
    # rows are dropped inside the test's transaction, so each query is a range of the claim
    # index or a scan that sequential scans off makes show.
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX django_jobs_finished_idx, django_jobs_name_state_idx")
        cursor.execute("SET LOCAL enable_seqscan = off")
    queue_index_range = "Index Cond: (((state)::text = '{}'::text) AND (enabled = true) AND "
    for state in ("succeeded", "failed", "cancelled"):  # a claim's "scheduled" may take due_idx
        plan = Job.objects.filter(state=state, enabled=True, queue="q1").order_by().explain()
        assert "django_jobs_claim_idx" in plan, (state, plan)
        assert queue_index_range.format(state) in plan, (state, plan)
    plan = Job.objects.filter(state="running", queue="q1").order_by().explain()
    assert "django_jobs_claim_idx" not in plan, plan


def index_entries(index: str) -> int:
    """Heap tuples an index points to, live or not, read from its pages (pageinspect): an
    update that PostgreSQL cannot make in place adds one in every index whose condition the
    new row meets, and the old one stays until a vacuum."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pageinspect'")
        if cursor.fetchone() is None:
            pytest.skip("PostgreSQL's contrib module pageinspect is not installed")
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")  # undone with the test
        cursor.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::int", [index])
        pages = cursor.fetchone()[0]
        cursor.execute(
            "SELECT coalesce(sum(coalesce(cardinality(items.tids), 1)), 0) FROM "
            "generate_series(1, %s - 1) AS page, bt_page_stats(%s, page) AS stats, "
            "bt_page_items(%s, page) AS items WHERE stats.type = 'l' AND items.itemoffset > "
            "CASE WHEN stats.btpo_next = 0 THEN 0 ELSE 1 END",
            [pages, index, index],
        )
        return int(cursor.fetchone()[0])


def test_a_claim_writes_nothing_to_the_claim_index():
    index = "django_jobs_claim_idx"
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(Job._meta.db_table)} CASCADE")
    due = timezone.now() - timedelta(seconds=1)
    Job.objects.bulk_create(Job(name="record", next_run_at=due) for _ in range(5))
    assert index_entries(index) == 5
    claimed = claim_and_start(worker_id="w1", queues=[], limit=5, lock_lifetime=30)
    assert len(claimed) == 5
    assert index_entries(index) == 5  # a whole index: 10
    assert all(finish_many([Outcome(job, run) for job, run in claimed], using="default"))
    assert index_entries(index) == 10  # the finished rows


def test_the_migration_without_running_jobs_goes_back_to_the_whole_indexes():
    with connection.schema_editor() as editor:
        WITHOUT_RUNNING.whole_index(apps, editor)
    jobs = index_definitions(Job._meta.db_table)
    assert "WHERE" not in jobs["django_jobs_claim_idx"]
    with connection.schema_editor() as editor:
        WITHOUT_RUNNING.partial_index(apps, editor)
    test_claim_and_lock_indexes_hold_only_the_rows_their_queries_ask_for()


def test_the_jobs_gauge_reads_indexes_only():
    # The gauge counts waiting, running and failed jobs: no index holds all three (the claim
    # index leaves out running jobs), so one IN list over them would read the whole table.
    from django_jobs.metrics import gauge_counts

    Job.objects.bulk_create(
        Job(name="record", state=state, next_run_at=None)
        for state in ("scheduled", "running", "failed", "succeeded")
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    for counts in gauge_counts("default"):
        plan = counts.explain()
        assert "Seq Scan" not in plan, plan
    counted = {row[2]: row[3] for rows in gauge_counts("default") for row in rows}
    assert counted == {"scheduled": 1, "running": 1, "failed": 1}


def test_a_limit_counts_a_name_s_running_jobs_from_the_name_index():
    # At each claim of a limited group: a range of the (name, state) index, not every running
    # job of the cluster. Which plan wins on a few rows is the planner's guess, so the other
    # paths are taken away (the running jobs' index and the (name, id) index are dropped
    # inside the test's transaction): the count must still be a range of an index, which it
    # is only while the (name, state) index holds the running jobs.
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX django_jobs_lock_idx, django_jobs_name_id_idx")
        cursor.execute("SET LOCAL enable_seqscan = off")
    count = Job.objects.holding_slots().filter(name="n1").order_by()
    plan = count.explain()
    assert "django_jobs_name_state_idx" in plan, plan
    assert "Index Cond: (((name)::text = 'n1'::text) AND ((state)::text = 'running'::text))" in (
        plan
    ), plan


def test_running_jobs_have_one_index():
    # Recovery (by lock expiry) and a worker's running jobs (by worker) read one index of the
    # running jobs; a claim writes one entry there, not two (migration 0020).
    jobs = index_definitions(Job._meta.db_table)
    assert jobs["django_jobs_lock_idx"].endswith(
        "(locked_by, locked_until) WHERE ((state)::text = 'running'::text)"
    )
    assert "django_jobs_running_by_idx" not in jobs


def test_the_one_running_index_migration_goes_back():
    with connection.schema_editor() as editor:
        ONE_RUNNING_INDEX.two_indexes(apps, editor)
    jobs = index_definitions(Job._meta.db_table)
    assert jobs["django_jobs_lock_idx"].endswith(
        "(state, locked_until) WHERE ((state)::text = 'running'::text)"
    )
    assert jobs["django_jobs_running_by_idx"].endswith(
        "(locked_by) WHERE ((state)::text = 'running'::text)"
    )
    with connection.schema_editor() as editor:
        ONE_RUNNING_INDEX.one_index(apps, editor)
    test_running_jobs_have_one_index()


def btree_entries() -> dict[str, int]:
    """index_entries() of every B-tree index of the job table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE "
            "'%%USING btree%%'",
            [Job._meta.db_table],
        )
        names = [row[0] for row in cursor.fetchall()]
    return {name: index_entries(name) for name in names}


def test_a_claim_and_a_finish_write_five_and_six_index_entries_a_job():
    # The entries a claim adds: the primary key and the whole indexes by name and by next
    # run take the new row version, the running jobs' index the running job. A finish: the
    # four whole ones again, and the claim and finished jobs' indexes the ended job. (Before
    # migrations 0019 and 0020: 7 and 6.)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(Job._meta.db_table)} CASCADE")
    due = timezone.now() - timedelta(seconds=1)
    Job.objects.bulk_create(Job(name="record", next_run_at=due) for _ in range(5))
    inserted = btree_entries()
    claimed = claim_and_start(worker_id="w1", queues=[], limit=5, lock_lifetime=30)
    assert len(claimed) == 5
    after_claim = btree_entries()
    added = {name: after_claim[name] - inserted[name] for name in inserted}
    assert {name: n for name, n in added.items() if n} == {
        "django_jobs_job_pkey": 5,
        "django_jobs_name_state_idx": 5,
        "django_jobs_name_id_idx": 5,
        "django_jobs_next_run_idx": 5,
        "django_jobs_lock_idx": 5,
    }
    assert all(finish_many([Outcome(job, run) for job, run in claimed], using="default"))
    finished = btree_entries()
    added = {name: finished[name] - after_claim[name] for name in inserted}
    assert {name: n for name, n in added.items() if n} == {
        "django_jobs_job_pkey": 5,
        "django_jobs_name_id_idx": 5,
        "django_jobs_next_run_idx": 5,
        "django_jobs_claim_idx": 5,
        "django_jobs_name_state_idx": 5,
        "django_jobs_finished_idx": 5,
    }


def test_recovery_and_a_worker_s_running_jobs_read_the_running_index():
    from django_jobs.admin.overview import in_progress_count
    from django_jobs.models import Worker

    Job.objects.bulk_create(
        Job(name="n1", state="succeeded", next_run_at=None) for _ in range(2000)
    )
    Job.objects.bulk_create(
        Job(name="n1", state="running", locked_by=f"w{i % 3}", locked_until=timezone.now())
        for i in range(30)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Job._meta.db_table)}")
        cursor.execute("SET LOCAL enable_seqscan = off")
    stale = Job.objects.stale().order_by("locked_until").values_list("pk", "lock_token")[:100]
    assert "django_jobs_lock_idx" in stale.explain()
    workers = Worker.objects.annotate(running=in_progress_count())
    assert "django_jobs_lock_idx" in workers.explain()
