"""`manage.py runjobs`: parse and check the options, then hand over to Worker.run()."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobs.conf import settings
from django_jobs.exceptions import JobsError
from django_jobs.management.options import bounded
from django_jobs.validation import (
    GRACE_PERIOD,
    LOCK_LIFETIME,
    MAX_PROCESSES,
    METRICS_PORT,
    POLL_INTERVAL,
    PROCESSES,
    WORKER_CONCURRENCY,
    WORKER_JOBS,
    check_queue,
    check_worker_id,
)
from django_jobs.worker import Worker, early_stop, report

logger = logging.getLogger("django_jobs.worker")


def _processes(text: str) -> int | str:
    """--processes: a whole number from 1 to 256, or "auto" for one per core."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return bounded("--processes", PROCESSES)(str(text))  # type: ignore[no-any-return]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--processes must be a whole number of 1 or more (at most {MAX_PROCESSES}) or "
            f"auto, not {text!r}."
        ) from None


# call_command("runjobs", concurrency=0) hands keyword options to handle() without argparse's
# type checks, so handle() runs these again.
CHECKED_OPTIONS = {
    "concurrency": bounded("--concurrency", WORKER_CONCURRENCY),
    "poll_interval": bounded("--poll-interval", POLL_INTERVAL),
    "max_jobs": bounded("--max-jobs", WORKER_JOBS),
    "lock_lifetime": bounded("--lock-lifetime", LOCK_LIFETIME),
    "grace_period": bounded("--grace-period", GRACE_PERIOD),
    "processes": _processes,
    "metrics_port": bounded("--metrics-port", METRICS_PORT),
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
            type=CHECKED_OPTIONS["concurrency"],
            default=None,
            help=(
                "Threads running jobs at once in each worker process (default "
                f'DJANGO_JOBS["CONCURRENCY"], {settings.CONCURRENCY}).'
            ),
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
            type=CHECKED_OPTIONS["poll_interval"],
            default=None,
            help=f"Seconds between looks for due jobs (default {settings.POLL_INTERVAL}).",
        )
        parser.add_argument(
            "--burst", action="store_true", help="Exit once no job is due and none is running."
        )
        parser.add_argument(
            "--max-jobs",
            type=CHECKED_OPTIONS["max_jobs"],
            default=None,
            help="Exit after running this many jobs.",
        )
        parser.add_argument("--worker-id", default=None, help="Name of this worker in the admin.")
        parser.add_argument(
            "--lock-lifetime",
            type=CHECKED_OPTIONS["lock_lifetime"],
            default=None,
            help=f"Seconds a claim holds without a heartbeat (default {settings.LOCK_LIFETIME}).",
        )
        parser.add_argument(
            "--grace-period",
            type=CHECKED_OPTIONS["grace_period"],
            default=None,
            help=f"Seconds jobs get to finish on SIGTERM (default {settings.GRACE_PERIOD}).",
        )
        parser.add_argument(
            "--isolation",
            choices=["thread", "process"],
            default="thread",
            help=(
                "thread (default): jobs run on the worker's threads; a job past its timeout "
                "or cancelled is asked to stop (async jobs are cancelled). process: each job "
                "runs in a child process, killed at its timeout or when cancelled "
                "(docs/controls.md)."
            ),
        )
        parser.add_argument(
            "--metrics-port",
            type=CHECKED_OPTIONS["metrics_port"],
            default=None,
            help=(
                "Serve Prometheus metrics on this port (needs prometheus_client; with "
                "--processes, the supervisor serves every process's metrics)."
            ),
        )
        parser.add_argument(
            "--metrics-host",
            default="127.0.0.1",
            help="Address the metrics port listens on (default 127.0.0.1; 0.0.0.0 for all).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The project's LOGGING stands; this fills in what it leaves out (docs/worker.md,
        # "What runjobs prints"), and is undone for a runjobs run in-process.
        restore_logging = report.configure_logging(int(options.get("verbosity", 1)))
        try:
            self._handle(options)
        finally:
            restore_logging()

    def _handle(self, options: dict[str, Any]) -> None:
        for option, parse in CHECKED_OPTIONS.items():
            if options[option] is not None:
                try:
                    options[option] = parse(str(options[option]))
                except argparse.ArgumentTypeError as exc:
                    raise CommandError(str(exc)) from None
        for queue in options["queues"]:
            try:
                check_queue(queue)
            except JobsError as exc:
                raise CommandError(f"--queue: {exc}") from None
        worker_id = options["worker_id"]
        if worker_id is not None and not str(worker_id).strip():
            raise CommandError(
                f"--worker-id must not be empty (got {worker_id!r}); leave it out for a "
                "generated id."
            )
        if worker_id is not None:
            try:
                check_worker_id(worker_id)
            except JobsError as exc:
                raise CommandError(f"--worker-id: {exc}") from None
        worker_options = {
            "queues": options["queues"],
            "concurrency": (
                settings.CONCURRENCY if options["concurrency"] is None else options["concurrency"]
            ),
            "poll_interval": options["poll_interval"],
            "burst": options["burst"],
            "max_jobs": options["max_jobs"],
            "worker_id": worker_id,
            "lock_lifetime": options["lock_lifetime"],
            "grace_period": options["grace_period"],
            "isolation": options.get("isolation") or "thread",
        }
        if early_stop.requested():
            # Stopped while starting: nothing was claimed, so there is nothing to hand back.
            logger.info("runjobs: stopped before it started (a signal came during start-up).")
            return
        processes = options["processes"]
        port, host = options.get("metrics_port"), options.get("metrics_host") or "127.0.0.1"
        if processes is not None:
            from django_jobs.cluster import Supervisor, cpu_count

            count = cpu_count() if processes == "auto" else processes
            supervisor = Supervisor(
                count,
                worker_options,
                verbosity=options.get("verbosity", 1),
                metrics=port is not None,
            )
            with _metrics(port, host, supervisor.fork_lock):
                status = supervisor.run()
        else:
            with _metrics(port, host, None):
                status = Worker(**worker_options).run()
        if status:
            raise SystemExit(status)


@contextlib.contextmanager
def _metrics(port: int | None, host: str, fork_lock: Any) -> Iterator[None]:
    """Serve the metrics on host:port while the worker (or supervisor) runs."""
    if port is None:
        yield
        return
    from django_jobs import metrics

    directory = None
    try:
        metrics.require()
        if fork_lock is None:
            registry = metrics.worker_registry()
        else:
            directory = metrics.MultiprocessDirectory()
            registry = directory.registry(fork_lock)
        server = metrics.serve(port, host, registry)
    except JobsError as exc:
        raise CommandError(f"--metrics-port: {exc}") from None
    except OSError as exc:
        if directory is not None:
            directory.remove()
        raise CommandError(
            f"Cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose another "
            "--metrics-port, or a --metrics-host of this machine."
        ) from None
    logger.info("Metrics for Prometheus on http://%s:%d/metrics", host, port)
    if directory is not None:
        logger.info("Metrics: worker processes write their samples to %s.", directory.path)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        if directory is not None:
            directory.remove()
