"""OpenTelemetry (django_jobs.tracing): the scheduling code's trace is carried in the row and
continued by the run's span, with the real SDK (in-memory here, a file for worker processes)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from django_jobs import now, schedule_many, tracing
from django_jobs.models import Job, JobState
from tests.otel_support import SPANS_FILE_ENV, read_spans

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def tracer() -> trace.Tracer:
    """A tracer of the SDK whose spans end in an in-memory exporter.

    OpenTelemetry takes one tracer provider per process, so it is set on first use and kept
    (pytest-django runs this module's transactional tests apart from the others).
    """
    if trace.get_tracer_provider() is not _PROVIDER:
        trace.set_tracer_provider(_PROVIDER)
    assert trace.get_tracer_provider() is _PROVIDER, "another test set a tracer provider first"
    return trace.get_tracer("tests")


@pytest.fixture
def spans(tracer: trace.Tracer) -> InMemorySpanExporter:
    _EXPORTER.clear()
    return _EXPORTER


def ids(span: trace.Span) -> str:
    """The trace and span ids in a traceparent ("00-<trace id>-<span id>-<flags>")."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-"


@pytest.mark.django_db
def test_a_job_scheduled_inside_a_span_carries_its_context(tracer, spans):
    with tracer.start_as_current_span("POST /sign-up") as span:
        job = now("record", {"email": "a@example.com"})
        many = schedule_many([("now", "record", {}), ("in 1 hour", "sleep", {})])
    stored = Job.objects.get(pk=job.pk).trace_context
    assert stored["traceparent"].startswith(ids(span))
    assert [Job.objects.get(pk=j.pk).trace_context for j in many] == [stored, stored]


@pytest.mark.django_db
def test_no_span_no_context_and_recurring_rows_never_carry_one(tracer, spans):
    assert now("record").trace_context is None
    with tracer.start_as_current_span("admin: create a recurring job"):
        monthly, _ = Job.objects.create_job(
            name="monthly", schedule="0 3 1 * *", timezone="Europe/Paris"
        )
        assert monthly.trace_context is None
        # A run-now copy is a one-off asked for by this request: it continues its trace.
        copy = monthly.run_now()
    assert copy.trace_context is not None


@pytest.mark.django_db(transaction=True)  # execute() closes the connection, as between requests
def test_the_run_is_a_consumer_span_whose_parent_is_the_scheduling_span(tracer, spans):
    from django_jobs.worker.executor import Running, execute

    with tracer.start_as_current_span("POST /sign-up") as parent:
        job = now("record")
    claimed = Job.objects.get(pk=job.pk)
    claimed.attempts = 1
    outcomes = []
    execute(Running(claimed), lambda entry, outcome, signal: outcomes.append(outcome))
    assert outcomes and outcomes[0].failure is None
    [run] = [s for s in spans.get_finished_spans() if s.name == "run record"]
    assert run.kind is SpanKind.CONSUMER
    assert run.parent is not None and run.parent.span_id == parent.get_span_context().span_id
    assert run.context.trace_id == parent.get_span_context().trace_id
    assert run.attributes["django_jobs.job.id"] == job.pk
    assert run.attributes["django_jobs.job.attempt"] == 1
    assert run.attributes["django_jobs.job.queue"] == "default"
    assert run.attributes["django_jobs.run.outcome"] == "succeeded"
    assert run.status.status_code is StatusCode.UNSET
    # The span is no longer current once the run is over.
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.django_db(transaction=True)
def test_a_stored_context_that_is_not_a_carrier_starts_a_new_trace(tracer, spans):
    from django_jobs.worker.executor import Running, execute

    job = now("record")
    Job.objects.filter(pk=job.pk).update(trace_context=["not", "a", "dict"])
    claimed = Job.objects.get(pk=job.pk)
    execute(Running(claimed), lambda *args: None)
    [run] = [s for s in spans.get_finished_spans() if s.name == "run record"]
    assert run.parent is None


def test_capture_leaves_a_given_context_alone(tracer):
    fields = {"trace_context": {"traceparent": "given"}}
    with tracer.start_as_current_span("x"):
        tracing.capture(fields)
    assert fields == {"trace_context": {"traceparent": "given"}}


@pytest.mark.slow
def test_a_real_worker_continues_the_trace(tracer, spans, start_worker, worker_env, tmp_path):
    """sign-up -> run record, and two failed attempts of always-fails, across processes."""
    with tracer.start_as_current_span("POST /sign-up") as parent:
        ok = now("record")
        bad = now("always-fails")
    spans_file = tmp_path / "spans.jsonl"
    worker_env[SPANS_FILE_ENV] = str(spans_file)
    worker = start_worker("--burst", "--concurrency", "2")
    assert worker.wait() == 0, worker.output()
    assert Job.objects.get(pk=bad.pk).state == JobState.FAILED
    recorded = read_spans(spans_file)
    trace_id = f"0x{parent.get_span_context().trace_id:032x}"
    parent_id = f"0x{parent.get_span_context().span_id:016x}"
    by_name: dict[str, list[dict]] = {}
    for span in recorded:
        by_name.setdefault(span["name"], []).append(span)
    [run] = by_name["run record"]
    assert run["context"]["trace_id"] == trace_id and run["parent_id"] == parent_id
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["attributes"]["django_jobs.job.id"] == ok.pk
    assert run["attributes"]["django_jobs.run.outcome"] == "succeeded"
    failed = by_name["run always-fails"]
    assert sorted(s["attributes"]["django_jobs.job.attempt"] for s in failed) == [1, 2]
    for span in failed:
        # Every attempt continues the trace of the code that scheduled the job.
        assert span["parent_id"] == parent_id and span["context"]["trace_id"] == trace_id
        assert span["status"]["status_code"] == "ERROR"
        assert span["attributes"]["django_jobs.run.outcome"] == "failed"
        [event] = span["events"]
        assert event["name"] == "exception"
        assert event["attributes"]["exception.type"] == "builtins.ValueError"
        assert "broken" in event["attributes"]["exception.message"]


def test_without_a_tracer_provider_no_span_is_made(worker_env):
    """The API alone (a dependency of some other package) records nothing: no span is made."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import django; django.setup()\n"
        "from django_jobs import tracing\n"
        "from django_jobs.models import Job\n"
        "print(tracing.ENABLED, tracing.start_run(Job(pk=1, name='record')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None"]
