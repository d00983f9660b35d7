"""The per-queue claim index and the (name, state) index leave out running jobs, on PostgreSQL
(issue 13: the database's share of a run).

PostgreSQL writes a new entry in every index whose condition the new row meets when an update
changes an indexed column. A claim turns a scheduled job into a running one, so each of these
indexes, which held every state, took an entry at each claim for a row that no query looks
for there:

- the claim index (`claim_idx`): claims ask for scheduled jobs, and the queues page
  (admin/queues.py) and the jobs gauge (metrics.py) read the running jobs of a queue apart;
- the (name, state) index (`name_state_idx`): the running jobs of a name (a cluster-wide
  limit's count, a cancel's running jobs) are read from the lock index (`lock_idx`, running
  jobs only), and a query over several states that include running (`mark_limited()`) asks
  for the running ones apart.

Running jobs are few (at most the workers' concurrency, and those whose lock ran out). Every
other state stays in both indexes, so every query for one of them still reads a range. A
claim now writes nothing there, a finish one entry each (the ended state), as before: two
index entries a job less (docs/performance.md, "Indexes without running jobs"). SQLite and
MariaDB keep the models' whole indexes: they rewrite only the indexes whose columns change,
and MariaDB has no partial indexes.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

NOT_RUNNING = ~models.Q(state="running")
CLAIM = ["state", "enabled", "queue", "-priority", "next_run_at"]
NAME_STATE = ["name", "state"]

# (whole index, index without running jobs), each pair under one name.
SWAPS = [
    (
        models.Index(fields=CLAIM, name="django_jobs_claim_idx"),
        models.Index(fields=CLAIM, condition=NOT_RUNNING, name="django_jobs_claim_idx"),
    ),
    (
        models.Index(fields=NAME_STATE, name="django_jobs_name_state_idx"),
        models.Index(fields=NAME_STATE, condition=NOT_RUNNING, name="django_jobs_name_state_idx"),
    ),
]


def _swap(apps: Any, schema_editor: Any, *, without_running: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    job = apps.get_model("django_jobs", "Job")
    for whole, partial in SWAPS:
        old, new = (whole, partial) if without_running else (partial, whole)
        schema_editor.remove_index(job, old)
        schema_editor.add_index(job, new)


def partial_index(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, without_running=True)


def whole_index(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, without_running=False)


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0018_partial_data_index")]

    operations = [migrations.RunPython(partial_index, whole_index, elidable=False)]
