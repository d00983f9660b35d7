"""The admin's "retrying" filter at a million jobs: waiting jobs with attempts made, newest
first, read from a partial index instead of every waiting row (365 ms to a few ms on
PostgreSQL, benchmarks/admin.py). Created on PostgreSQL and SQLite only, outside the
migration state, as 0007's indexes are (see AddIndexOn there)."""

from importlib import import_module

from django.db import migrations, models

_0007 = import_module("django_jobs.migrations.0007_admin_indexes")
AddIndexOn, PARTIAL = _0007.AddIndexOn, _0007.PARTIAL


class Migration(migrations.Migration):
    dependencies = [("django_jobs", "0011_limits")]

    operations = [
        AddIndexOn(
            "job",
            models.Index(
                fields=["id"],
                condition=models.Q(state="scheduled", attempts__gt=0),
                name="django_jobs_retrying_idx",
            ),
            PARTIAL,
        ),
    ]
