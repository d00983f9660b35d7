"""Chaos run: real `runjobs` workers under kill -9, cut connections and skewed clocks.

    python tests/chaos/chaos.py --db postgres --workers 4 --jobs 2000 --seconds 120

It enqueues --jobs runs of the "chaos" job (tests/testapp/jobs.py), each of which records its
execution (job, attempt, lock token, pid, start and end by the database's clock) in
ChaosExecution; starts --workers `runjobs` processes with a short --lock-lifetime; and for
--seconds kills a random worker with SIGKILL every few seconds (starting a replacement),
cuts a random database connection every few seconds (PostgreSQL: pg_terminate_backend;
MariaDB: KILL CONNECTION), and runs one worker 10 minutes ahead and one 10 minutes behind
(libfaketime) where the database has a clock of its own. Then it lets the workers drain the
remaining jobs, stops them with SIGTERM, and prints what happened to the jobs. It exits 1 if
any job was lost or ran twice while its lock held, 2 if the run itself could not be made.

Standalone, it creates a database of its own (a temporary SQLite file, or
django_jobs_chaos on the PostgreSQL/MariaDB server) and drops it at the end. With
--use-env-db (the pytest wrapper, tests/test_chaos.py), it uses the database that
DJANGO_SETTINGS_MODULE, DATABASE_URL and DJANGO_JOBS_USE_TEST_DB point at, emptying its job
tables first. See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.chaos import databases  # noqa: E402
from tests.chaos.report import CHAOS_JOBS, Report, analyse, render  # noqa: E402
from tests.chaos.workers import WorkerPool, WorkerProcess, install_faketime  # noqa: E402

SKEW = 600  # seconds: one worker runs this far ahead, another this far behind
LOOP_PAUSE = 0.1  # seconds between two looks at the workers
DUE_SOON = 5.0  # seconds: the drain waits for scheduled jobs due within this of its end
SHORT_JOB = (0.02, 0.2)  # seconds of work of most jobs
LONG_JOB = (0.5, 2.0)  # seconds of work of --long-share of the jobs
SHORT_LOCK_JOB = (1.5, 3.0)  # seconds of work of the jobs whose own lock lasts 1 s
EXIT_FAILED, EXIT_ERROR = 1, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chaos.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--db", choices=sorted(databases.VENDORS), help="database to run on")
    parser.add_argument("--workers", type=int, default=3, help="runjobs processes at a time")
    parser.add_argument("--concurrency", type=int, default=3, help="threads per worker")
    parser.add_argument("--jobs", type=int, default=300, help="chaos jobs to enqueue")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of chaos")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--lock-lifetime", type=float, default=4.0, help="runjobs --lock-lifetime, seconds"
    )
    parser.add_argument(
        "--kill-every", type=float, default=3.0, help="mean seconds between two kill -9 (0: none)"
    )
    parser.add_argument(
        "--cut-every",
        type=float,
        default=2.5,
        help="mean seconds between two connection cuts (0: none)",
    )
    parser.add_argument("--cut-count", type=int, default=1, help="connections cut each time")
    parser.add_argument("--no-skew", action="store_true", help="run every worker on the true clock")
    parser.add_argument(
        "--spread",
        type=float,
        default=0.9,
        help="jobs come due over this share of --seconds (0: all due at once)",
    )
    parser.add_argument(
        "--long-share", type=float, default=0.15, help="share of jobs working 0.5-2 s"
    )
    parser.add_argument(
        "--short-lock-share",
        type=float,
        default=0.1,
        help="share of jobs with a lock lifetime of their own (1 s) shorter than the workers'",
    )
    parser.add_argument(
        "--fail-share",
        type=float,
        default=0.05,
        help="share of jobs whose first attempt fails on purpose (retries)",
    )
    parser.add_argument(
        "--drain", type=float, default=30.0, help="seconds at most for the workers to drain"
    )
    parser.add_argument(
        "--grace-period", type=float, default=5.0, help="runjobs --grace-period, seconds"
    )
    parser.add_argument(
        "--sqlite-defaults",
        action="store_true",
        help="SQLite with Django's default OPTIONS (no WAL, no IMMEDIATE transactions)",
    )
    parser.add_argument(
        "--use-env-db",
        action="store_true",
        help="use the database the environment's settings name (the pytest wrapper): "
        "no create, migrate or drop",
    )
    parser.add_argument(
        "--server-url",
        help="PostgreSQL/MariaDB server to create the database on "
        f"(default {databases.DEFAULT_SERVER_URLS['postgres']} or "
        f"{databases.DEFAULT_SERVER_URLS['mariadb']})",
    )
    parser.add_argument(
        "--db-name",
        default=databases.OWN_DATABASE_PREFIX,
        help="name of the database created on the server (must start with "
        f"{databases.OWN_DATABASE_PREFIX})",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument(
        "--log-dir", type=Path, help="where the workers' logs go (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="print the report only")
    args = parser.parse_args(argv)
    if not args.use_env_db and not args.db:
        parser.error("--db is required (or --use-env-db).")
    if args.sqlite_defaults and args.db not in (None, "sqlite"):
        parser.error("--sqlite-defaults goes with --db sqlite.")
    for name in ("workers", "concurrency", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be 1 or more.")
    for name in ("seconds", "lock_lifetime", "drain", "grace_period"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be more than 0.")
    return args


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the script."""


class ChaosRun:
    """One run: set up, chaos, drain, stop, report; cleanup() undoes everything it started."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.pool: WorkerPool | None = None
        self.tmp_dir: Path | None = None
        self.tmp_logs: Path | None = None
        self.created_db = False
        self.kills = 0
        self.cuts = 0
        self.cut_misses = 0

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    # Set-up

    def setup(self) -> dict[str, str]:
        """Point this process and the workers at the database; returns the workers' env."""
        args = self.args
        env = dict(os.environ)
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        if args.sqlite_defaults:
            env["DJANGO_JOBS_SQLITE_DEFAULTS"] = "1"
        if not args.use_env_db:
            for name in ("DJANGO_JOBS_USE_TEST_DB", "DJANGO_JOBS_TEST_DB_NAME"):
                env.pop(name, None)
            if args.db == "sqlite":
                self.tmp_dir = Path(tempfile.mkdtemp(prefix="django_jobs_chaos."))
                env["DATABASE_URL"] = f"sqlite:///{self.tmp_dir / 'chaos.sqlite3'}"
                env["DJANGO_JOBS_SQLITE_DIR"] = str(self.tmp_dir)
            else:
                server = args.server_url or databases.DEFAULT_SERVER_URLS[args.db]
                databases.create_database(args.db, server, args.db_name)
                self.created_db = True
                env["DATABASE_URL"] = databases.database_url(args.db, server, args.db_name)
        os.environ.clear()
        os.environ.update(env)

        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        vendor = connection.vendor
        wanted = databases.VENDORS.get(args.db or "", vendor)
        if vendor != wanted:
            raise SystemExit(f"chaos.py: --db {args.db} but the settings name a {vendor} database.")
        args.db = {v: k for k, v in databases.VENDORS.items()}[vendor]
        if args.use_env_db:
            self._empty_tables()
        else:
            call_command("migrate", verbosity=0, interactive=False)
        return env

    def _empty_tables(self) -> None:
        from django_jobs.models import Job, JobRun, Worker
        from tests.testapp.models import ChaosExecution

        for model in (ChaosExecution, JobRun, Job, Worker):
            model.objects.all().delete()

    def enqueue(self) -> None:
        from django_jobs import schedule_many

        args = self.args
        plans = []
        for _ in range(args.jobs):
            name = "chaos"
            if self.rng.random() < args.short_lock_share:
                # Longer than their 1-second lock, so that only the heartbeat keeps it.
                name, (low, high) = "chaos-short-lock", SHORT_LOCK_JOB
            elif self.rng.random() < args.long_share:
                low, high = LONG_JOB
            else:
                low, high = SHORT_JOB
            data: dict[str, Any] = {"seconds": round(self.rng.uniform(low, high), 3)}
            if self.rng.random() < args.fail_share:
                data["fail_first"] = True
            due = timedelta(seconds=self.rng.uniform(0, args.spread * args.seconds))
            plans.append((due, name, data))
        schedule_many(plans)

    # The run

    def execute(self) -> int:
        args = self.args
        env = self.setup()
        from django.db import connection

        db_label = args.db
        if args.db == "sqlite":
            defaults = os.environ.get("DJANGO_JOBS_SQLITE_DEFAULTS") == "1"
            db_label += (
                " on Django's default settings" if defaults else " (WAL, IMMEDIATE transactions)"
            )
        self.say(
            f"chaos on {db_label} ({connection.settings_dict['NAME']}): {args.workers} workers "
            f"x {args.concurrency} threads, {args.jobs} jobs, {args.seconds:g}s, lock lifetime "
            f"{args.lock_lifetime:g}s, seed {args.seed}"
        )
        cuts_possible = args.db != "sqlite"
        if not cuts_possible and args.cut_every > 0:
            self.say("SQLite: no server connection to cut; connection cuts are skipped.")
        skews = self._skews()
        libfaketime = install_faketime(self.say) if any(skews) else None
        if any(skews) and not libfaketime:
            self.say("WARNING: libfaketime not found (apt-get install faketime): no clock skew.")
            skews = []
        # Logs in a folder of our own are deleted after a run that passed.
        log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="django_jobs_chaos_logs."))
        self.tmp_logs = None if args.log_dir else log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"workers' logs: {log_dir}")

        self.enqueue()
        from tests.chaos.databases import db_now

        self.pool = WorkerPool(
            runjobs_args=[
                "--concurrency",
                str(args.concurrency),
                "--lock-lifetime",
                str(args.lock_lifetime),
                "--grace-period",
                str(args.grace_period),
            ],
            env=env,
            log_dir=log_dir,
            skews=skews,
            libfaketime=libfaketime,
            db_now=db_now,
        )
        for slot in range(args.workers):
            self.say(f"start {self.pool.start(slot).name}")
        self._chaos()
        drained = self._drain()
        self.say("stopping the workers with SIGTERM")
        self.pool.terminate_all(args.grace_period + 10)
        end = db_now()
        report = analyse(
            enqueued=args.jobs,
            workers=self.pool.all,
            kills=self.kills,
            cuts=self.cuts,
            cut_misses=self.cut_misses,
            lock_lifetime=args.lock_lifetime,
            end=end,
        )
        self._notes(report, drained, skews, log_dir)
        print(render(report, cuts_possible=cuts_possible), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        if report.failed:
            self.tmp_logs = None  # keep them
            return EXIT_FAILED
        return 0

    def _skews(self) -> list[int]:
        """The clock shift of each worker slot: +10 min and -10 min where the database has a
        clock of its own."""
        if self.args.no_skew:
            return []
        if self.args.db == "sqlite":
            self.say(
                "SQLite: the database's clock is each process's own clock, so a skewed worker "
                "is out of scope there; clock skew is skipped."
            )
            return []
        skews = [SKEW, -SKEW][: self.args.workers]
        return skews + [0] * (self.args.workers - len(skews))

    def _chaos(self) -> None:
        args = self.args
        assert self.pool is not None
        now = time.monotonic()
        end = now + args.seconds
        next_kill = now + self._interval(args.kill_every) if args.kill_every > 0 else end + 1
        cut = args.cut_every > 0 and args.db != "sqlite"
        next_cut = now + self._interval(args.cut_every) if cut else end + 1
        while (now := time.monotonic()) < end:
            self._replace_dead()
            if now >= next_kill:
                self._kill_one()
                next_kill = now + self._interval(args.kill_every)
            if now >= next_cut:
                self._cut()
                next_cut = now + self._interval(args.cut_every)
            time.sleep(LOOP_PAUSE)

    def _interval(self, mean: float) -> float:
        return mean * self.rng.uniform(0.5, 1.5)

    def _replace_dead(self) -> None:
        assert self.pool is not None
        for worker in self.pool.reap():
            self.say(f"{worker.name} EXITED BY ITSELF with status {worker.exit_code}")
            self.say(f"start {self.pool.start(worker.slot).name} in its place")

    def _kill_one(self) -> None:
        assert self.pool is not None
        alive = sorted(self.pool.alive(), key=lambda w: w.slot)
        # Prefer workers that had time to claim something, so the kill lands mid-run.
        settled = [w for w in alive if time.monotonic() - w.started > 1.0] or alive
        if not settled:
            return
        victim: WorkerProcess = self.rng.choice(settled)
        self.pool.kill(victim)
        self.kills += 1
        replacement = self.pool.start(victim.slot)
        self.say(f"kill -9 {victim.name}; start {replacement.name}")

    def _cut(self) -> None:
        for done, text in databases.cut_connections(self.rng, self.args.cut_count):
            if done:
                self.cuts += 1
                self.say(f"cut {text}")
            else:
                self.cut_misses += 1

    def _drain(self) -> bool:
        """Let the workers finish what is due; True if they did within --drain seconds."""
        from django.db import DatabaseError, connection

        from django_jobs.models import Job, JobState, db_now_plus

        self.say(f"chaos over; the workers drain the due jobs (up to {self.args.drain:g}s)")
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline:
            self._replace_dead()
            chaos = Job.objects.filter(name__in=CHAOS_JOBS)
            try:
                pending = (
                    chaos.filter(state=JobState.RUNNING).exists()
                    or chaos.filter(
                        state=JobState.SCHEDULED, next_run_at__lte=db_now_plus(DUE_SOON)
                    ).exists()
                )
            except DatabaseError:  # e.g. SQLite busy on Django's defaults: look again
                connection.close()
                pending = True
            if not pending:
                self.say("drained: no chaos job is running or due")
                return True
            time.sleep(0.5)
        self.say("the drain's time ran out with jobs still running or due")
        return False

    def _notes(self, report: Report, drained: bool, skews: list[int], log_dir: Path) -> None:
        args = self.args
        if not drained:
            report.notes.append(
                f"the workers did not drain the due jobs within --drain {args.drain:g}s"
            )
        if args.db == "sqlite" and not args.no_skew:
            report.notes.append(
                "SQLite: no clock skew (the database's clock is each process's own clock)"
            )
        if args.db == "sqlite" and args.cut_every > 0:
            report.notes.append("SQLite: no connection cuts (no server connection to cut)")
        if not args.no_skew and args.db != "sqlite" and not any(skews):
            report.notes.append("no clock skew: libfaketime is not installed")
        if self.tmp_logs is None:
            report.notes.append(f"workers' logs are in {log_dir}")

    # Cleanup

    def cleanup(self) -> None:
        if self.pool is not None:
            self.pool.kill_all()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        if self.created_db and not self.args.keep_db:
            server = self.args.server_url or databases.DEFAULT_SERVER_URLS[self.args.db]
            try:
                databases.drop_database(self.args.db, server, self.args.db_name)
            except Exception as exc:
                print(f"chaos.py: could not drop {self.args.db_name}: {exc}", file=sys.stderr)
        if self.tmp_logs is not None:
            shutil.rmtree(self.tmp_logs, ignore_errors=True)
        if self.tmp_dir is not None and not self.args.keep_db:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        elif self.tmp_dir is not None:
            print(f"chaos.py: the SQLite database is kept in {self.tmp_dir}", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = ChaosRun(args)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run.execute()
    except Interrupted as exc:
        print(f"chaos.py: {exc} received; stopping every worker.", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a refusal with its reason: the run was not made
            print(exc.code, file=sys.stderr)
            return EXIT_ERROR
        raise
    except BaseException:
        traceback.print_exc()
        print("chaos.py: the run itself failed (exit 2); see the traceback above.", file=sys.stderr)
        return EXIT_ERROR
    finally:
        # A second signal must not cut the cleanup short.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        run.cleanup()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
