"""The unique key's index holds only jobs with a key, on PostgreSQL (issue 13: the database's
share of a run).

A claim and a finish change the job's state, so PostgreSQL writes a new entry in every index
of the job table whose condition the new row meets. Django's `unique=True` on a nullable
column is a unique constraint whose index holds every row, NULL keys included, plus a
`varchar_pattern_ops` twin for LIKE: four index entries per job at its claim and finish, and
two at its insert, for a key that most jobs do not have. A partial unique index (`WHERE
unique_key IS NOT NULL`) holds the same promise, one job per key, and none of those entries.

Every lookup of a key is an equality (`unique_key = %s`, or `IN`), which implies the index's
condition, so the index still answers it. The one LIKE on the key, the sync's recurring rows
(sync.py), also asks `schedule <> ''`, which the recurring index (0011) answers.

The model keeps declaring `unique=True`, which SQLite and MariaDB keep: both rewrite only the
indexes whose columns change. A later migration that alters this field on PostgreSQL must
undo this one first (`whole_key`), as Django looks for its own constraint.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

UNIQUE_KEY = models.UniqueConstraint(
    fields=["unique_key"],
    condition=models.Q(unique_key__isnull=False),
    name="django_jobs_unique_key",
)


def _fields(apps: Any) -> tuple[Any, models.Field[Any, Any], models.Field[Any, Any]]:
    """The job model, its unique_key field as declared, and the same field without unique."""
    job = apps.get_model("django_jobs", "Job")
    declared = job._meta.get_field("unique_key")
    name, path, args, kwargs = declared.deconstruct()
    plain = declared.__class__(*args, **{**kwargs, "unique": False})
    plain.set_attributes_from_name(name)
    plain.model = job
    return job, declared, plain


def partial_key(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    job, declared, plain = _fields(apps)
    # Drops Django's constraint and its LIKE twin, as it would for unique=False.
    schema_editor.alter_field(job, declared, plain)
    schema_editor.add_constraint(job, UNIQUE_KEY)


def whole_key(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    job, declared, plain = _fields(apps)
    schema_editor.remove_constraint(job, UNIQUE_KEY)
    schema_editor.alter_field(job, plain, declared)


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0016_fewer_index_writes")]

    operations = [migrations.RunPython(partial_key, whole_key, elidable=False)]
