"""`manage.py runjobs`: parse and check the options, then hand over to Worker.run()."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobs.conf import settings
from django_jobs.exceptions import InvalidJobDefinition
from django_jobs.management.options import positive_int, seconds, seconds_or_zero
from django_jobs.registry import check_queue
from django_jobs.worker import Worker, early_stop

logger = logging.getLogger("django_jobs.worker")


def _processes(text: str) -> int | str:
    """--processes: a whole number of 1 or more, or "auto" for one per core."""
    if str(text).strip().lower() == "auto":
        return "auto"
    return positive_int("--processes")(str(text))  # type: ignore[no-any-return]


# call_command("runjobs", concurrency=0) hands keyword options to handle() without argparse's
# type checks, so handle() runs these again.
CHECKED_OPTIONS = {
    "concurrency": positive_int("--concurrency"),
    "poll_interval": seconds("--poll-interval"),
    "max_jobs": positive_int("--max-jobs"),
    "lock_lifetime": seconds("--lock-lifetime"),
    "grace_period": seconds_or_zero("--grace-period"),
    "processes": _processes,
}


class Command(BaseCommand):
    help = "Run a django_jobs worker: claim due jobs and run them until stopped."

    def run_from_argv(self, argv: list[str]) -> None:
        # Before the system checks, which take a moment: a SIGTERM from now on stops the
        # worker cleanly (exit 0) instead of killing it half-started.
        early_stop.install()
        super().run_from_argv(argv)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--processes",
            type=_processes,
            default=None,
            metavar="N|auto",
            help=(
                "Run N worker processes under a supervisor that restarts any that dies "
                "(auto: one per CPU core). Without it, one worker runs in this process."
            ),
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int("--concurrency"),
            default=1,
            help="Threads running jobs at once in this process (default 1).",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            default=[],
            help="Only run jobs of this queue; repeat for several (default: every queue).",
        )
        parser.add_argument(
            "--poll-interval",
            type=seconds("--poll-interval"),
            default=None,
            help=f"Seconds between looks for due jobs (default {settings.POLL_INTERVAL}).",
        )
        parser.add_argument(
            "--burst", action="store_true", help="Exit once no job is due and none is running."
        )
        parser.add_argument(
            "--max-jobs",
            type=positive_int("--max-jobs"),
            default=None,
            help="Exit after running this many jobs.",
        )
        parser.add_argument("--worker-id", default=None, help="Name of this worker in the admin.")
        parser.add_argument(
            "--lock-lifetime",
            type=seconds("--lock-lifetime"),
            default=None,
            help=f"Seconds a claim holds without a heartbeat (default {settings.LOCK_LIFETIME}).",
        )
        parser.add_argument(
            "--grace-period",
            type=seconds_or_zero("--grace-period"),
            default=None,
            help=f"Seconds jobs get to finish on SIGTERM (default {settings.GRACE_PERIOD}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for option, parse in CHECKED_OPTIONS.items():
            if options[option] is not None:
                try:
                    options[option] = parse(str(options[option]))
                except argparse.ArgumentTypeError as exc:
                    raise CommandError(str(exc)) from None
        for queue in options["queues"]:
            try:
                check_queue(queue)
            except InvalidJobDefinition as exc:
                raise CommandError(f"--queue: {exc}") from None
        worker_id = options["worker_id"]
        if worker_id is not None and not str(worker_id).strip():
            raise CommandError(
                f"--worker-id must not be empty (got {worker_id!r}); leave it out for a "
                "generated id."
            )
        worker_options = {
            "queues": options["queues"],
            "concurrency": options["concurrency"],
            "poll_interval": options["poll_interval"],
            "burst": options["burst"],
            "max_jobs": options["max_jobs"],
            "worker_id": worker_id,
            "lock_lifetime": options["lock_lifetime"],
            "grace_period": options["grace_period"],
        }
        if early_stop.requested():
            # Stopped while starting: nothing was claimed, so there is nothing to hand back.
            logger.info("runjobs: stopped before it started (a signal came during start-up).")
            return
        processes = options["processes"]
        if processes is not None:
            from django_jobs.cluster import Supervisor, cpu_count

            count = cpu_count() if processes == "auto" else processes
            status = Supervisor(count, worker_options).run()
        else:
            status = Worker(**worker_options).run()
        if status:
            raise SystemExit(status)
