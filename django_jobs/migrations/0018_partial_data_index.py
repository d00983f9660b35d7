"""The GIN index of the job data holds only jobs with data, on PostgreSQL (issue 13: the
database's share of a run).

A claim and a finish change the job's state, so PostgreSQL writes a new entry in every index
of the job table whose condition the new row meets, and a GIN index holds an entry even for an
empty object. A job without arguments (`data = {}`, most recurring jobs) can match no
`key:value` search, so the index leaves it out: a job without data writes nothing to it at its
insert, claim and finish (in W1, an eighth of the write-ahead log per job).

The admin's search (admin/search.py) states the index's condition beside its containment test,
so the planner proves that the index answers it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.indexes import GinIndex
from django.db import migrations, models

WHOLE = GinIndex(fields=["data"], opclasses=["jsonb_path_ops"], name="django_jobs_data_gin")
WITH_DATA = GinIndex(
    fields=["data"],
    opclasses=["jsonb_path_ops"],
    condition=~models.Q(data={}),
    name="django_jobs_data_gin",
)


def _swap(apps: Any, schema_editor: Any, old: GinIndex, new: GinIndex) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    job = apps.get_model("django_jobs", "Job")
    schema_editor.remove_index(job, old)
    schema_editor.add_index(job, new)


def partial_index(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, WHOLE, WITH_DATA)


def whole_index(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, WITH_DATA, WHOLE)


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0017_partial_unique_key")]

    operations = [migrations.RunPython(partial_index, whole_index, elidable=False)]
