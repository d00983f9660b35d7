"""`manage.py purgejobs --older-than 30d`: delete old history in small batches."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobs.conf import settings
from django_jobs.retention import BATCH_SIZE, InvalidAge, parse_age, purge


class Command(BaseCommand):
    help = (
        "Delete one-off jobs that finished (succeeded, failed or were cancelled) and runs "
        "older than --older-than, in batches of --batch-size rows, each its own short "
        "transaction. Recurring definitions and pending or running jobs are never deleted."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            default=None,
            metavar="AGE",
            help=(
                'How old history must be to go: "30d", "12h", "90m", "2w" '
                '(default: DJANGO_JOBS["RETENTION"]).'
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH_SIZE,
            help=f"Rows deleted per transaction (default {BATCH_SIZE}).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        age_text = options["older_than"]
        if age_text is None:
            age_text = settings.RETENTION
        if age_text is None:
            raise CommandError(
                "Say how old history must be to go, e.g. --older-than 30d, or set "
                'DJANGO_JOBS["RETENTION"].'
            )
        try:
            age = parse_age(age_text)
        except InvalidAge as exc:
            raise CommandError(f"--older-than: {exc}") from None
        batch_size = options["batch_size"]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CommandError(f"--batch-size must be 1 or more, not {batch_size!r}.")
        result = purge(
            age, using=settings.DATABASE, batch_size=batch_size, dry_run=options["dry_run"]
        )
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(
            f"{verb} {result.jobs} finished job(s) and {result.runs} run(s) older than {age_text}."
        )
