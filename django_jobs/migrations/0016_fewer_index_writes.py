"""Fewer index entries written at every claim and finish on PostgreSQL (issue 13: the
database's share of a run).

PostgreSQL writes a new entry in every index of a table when an update changes an indexed
column, except in a partial index whose condition the new row does not meet. A claim turns a
job from scheduled to running and a finish from running to an end state, so:

- The claim index of a worker that takes every queue (`due_idx`) holds scheduled jobs only:
  the claim asks for scheduled jobs. A claim or a finish writes nothing there; a retry, which
  schedules the job again, one entry. The per-queue claim index (`claim_idx`) stays whole:
  the admin lists the queues of every state from it (admin/queues.py, a loose index scan).
- The lock index (`lock_idx`) holds running jobs only: it serves lock recovery, which looks
  for running jobs whose lock ran out. A finish writes nothing there.
- The lock key index (`lock_key_idx`) holds jobs with a lock key only.
- The runs' chart index becomes `(started_at)` alone and the run table keeps a fifth of each
  page free (fillfactor 80): a run's finish then changes no indexed column and PostgreSQL
  rewrites the row in place (a HOT update) without touching any of the run table's five
  indexes. The overview's chart reads the outcome from the table for the minutes that the
  workers' counts (stats.py) do not hold yet; the run list keeps its order by start time.

Every query that uses these indexes names the state (or the lock key) as a constant, so the
planner proves it meets the condition; the claim's parameters are bound as values of an
unnamed statement, which PostgreSQL plans with those values. The models keep declaring the
full indexes, which SQLite and MariaDB keep (SQLite cannot match a partial index to a bound
parameter, and MariaDB has none). Measured: docs/performance.md (the database's CPU per job
in W1).
"""

from typing import Any

from django.db import migrations, models

SCHEDULED = models.Q(state="scheduled")
RUNNING = models.Q(state="running")

DUE = ["state", "enabled", "-priority", "next_run_at", "id"]
LOCK = ["state", "locked_until"]
LOCK_KEY = ["lock_key", "state"]

# (model, index before, index after), each pair under one name.
SWAPS = [
    (
        "job",
        models.Index(fields=DUE, name="django_jobs_due_idx"),
        models.Index(fields=DUE, condition=SCHEDULED, name="django_jobs_due_idx"),
    ),
    (
        "job",
        models.Index(fields=LOCK, name="django_jobs_lock_idx"),
        models.Index(fields=LOCK, condition=RUNNING, name="django_jobs_lock_idx"),
    ),
    (
        "job",
        models.Index(fields=LOCK_KEY, name="django_jobs_lock_key_idx"),
        models.Index(
            fields=LOCK_KEY,
            condition=models.Q(lock_key__isnull=False),
            name="django_jobs_lock_key_idx",
        ),
    ),
    (
        "jobrun",
        models.Index(fields=["started_at", "outcome"], name="django_jobs_run_chart_idx"),
        models.Index(fields=["started_at"], name="django_jobs_run_chart_idx"),
    ),
]

RUN_FILLFACTOR = 80


def _run_table(apps: Any) -> str:
    return str(apps.get_model("django_jobs", "JobRun")._meta.db_table)


def fewer_writes(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for model_name, old, new in SWAPS:
        model = apps.get_model("django_jobs", model_name)
        schema_editor.remove_index(model, old)
        schema_editor.add_index(model, new)
    table = schema_editor.quote_name(_run_table(apps))
    schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {RUN_FILLFACTOR})")


def full_indexes(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for model_name, old, new in reversed(SWAPS):
        model = apps.get_model("django_jobs", model_name)
        schema_editor.remove_index(model, new)
        schema_editor.add_index(model, old)
    table = schema_editor.quote_name(_run_table(apps))
    schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0015_finished_index")]

    operations = [migrations.RunPython(fewer_writes, full_indexes, elidable=False)]
