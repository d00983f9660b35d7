"""OpenTelemetry's SDK for the tests: spans of worker subprocesses go to a file, one JSON a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPANS_FILE_ENV = "DJANGO_JOBS_TEST_SPANS_FILE"


def export_spans_to(path: str) -> None:
    """Install a tracer provider whose spans are appended to `path` as they end."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(path, "a", buffering=1)  # noqa: SIM115  (open for the life of the process)
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(
            ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        )
    )
    trace.set_tracer_provider(provider)


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
