"""One index of the running jobs instead of two, on PostgreSQL (issue 13: the database's share
of a run).

Two partial indexes held the running jobs: the lock index (state, locked_until), for lock
recovery and the slots of a limit, and the index by worker (locked_by), for the overview's
count of each worker's running jobs. A claim wrote an entry in each. One index on
(locked_by, locked_until) of the running jobs answers both: a worker's jobs are a range of it,
and recovery and a limit's slots by lock key read the lock times of the running jobs, which
are few (the workers' concurrency, and those whose lock ran out), from it.
A claim now writes one entry there: one index entry a job less (docs/performance.md,
"Indexes without running jobs"). The running jobs of a name, which a cluster-wide limit counts
at each of its claims, stay a range of the (name, state) index.

The index keeps the lock index's name, which the models declare; SQLite and MariaDB keep the
models' index and 0007's index by worker (SQLite only).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

RUNNING = models.Q(state="running")
LOCK = models.Index(fields=["state", "locked_until"], condition=RUNNING, name="django_jobs_lock_idx")
BY_WORKER = models.Index(fields=["locked_by"], condition=RUNNING, name="django_jobs_running_by_idx")
ONE = models.Index(
    fields=["locked_by", "locked_until"], condition=RUNNING, name="django_jobs_lock_idx"
)


def _replace(apps: Any, schema_editor: Any, old: list[Any], new: list[Any]) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    job = apps.get_model("django_jobs", "Job")
    for index in old:
        schema_editor.remove_index(job, index)
    for index in new:
        schema_editor.add_index(job, index)


def one_index(apps: Any, schema_editor: Any) -> None:
    _replace(apps, schema_editor, [LOCK, BY_WORKER], [ONE])


def two_indexes(apps: Any, schema_editor: Any) -> None:
    _replace(apps, schema_editor, [ONE], [LOCK, BY_WORKER])


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0019_claim_index_without_running")]

    operations = [migrations.RunPython(one_index, two_indexes, elidable=False)]
