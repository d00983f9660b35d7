"""Fewer indexes to write at every claim and finish (issue 13: the database's share of a run).

- A run's `job` foreign key loses its own index: `(job, -started_at)` starts with the same
  column and answers every lookup of a job's runs (and MariaDB's foreign key needs no more).
- `(started_at)` alone goes: the `(started_at, outcome)` index of migration 0007 serves the
  run list's order and every range of start times.
- On PostgreSQL the limited claim's index holds only limited rows (a partial index), so the
  claims and finishes of ordinary jobs no longer write an entry there. The model keeps
  declaring the full index, which SQLite and MariaDB keep: MariaDB has no partial indexes.

Measured on PostgreSQL: see docs/performance.md (the database's CPU per job in W1).
"""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

LIMITED_FIELDS = ["limited", "state", "enabled", "-priority", "next_run_at", "id"]
FULL = models.Index(fields=LIMITED_FIELDS, name="django_jobs_limited_idx")
PARTIAL = models.Index(
    fields=LIMITED_FIELDS, condition=models.Q(limited=True), name="django_jobs_limited_idx"
)


def _swap(schema_editor: Any, apps: Any, old: models.Index, new: models.Index) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("django_jobs", "Job")
    schema_editor.remove_index(model, old)
    schema_editor.add_index(model, new)


def partial_limited_index(apps: Any, schema_editor: Any) -> None:
    _swap(schema_editor, apps, FULL, PARTIAL)


def full_limited_index(apps: Any, schema_editor: Any) -> None:
    _swap(schema_editor, apps, PARTIAL, FULL)


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0013_overview_stats")]

    operations = [
        migrations.RemoveIndex(model_name="jobrun", name="django_jobs_run_started_idx"),
        migrations.AlterField(
            model_name="jobrun",
            name="job",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="runs",
                to="django_jobs.job",
            ),
        ),
        migrations.RunPython(partial_limited_index, full_limited_index, elidable=False),
    ]
