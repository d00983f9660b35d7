"""The overview's numbers kept by the workers (stats.py): a snapshot of the job counts per
name and state, and the runs per minute and outcome, so the overview at a million jobs reads
a few hundred rows instead of every job and every run of the day."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_jobs", "0012_retrying_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="JobCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("state", models.CharField(max_length=16)),
                ("enabled", models.BooleanField()),
                ("is_due", models.BooleanField()),
                ("is_recurring", models.BooleanField()),
                ("count", models.BigIntegerField()),
            ],
            options={
                "default_permissions": (),
            },
        ),
        migrations.CreateModel(
            name="StatsMark",
            fields=[
                ("key", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("taken_at", models.DateTimeField(blank=True, null=True)),
                ("counted_at", models.DateTimeField(blank=True, null=True)),
                ("runs_through", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "default_permissions": (),
            },
        ),
        migrations.CreateModel(
            name="RunCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("minute", models.DateTimeField()),
                ("outcome", models.CharField(max_length=16)),
                ("count", models.BigIntegerField()),
            ],
            options={
                "default_permissions": (),
                "constraints": [
                    models.UniqueConstraint(
                        fields=("minute", "outcome"), name="django_jobs_runcount_unique"
                    )
                ],
            },
        ),
    ]
