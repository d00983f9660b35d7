"""What a run reports to the metrics and to tracing: one hook when it starts, one when it ends.

The executor calls `watch()` for every run; with neither prometheus_client exporting
(`runjobs --metrics-port`) nor OpenTelemetry installed, that is two None checks and the run
carries no watcher.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import metrics, tracing

logger = logging.getLogger("django_jobs.worker")


class RunWatch:
    """The span and the metrics of one run."""

    def __init__(self, job: Any, started: float, recorder: metrics.WorkerMetrics | None) -> None:
        self.job, self.started, self.recorder = job, started, recorder
        self.span = tracing.start_run(job)

    def ended(self, outcome: Any) -> None:
        """Record the end of the run (a claiming.Outcome), before it is written."""
        try:
            self._ended(outcome)
        except Exception:  # a metric or an exporter must never stop the outcome's write
            logger.exception("Could not record the metrics or span of job %s.", self.job)

    def _ended(self, outcome: Any) -> None:
        failure = outcome.failure
        result = "failed" if failure is not None else "succeeded"
        if self.recorder is not None:
            job = self.job
            self.recorder.observe(
                queue=job.queue,
                name=job.name,
                outcome=result,
                duration=time.monotonic() - self.started,
                due_at=job.next_run_at,
                started_at=job.last_started_at,
            )
        if self.span is not None:
            if failure is None:
                self.span.ended(result)
            else:
                self.span.ended(result, failure.error, failure.error_class, failure.traceback)

    def close(self) -> None:
        """End the span (on the thread that started it)."""
        if self.span is not None:
            try:
                self.span.close()
            except Exception:
                logger.exception("Could not end the span of job %s.", self.job)


def watch(job: Any, started: float) -> RunWatch | None:
    """A watcher for a run starting now on this thread, or None when nothing observes runs."""
    recorder = metrics.worker_metrics()
    if recorder is None and not tracing.ENABLED:
        return None
    try:
        return RunWatch(job, started, recorder)
    except Exception:  # the job runs, unobserved, rather than not at all
        logger.exception("Could not start the span of job %s.", job)
        return None
