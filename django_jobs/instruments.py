"""What a run reports to the metrics and to tracing: one hook when it starts, one when it ends.

The executor calls `watch()` for every run; with neither prometheus_client exporting
(`runjobs --metrics-port`) nor an OpenTelemetry tracer provider set, that is a few checks
and the run carries no watcher.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import metrics, tracing

logger = logging.getLogger("django_jobs.worker")


class RunWatch:
    """The span and the metrics of one run."""

    def __init__(
        self,
        job: Any,
        started: float,
        recorder: metrics.WorkerMetrics | None,
        span: tracing.RunSpan | None,
    ) -> None:
        self.job, self.started, self.recorder, self.span = job, started, recorder, span

    def ended(self, outcome: Any) -> None:
        """Record the end of the run (a claiming.Outcome), before it is written."""
        try:
            self._ended(outcome)
        except Exception:  # a metric or an exporter must never stop the outcome's write
            logger.exception("Could not record the metrics or span of job %s.", self.job)

    def _ended(self, outcome: Any) -> None:
        failure = outcome.failure
        # The run's outcome as its JobRun row says it: succeeded, failed, timed_out, cancelled.
        result = "succeeded" if failure is None else str(getattr(failure, "outcome", "failed"))
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
    try:
        span = tracing.start_run(job) if tracing.ENABLED else None
    except Exception:  # the job runs without its span rather than not at all
        logger.exception("Could not start the span of job %s.", job)
        span = None
    if recorder is None and span is None:
        return None
    return RunWatch(job, started, recorder, span)
