"""OpenTelemetry: carry the scheduling code's trace into the job row, and continue it in a span.

When ``opentelemetry-api`` is installed (the ``otel`` extra), `capture()` stores the current
span's W3C trace context (traceparent, tracestate, as the global propagator writes them) in
``Job.trace_context`` as the row is created, and the worker runs the job inside a CONSUMER
span whose parent is that context, so a trace shows "POST /sign-up -> run
send-welcome-email". Without the package, each call is one None check. No SQL, no models.

Recurring rows carry no context: each of their runs starts a trace of its own. A run-now
copy of a recurring job carries the context of the request that asked for it, and every
attempt of a job (retries included) continues the same trace.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: tracing costs one None check
    trace = None  # type: ignore[assignment]

ENABLED = trace is not None
TRACER_NAME = "django_jobs"
MAX_CARRIER_KEYS = 8  # traceparent, tracestate, baggage, and room for another propagator


def current_carrier() -> dict[str, str] | None:
    """The current span's context as the global propagator writes it, or None if no span."""
    if trace is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def capture(fields: dict[str, Any]) -> None:
    """Add the current trace context to the fields of a job row about to be created."""
    if trace is None or fields.get("schedule") or fields.get("trace_context") is not None:
        return
    carrier = current_carrier()
    if carrier is not None:
        fields["trace_context"] = carrier


def capture_many(rows: list[dict[str, Any]]) -> None:
    """capture() for the fields of rows about to be inserted together (one context for all)."""
    if trace is None:
        return
    carrier = current_carrier()
    if carrier is None:
        return
    for fields in rows:
        if not fields.get("schedule") and fields.get("trace_context") is None:
            fields["trace_context"] = dict(carrier)


def _parent(stored: object) -> Any:
    """The context a run's span starts from: the stored carrier's, or a new trace."""
    if not isinstance(stored, dict) or len(stored) > MAX_CARRIER_KEYS:
        return otel_context.Context()
    carrier = {str(k): v for k, v in stored.items() if isinstance(v, str)}
    # Extracted into an empty context: nothing of the pool thread's leaks into the run.
    return propagate.extract(carrier, context=otel_context.Context())


class RunSpan:
    """The span of one run: current on the pool thread from start() until close()."""

    def __init__(self, job: Any) -> None:
        parent = _parent(job.trace_context)
        tracer = trace.get_tracer(TRACER_NAME)
        self.span = tracer.start_span(
            f"run {job.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "django_jobs.job.name": job.name,
                "django_jobs.job.id": job.pk,
                "django_jobs.job.attempt": job.attempts,
                "django_jobs.job.queue": job.queue,
                "messaging.system": "django_jobs",
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.pk),
            },
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def ended(self, outcome: str, error: str = "", error_class: str = "", tb: str = "") -> None:
        """Record how the run ended: "succeeded", "cancelled", or a failure with its error."""
        self.span.set_attribute("django_jobs.run.outcome", outcome)
        if outcome not in ("succeeded", "cancelled"):  # failed, timed_out
            self.span.add_event(
                "exception",
                {
                    "exception.type": error_class,
                    "exception.message": error,
                    "exception.stacktrace": tb,
                },
            )
            self.span.set_status(Status(StatusCode.ERROR, error[:500]))

    def close(self) -> None:
        otel_context.detach(self._token)
        self.span.end()


def start_run(job: Any) -> RunSpan | None:
    """The span of a run starting on this thread, or None when no span would be recorded.

    None without OpenTelemetry, and while no tracer provider is set (the API alone, as a
    dependency of another package, records nothing): a run then costs no span at all.
    """
    if trace is None or isinstance(trace.get_tracer_provider(), _NOT_RECORDING):
        return None
    return RunSpan(job)


_NOT_RECORDING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider) if trace is not None else ()
