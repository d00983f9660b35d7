"""What the chaos run did to the jobs: counted from the database once every worker is stopped."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .workers import WorkerProcess

# A scheduled job due later than this after the end (by the database's clock) was not left
# for a retry's back-off (2 s at most for the chaos job): its due time is wrong.
LATE_AFTER = 10.0  # seconds
CHAOS_JOBS = ("chaos", "chaos-short-lock")  # the job names the script enqueues (testapp/jobs.py)
# What the workers' logs are searched for, by what it says about them.
LOG_PATTERNS = {
    "jobs recovered from a dead worker": r"Recovered job",
    "locks lost by a live worker": r"lost the lock of job",
    "locks extended late": r"was extended [\d.]+s after it was last set",
    "database errors in the claim loop": r"database error while (?:claiming|waiting for jobs)",
    "heartbeat failures": r"error while beating the heartbeat",
    "recovery failures": r"error while recovering the jobs of dead workers",
    "'database is locked'": r"^(?!.*HINT).*database is locked",  # not the system check's hint
    "outcomes not written": r"Could not write a batch|Could not record the outcome",
    "tracebacks": r"^Traceback",
}


@dataclass
class Execution:
    job_id: int
    attempt: int
    lock_token: str
    pid: int
    started_at: datetime
    finished_at: datetime | None
    host_started_at: datetime
    end: datetime = field(init=False)
    end_source: str = field(init=False)


@dataclass
class Report:
    enqueued: int
    succeeded: int = 0
    lost: list[str] = field(default_factory=list)
    double_runs: list[str] = field(default_factory=list)
    double_run_pairs: int = 0
    running_left: int = 0
    scheduled_left: int = 0
    late: list[str] = field(default_factory=list)
    orphaned_runs: int = 0
    interrupted_runs: int = 0
    runs_by_outcome: dict[str, int] = field(default_factory=dict)
    negative_durations: int = 0
    executions: int = 0
    executions_without_end: int = 0
    repeated_after_end: int = 0
    kills: int = 0
    cuts: int = 0
    cut_misses: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    bad_stops: list[str] = field(default_factory=list)
    skew_seen: list[str] = field(default_factory=list)
    log_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.double_runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "succeeded": self.succeeded,
            "lost": len(self.lost),
            "lost_jobs": self.lost,
            "double_runs_while_locked": len(self.double_runs),
            "double_run_pairs": self.double_run_pairs,
            "double_runs": self.double_runs,
            "running_left": self.running_left,
            "scheduled_left": self.scheduled_left,
            "late": self.late,
            "orphaned_runs": self.orphaned_runs,
            "interrupted_runs": self.interrupted_runs,
            "runs_by_outcome": self.runs_by_outcome,
            "negative_durations": self.negative_durations,
            "executions": self.executions,
            "executions_without_end": self.executions_without_end,
            "repeated_after_end": self.repeated_after_end,
            "kills": self.kills,
            "cuts": self.cuts,
            "unexpected_exits": self.unexpected_exits,
            "bad_stops": self.bad_stops,
            "log_counts": self.log_counts,
            "notes": self.notes,
            "passed": not self.failed,
        }


def _fmt(at: datetime) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3]


def analyse(
    *,
    enqueued: int,
    workers: list[WorkerProcess],
    kills: int,
    cuts: int,
    cut_misses: int,
    lock_lifetime: float,
    end: datetime,
) -> Report:
    """Count lost jobs and double runs; `end` is the database's clock once all workers stopped."""
    from django_jobs.models import Job, JobRun, JobState, RunOutcome
    from tests.testapp.models import ChaosExecution

    report = Report(enqueued=enqueued, kills=kills, cuts=cuts, cut_misses=cut_misses)
    by_pid = {w.pid: w for w in workers}

    jobs = list(
        Job.objects.filter(name__in=CHAOS_JOBS).values(
            "pk",
            "name",
            "state",
            "attempts",
            "locked_by",
            "locked_until",
            "next_run_at",
            "last_error",
        )
    )
    names = {job["pk"]: job["name"] for job in jobs}
    # Their first attempt fails on purpose after its work: its retry is no re-run.
    fails_first = set(
        Job.objects.filter(name__in=CHAOS_JOBS, data__fail_first=True).values_list("pk", flat=True)
    )
    executions: dict[int, list[Execution]] = defaultdict(list)
    for row in ChaosExecution.objects.order_by("started_at", "pk").values():
        execution = Execution(
            job_id=row["job_id"],
            attempt=row["attempt"],
            lock_token=row["lock_token"],
            pid=row["worker_pid"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            host_started_at=row["host_started_at"],
        )
        worker = by_pid.get(execution.pid)
        if execution.finished_at is not None:
            execution.end, execution.end_source = execution.finished_at, "ended"
        elif worker is not None and worker.ended_at is not None:
            # It never recorded its end: its process died first, at the latest when the
            # script saw it dead (a kill, a crash, or SIGTERM with the job still running).
            execution.end, execution.end_source = worker.ended_at, f"died ({worker.ended_by})"
            report.executions_without_end += 1
        else:
            execution.end, execution.end_source = end, "unknown end"
            report.executions_without_end += 1
        executions[execution.job_id].append(execution)
    report.executions = sum(len(v) for v in executions.values())

    # Lost: not succeeded, and not waiting for a worker either.
    report.lost.extend("an enqueued job's row is gone" for _ in range(max(0, enqueued - len(jobs))))
    for job in jobs:
        pk, state = job["pk"], job["state"]
        if state == JobState.SUCCEEDED:
            report.succeeded += 1
            if not any(e.finished_at is not None for e in executions[pk]):
                report.lost.append(
                    f"job {pk} is succeeded but no execution of it ever finished its work"
                )
        elif state == JobState.RUNNING:
            expired = job["locked_until"] is None or job["locked_until"] < end - timedelta(
                seconds=2 * lock_lifetime
            )
            if expired:
                report.lost.append(
                    f"job {pk} is left running by {job['locked_by']} with its lock expired "
                    f"at {_fmt(job['locked_until']) if job['locked_until'] else 'never'}: "
                    "no worker recovered it"
                )
            else:
                report.running_left += 1
        elif state == JobState.SCHEDULED:
            report.scheduled_left += 1
            due = job["next_run_at"]
            if due is not None and due > end + timedelta(seconds=LATE_AFTER):
                report.late.append(
                    f"job {pk} (attempt {job['attempts']} done) is due "
                    f"{(due - end).total_seconds():+.0f}s from now by the database's clock"
                )
        else:
            report.lost.append(
                f"job {pk} is {state} after {job['attempts']} attempt(s): "
                f"{(job['last_error'] or '').splitlines()[0][:160] if job['last_error'] else ''}"
            )

    # Double runs while locked: a job's execution started before an earlier one ended.
    skews = {w.pid: w.skew for w in workers}
    for job_id, runs in sorted(executions.items()):
        overlaps = [
            (first, second)
            for i, first in enumerate(runs)
            for second in runs[i + 1 :]
            if second.started_at < first.end
        ]
        report.repeated_after_end += sum(
            1
            for run in runs[:-1]
            if run.finished_at is not None and not (job_id in fails_first and run.attempt == 1)
        )
        if not overlaps:
            continue
        report.double_run_pairs += len(overlaps)
        first, second = overlaps[0]
        report.double_runs.append(
            f"job {job_id} ({names.get(job_id, '?')}): attempt {second.attempt} in pid {second.pid}"
            f"{_skew_text(skews.get(second.pid, 0))} started at {_fmt(second.started_at)}, "
            f"{(first.end - second.started_at).total_seconds():.3f}s before attempt "
            f"{first.attempt} in pid {first.pid}{_skew_text(skews.get(first.pid, 0))} "
            f"({_fmt(first.started_at)} to {_fmt(first.end)}, {first.end_source}) was over"
            + (f" [{len(overlaps)} overlapping pairs]" if len(overlaps) > 1 else "")
        )

    # The run history the workers wrote.
    outcomes = Counter(
        JobRun.objects.filter(job_name__in=CHAOS_JOBS).values_list("outcome", flat=True)
    )
    report.runs_by_outcome = dict(sorted(outcomes.items()))
    report.orphaned_runs = outcomes.get(RunOutcome.ORPHANED, 0)
    report.interrupted_runs = outcomes.get(RunOutcome.INTERRUPTED, 0)
    report.negative_durations = sum(
        1
        for started, finished in JobRun.objects.filter(
            job_name__in=CHAOS_JOBS, finished_at__isnull=False
        ).values_list("started_at", "finished_at")
        if finished < started
    )

    # The workers: deaths nobody asked for, stops that were not clean, and the skew they ran at.
    for worker in workers:
        if worker.ended_by == "exit":
            report.unexpected_exits.append(
                f"{worker.name} exited by itself with status {worker.exit_code}: "
                + crash_summary(worker.output(lines=200))
            )
        elif worker.ended_by.startswith("SIGTERM") and worker.exit_code != 0:
            report.bad_stops.append(
                f"{worker.name}: {worker.ended_by}, exit status {worker.exit_code}"
            )
    by_skew: dict[int, list[float]] = defaultdict(list)
    for runs in executions.values():
        for execution in runs:
            offset = (execution.host_started_at - execution.started_at).total_seconds()
            by_skew[skews.get(execution.pid, 0)].append(offset)
    for skew, offsets in sorted(by_skew.items()):
        report.skew_seen.append(
            f"workers at {skew:+d}s ran {len(offsets)} execution(s); their clock minus the "
            f"database's: median {statistics.median(offsets):+.1f}s"
        )

    counts: Counter[str] = Counter()
    for worker in workers:
        try:
            text = worker.log_path.read_text(errors="replace")
        except OSError:
            continue
        for label, pattern in LOG_PATTERNS.items():
            counts[label] += len(re.findall(pattern, text, flags=re.MULTILINE))
    report.log_counts = {label: counts[label] for label in LOG_PATTERNS}
    return report


def _skew_text(skew: int) -> str:
    return f" (clock {skew:+d}s)" if skew else ""


_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b.*")


def crash_summary(log: str) -> str:
    """The exception a worker's log ends with, and the innermost django_jobs frame it passed."""
    lines = log.splitlines()
    error = next((line for line in reversed(lines) if _EXCEPTION.match(line)), "")
    frame = ""
    for line in lines:
        if (match := _FRAME.match(line)) and "/django_jobs/" in match["path"]:
            path = match["path"][match["path"].rindex("/django_jobs/") + 1 :]
            frame = f"{path}:{match['line']} in {match['func']}"
    if not error:
        tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
        return f"no traceback; its log ends: {tail[:300] or '(empty)'}"
    return error.strip()[:300] + (f" (last django_jobs frame: {frame})" if frame else "")


def render(report: Report, *, cuts_possible: bool) -> str:
    """The report as the script prints it."""
    lines = ["", "=" * 72, "chaos report", "=" * 72]

    def row(label: str, value: object, note: str = "") -> None:
        lines.append(f"{label:<38} {value!s:>6}{('   ' + note) if note else ''}")

    row("jobs enqueued", report.enqueued)
    row("succeeded", report.succeeded)
    row("LOST", len(report.lost), "not succeeded, nor still waiting for a worker")
    row("DOUBLE RUNS WHILE LOCKED", len(report.double_runs), "jobs whose runs overlapped")
    row("still running (lock live)", report.running_left)
    row("still scheduled", report.scheduled_left, f"of which {len(report.late)} due far ahead")
    row("orphaned runs recorded", report.orphaned_runs, "JobRun outcome 'orphaned'")
    row("runs handed back on SIGTERM", report.interrupted_runs)
    row("executions recorded", report.executions)
    row("  of which never recorded their end", report.executions_without_end, "killed mid-run")
    row("  re-run after a finished execution", report.repeated_after_end, "outcome lost: rerun")
    row("runs with a negative duration", report.negative_durations)
    row("kills (kill -9)", report.kills)
    if cuts_possible:
        row("connection cuts", report.cuts, f"{report.cut_misses} more found the backend gone")
    else:
        row("connection cuts", "n/a", "SQLite has no server connection to cut")
    row("workers that exited by themselves", len(report.unexpected_exits))
    row("workers not exiting 0 on SIGTERM", len(report.bad_stops))
    lines.append(f"run history by outcome: {report.runs_by_outcome}")
    lines.append("workers' logs: " + ", ".join(f"{k} {v}" for k, v in report.log_counts.items()))
    for text in report.skew_seen:
        lines.append(f"clock: {text}")
    for title, items in (
        ("Lost jobs", report.lost),
        ("Double runs while locked", report.double_runs),
        ("Jobs due far ahead (a time from a skewed host clock?)", report.late),
        ("Workers that exited by themselves", report.unexpected_exits),
        ("Workers that did not exit 0 on SIGTERM", report.bad_stops),
        ("Notes", report.notes),
    ):
        if not items:
            continue
        lines.append(f"\n{title} ({len(items)}):")
        lines.extend(f"  - {item}" for item in items[:10])
        if len(items) > 10:
            lines.append(f"  ... and {len(items) - 10} more")
    verdict = "FAIL" if report.failed else "PASS"
    lines.append(
        f"\nRESULT: {verdict} ({len(report.lost)} lost, {len(report.double_runs)} double runs "
        "while locked)"
    )
    return "\n".join(lines)
