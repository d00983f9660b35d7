"""`manage.py jobstatus`: a health check for probes; exit status 1 when unhealthy."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from django_jobs.conf import settings
from django_jobs.health import check_health, lateness
from django_jobs.management.options import bounded, count
from django_jobs.validation import PROBE_AGE

DEFAULT_MAX_LATENESS = 300.0  # seconds a due job may wait before the check fails


class Command(BaseCommand):
    help = (
        "Report the health of django_jobs: live workers and late jobs. Exits with status 1 "
        "when fewer than --min-workers have a fresh heartbeat or a due job waited longer "
        "than --max-lateness, so process supervisors and probes can use it."
    )
    requires_system_checks: list[str] = []  # a probe runs often; `manage.py check` is separate

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--max-heartbeat-age",
            type=bounded("--max-heartbeat-age", PROBE_AGE),
            default=None,
            help=(
                "Seconds since its last heartbeat for a worker to count as live (default: "
                "each worker's own expiry, its lock lifetime or STALE_WORKER_AFTER)."
            ),
        )
        parser.add_argument(
            "--max-lateness",
            type=bounded("--max-lateness", PROBE_AGE),
            default=DEFAULT_MAX_LATENESS,
            help=f"Seconds a due job may wait (default {DEFAULT_MAX_LATENESS:g}).",
        )
        parser.add_argument(
            "--min-workers",
            type=count("--min-workers"),
            default=1,
            help="Live workers needed (default 1; 0 checks only the lateness).",
        )
        parser.add_argument(
            "--hostname",
            default=None,
            help='Count only the workers of this host (e.g. "$(hostname)" in a per-host probe).',
        )
        parser.add_argument(
            "--this-host",
            action="store_true",
            help="Count only the workers of the host this command runs on.",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            default=[],
            help="Judge the lateness of this queue only; repeat for several (default: all).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hostname = socket.gethostname() if options["this_host"] else options["hostname"]
        max_age = options["max_heartbeat_age"]
        try:
            health = check_health(
                max_heartbeat_age=max_age,
                max_lateness=options["max_lateness"],
                min_workers=options["min_workers"],
                hostname=hostname,
                queues=options["queues"],
                using=settings.DATABASE,
            )
        except DatabaseError as exc:
            raise CommandError(f"Cannot reach the jobs database: {exc}", returncode=2) from exc
        now = timezone.now()
        where = f" on {hostname}" if hostname else ""
        self.stdout.write(
            f"Workers{where}: {len(health.live_workers)} live, {health.stale_workers} stale "
            + (
                "(live: a heartbeat that has not expired)."
                if max_age is None
                else f"(live: a heartbeat less than {max_age:g}s old)."
            )
        )
        for worker in health.live_workers:
            age = (now - worker.last_heartbeat_at).total_seconds()
            self.stdout.write(
                f"  {worker.worker_id}  pid {worker.pid}  queues "
                f"{','.join(worker.queues) or '*'}  concurrency {worker.concurrency}  "
                f"heartbeat {max(age, 0):.0f}s ago"
            )
        waited = lateness(health)
        oldest = f", the oldest waiting {waited:.1f}s" if waited is not None else ""
        self.stdout.write(
            f"Jobs: {health.due} due{oldest}; {health.late} late (over "
            f"{options['max_lateness']:g}s); {health.running} running; {health.failed} failed."
        )
        if health.healthy:
            self.stdout.write(self.style.SUCCESS("OK"))
            return
        for problem in health.problems:
            self.stderr.write(self.style.ERROR(f"UNHEALTHY: {problem}"))
        raise SystemExit(1)
