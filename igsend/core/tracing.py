"""OpenTelemetry traces, configured by OpenTelemetry's own variables; nothing starts when none names an exporter.

A message's trace: the producer's ``igsend.enqueue`` span (in the HTTP API, the span of the request, continuing
the caller's ``traceparent``) -> the job record keeps its ``traceparent`` -> each worker run of the job is an
``igsend.send`` span in that trace, with ``igsend.wait`` (how long it waited since it was queued or due, and why),
``igsend.admit`` and one ``igsend.graph.post`` per POST (HTTP status, Graph code and subcode, ``fbtrace_id``)
inside. Celery's and Flask's maintained instrumentations add their own spans (a raw Celery client that sends a
``traceparent`` header continues its trace through them). Attributes name the job, account, kind, attempt and
outcome, never a token, a secret or a message's text.

Which variables start it (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP), unless
``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``. The sampler (``OTEL_TRACES_SAMPLER``, default
``parentbased_always_on``), batch sizes and headers are the SDK's own variables. Each process names itself
(``igsend-api``, ``igsend-worker``, ``igsend-cli``) unless ``OTEL_SERVICE_NAME`` says otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, Status, StatusCode

log = logging.getLogger("igsend.tracing")
_started: str | None = None
_lock = threading.Lock()
TRACER = "igsend"


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether OpenTelemetry's variables ask for traces to be exported."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def start(service: str) -> bool:
    """Start exporting this process's spans as ``service`` (``OTEL_SERVICE_NAME`` wins) when configured; once per
    process. Returns whether traces are on."""
    global _started
    if not configured():
        return False
    with _lock:
        if _started is not None:
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = os.environ.get("OTEL_SERVICE_NAME") or service
        provider = TracerProvider(resource=Resource.create({"service.name": name}))  # sampler: OTEL_TRACES_SAMPLER
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _started = name
        log.info("traces go to %s as %s", os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                 or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), name)
        return True


def on() -> bool:
    return _started is not None


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (a CLI command that is about to exit)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_ms)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def traceparent() -> str | None:
    """The current span's W3C ``traceparent`` (to keep with a job), or None when there is none."""
    if not on():
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span(name: str, *, parent: str | None = None, start_time: float | None = None,
         attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span of igsend's own (a no-op one when traces are off). ``parent``: a stored ``traceparent`` to continue
    (the current span's trace otherwise); ``start_time``: Unix seconds, for a wait that began earlier."""
    if not on():
        yield trace.INVALID_SPAN
        return
    ctx = extract({"traceparent": parent}) if parent else None
    token = context.attach(ctx) if ctx is not None else None
    try:
        # Exceptions are not errors by themselves here: Celery's Ignore ends a run that deferred the job; a
        # failure is marked where it is one (:func:`failed`).
        with tracer().start_as_current_span(
                name, attributes=dict(attributes or {}), record_exception=False, set_status_on_exception=False,
                start_time=int(start_time * 1e9) if start_time is not None else None) as current:
            yield current
    finally:
        if token is not None:
            context.detach(token)


def waited(name: str, since: float, until: float, **attributes: Any) -> None:
    """A span for a wait that is over: from ``since`` to ``until`` (Unix seconds)."""
    if not on() or until <= since:
        return
    current = tracer().start_span(name, start_time=int(since * 1e9), attributes=attributes)
    current.end(end_time=int(until * 1e9))


def failed(current: Span, description: str) -> None:
    current.set_status(Status(StatusCode.ERROR, description))


def ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex (for log lines), or None."""
    current = trace.get_current_span().get_span_context()
    if not current.is_valid:
        return None
    return f"{current.trace_id:032x}", f"{current.span_id:016x}"


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` to each record made inside a span (empty strings outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = ids()
        record.trace_id, record.span_id = found if found else ("", "")
        return True
