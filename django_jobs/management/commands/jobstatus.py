"""`manage.py jobstatus`: a health check for probes.

Exit status: 0 healthy; 1 unhealthy (too few live workers, or due jobs waiting too long);
2 the database cannot be reached; 3 healthy, but recurring jobs are late or failing
(django_jobs.alerts), unless --ignore-alerts.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from django_jobs import alerts
from django_jobs.conf import settings
from django_jobs.health import check_health, lateness
from django_jobs.management.options import bounded, count
from django_jobs.models import Job
from django_jobs.validation import PROBE_AGE

DEFAULT_MAX_LATENESS = 300.0  # seconds a due job may wait before the check fails
UNHEALTHY, UNREACHABLE, FLAGGED = 1, 2, 3  # exit statuses


class Command(BaseCommand):
    help = (
        "Report the health of django_jobs: live workers and late jobs. Exits with status 1 "
        "when fewer than --min-workers have a fresh heartbeat or a due job waited longer "
        "than --max-lateness, so process supervisors and probes can use it; with status 3 "
        "when only recurring jobs are late or failing (see --ignore-alerts)."
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
        parser.add_argument(
            "--ignore-alerts",
            action="store_true",
            help=(
                "List late or failing recurring jobs but exit 0 for them (for a liveness "
                "probe, which should not restart workers because a job fails)."
            ),
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
            jobs = Job.objects.using(settings.DATABASE)
            if options["queues"]:
                jobs = jobs.filter(queue__in=options["queues"])
            flagged = alerts.flagged(jobs)
        except DatabaseError as exc:
            raise CommandError(
                f"Cannot reach the jobs database: {exc}", returncode=UNREACHABLE
            ) from exc
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
        if flagged:
            self.stdout.write(f"Recurring jobs late or failing: {len(flagged)}.")
        for alert in flagged:
            self.stderr.write(self.style.WARNING(f"ALERT: job {alert}."))
        if not health.healthy:
            for problem in health.problems:
                self.stderr.write(self.style.ERROR(f"UNHEALTHY: {problem}"))
            raise SystemExit(UNHEALTHY)
        if flagged and not options["ignore_alerts"]:
            raise SystemExit(FLAGGED)
        self.stdout.write(self.style.SUCCESS("OK"))
