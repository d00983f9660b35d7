"""Indexes for the admin's search, filters, sorting and overview on big tables.

Each index is created only on the databases that can use it, by AddIndexOn: an AddIndex whose
database step runs for the listed vendors alone and which leaves the migration state (and so
the models' Meta) unchanged. That is why `makemigrations --check` stays clean, and why a
GIN index, which SQLite and MariaDB cannot create, and a partial index, which MariaDB would
silently create over the whole table, need no model option that would fail or mislead on
another database. The indexes are built by Django from Index objects, not hand-written SQL.

On a big PostgreSQL table, building them takes the table's write lock for the build (about a
minute for 1,000,000 jobs and 2,000,000 runs): run this migration when workers can wait.
"""

from collections.abc import Sequence
from typing import Any

from django.contrib.postgres.indexes import GinIndex
from django.db import migrations, models

ALL = ("postgresql", "sqlite", "mysql")
PARTIAL = ("postgresql", "sqlite")  # MariaDB/MySQL would drop the condition, indexing every row


class AddIndexOn(migrations.AddIndex):
    """AddIndex on some database vendors only, outside the migration state."""

    def __init__(self, model_name: str, index: models.Index, vendors: tuple[str, ...]) -> None:
        super().__init__(model_name, index)
        self.vendors = vendors

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        name, args, kwargs = super().deconstruct()
        return name, args, {**kwargs, "vendors": self.vendors}

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # the models do not declare these indexes: see the module's docstring

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor in self.vendors:
            model = to_state.apps.get_model(app_label, self.model_name)
            if self.allow_migrate_model(schema_editor.connection.alias, model):
                schema_editor.add_index(model, self.index)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor in self.vendors:
            model = from_state.apps.get_model(app_label, self.model_name)
            if self.allow_migrate_model(schema_editor.connection.alias, model):
                schema_editor.remove_index(model, self.index)

    def describe(self) -> str:
        return f"{super().describe()} on {', '.join(self.vendors)}"


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0006_trust")]

    operations = [
        # Search by key:value: data @> '{"email": "ada@example.com"}'.
        AddIndexOn(
            "job",
            GinIndex(fields=["data"], opclasses=["jsonb_path_ops"], name="django_jobs_data_gin"),
            ("postgresql",),
        ),
        # Sorting by name (ties by id in the same direction) and the name filter's newest first.
        AddIndexOn("job", models.Index(fields=["name", "id"], name="django_jobs_name_id_idx"), ALL),
        # The recurring and disabled filters: few rows, newest first, without reading the rest.
        AddIndexOn(
            "job",
            models.Index(
                fields=["id"], condition=~models.Q(schedule=""), name="django_jobs_recurring_idx"
            ),
            PARTIAL,
        ),
        AddIndexOn(
            "job",
            models.Index(
                fields=["id"], condition=models.Q(enabled=False), name="django_jobs_disabled_idx"
            ),
            PARTIAL,
        ),
        # The overview's live workers count their running jobs: without it PostgreSQL plans the
        # per-worker count as a scan of every running job, and at 20,000 running jobs that
        # estimate makes it JIT-compile the query (about 300 ms) even with no worker alive.
        AddIndexOn(
            "job",
            models.Index(
                fields=["locked_by"],
                condition=models.Q(state="running"),
                name="django_jobs_running_by_idx",
            ),
            PARTIAL,
        ),
        # The overview's chart: runs and failures per interval, read from the index alone.
        AddIndexOn(
            "jobrun",
            models.Index(fields=["started_at", "outcome"], name="django_jobs_run_chart_idx"),
            ALL,
        ),
        # The run list searched by worker, newest first.
        AddIndexOn(
            "jobrun",
            models.Index(fields=["worker_id", "started_at"], name="django_jobs_run_worker_idx"),
            ALL,
        ),
    ]
