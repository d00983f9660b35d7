"""The per-queue claim index leaves out running jobs, on PostgreSQL (issue 13: the database's
share of a run).

PostgreSQL writes a new entry in every index whose condition the new row meets when an update
changes an indexed column. A claim turns a scheduled job into a running one, so a claim index
that holds every state took an entry at each claim, for a row that no claim and no admin query
looks for there: claims ask for scheduled jobs, and the queues page (admin/queues.py) and the
jobs gauge (metrics.py) read the running jobs of a queue from the running jobs' index, since
they are few (at most the workers' concurrency, and those whose lock ran out). Every other
state stays in the index, so the queues page still lists and counts the queues of every
finished state by ranges of it.

A claim now writes nothing there, a finish one entry (the ended state), as before: one index
entry a job less (docs/performance.md, "Indexes without running jobs"). SQLite and
MariaDB keep the models' whole index: they rewrite only the indexes whose columns change, and
MariaDB has no partial indexes.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.db import migrations, models

CLAIM = ["state", "enabled", "queue", "-priority", "next_run_at"]
WHOLE = models.Index(fields=CLAIM, name="django_jobs_claim_idx")
WITHOUT_RUNNING = models.Index(
    fields=CLAIM, condition=~models.Q(state="running"), name="django_jobs_claim_idx"
)


_swap = import_module("django_jobs.migrations.0018_partial_data_index")._swap  # PostgreSQL's


def partial_index(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, WHOLE, WITHOUT_RUNNING)


def whole_index(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, WITHOUT_RUNNING, WHOLE)


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0018_partial_data_index")]

    operations = [migrations.RunPython(partial_index, whole_index, elidable=False)]
