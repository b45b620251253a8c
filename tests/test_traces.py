"""OpenTelemetry traces end to end: a real ``igsend api`` and a real worker export over OTLP/HTTP to a receiver of
the test's own (decoded with opentelemetry-proto); a message sent with the caller's ``traceparent`` makes one
connected trace with spans of both processes, and no span holds a token, a key or the message's text."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from igsend.core import tracing
from tests.conftest import TOKEN, wait_until, worker_env

DB = 14
KEY = "traces-api-key"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TEXT = "a text no span may hold 8c1f"


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    start: int
    end: int
    error: bool


class Collector:
    """An OTLP/HTTP receiver (``POST /v1/traces``, protobuf) that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                found = []
                for resource in request.resource_spans:
                    service = next((a.value.string_value for a in resource.resource.attributes
                                    if a.key == "service.name"), "")
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            found.append(Span(service, span.name, span.trace_id.hex(), span.span_id.hex(),
                                              span.parent_span_id.hex(),
                                              {a.key: _value(a.value) for a in span.attributes},
                                              span.start_time_unix_nano, span.end_time_unix_nano,
                                              span.status.code == 2))
                with collector.lock:
                    collector.spans += found
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    collector = Collector()
    yield collector
    collector.server.shutdown()


@pytest.fixture(scope="module")
def traced(redis_url: str, sandbox: str, accounts_file: Path, collector: Collector,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A worker and an ``igsend api`` on a Redis database of their own, both exporting to the collector: the API's
    base URL."""
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command, start_worker

    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    redis_lib.Redis.from_url(url).flushdb()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    logs = tmp_path_factory.mktemp("traces")
    _logs.append(logs)
    worker = start_worker(env=worker_env(url, sandbox, accounts_file, **otel), log_path=logs / "worker.log",
                          concurrency=4)
    port = free_port()
    api = start_command("api", ["api", "--port", str(port), "--workers", "1"],
                        env={"IGSEND_REDIS_URL": url, "IGSEND_API_KEYS": KEY, **otel},
                        ready_url=f"http://127.0.0.1:{port}/openapi.json", log_path=logs / "api.log")
    yield f"http://127.0.0.1:{port}"
    api.stop()
    worker.stop()
    redis_lib.Redis.from_url(url).flushdb()


_logs: list[Path] = []


def traced_logs() -> Path:
    """Where the ``traced`` processes write their logs."""
    return _logs[-1]


def send(api: str, recipient: str, *, trace_id: str) -> str:
    answer = requests.post(f"{api}/v1/messages", json={"kind": "text", "recipient": recipient, "text": TEXT},
                           headers={"Authorization": f"Bearer {KEY}",
                                    "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}, timeout=10)
    assert answer.status_code == 202, answer.text
    job_id = str(answer.json()["id"])
    wait_until(lambda: requests.get(f"{api}/v1/messages/{job_id}", headers={"Authorization": f"Bearer {KEY}"},
                                    timeout=10).json()["status"] == "delivered", timeout=40)
    return job_id


def test_a_message_sent_through_the_api_with_a_traceparent_is_one_trace_across_api_and_worker(
        traced: str, collector: Collector) -> None:
    job_id = send(traced, "trace-one", trace_id=CALLER_TRACE)
    # igsend.admit is the single path's (lua/admit.lua); a chunk's jobs are admitted together (lua/admit_chunk.lua)
    wanted = {"igsend.enqueue", "igsend.send", "igsend.wait", "igsend.graph.post"}
    wait_until(lambda: wanted <= {s.name for s in collector.trace(CALLER_TRACE)}, timeout=30)
    spans = collector.trace(CALLER_TRACE)
    assert {s.service for s in spans} >= {"igsend-api", "igsend-worker"}
    ids = {s.span_id for s in spans}
    assert all(s.parent in ids or s.parent == CALLER_SPAN for s in spans)  # connected, under the caller's span
    [send_span] = [s for s in spans if s.name == "igsend.send"]
    assert send_span.service == "igsend-worker" and send_span.attributes["igsend.job_id"] == job_id
    assert send_span.attributes["igsend.outcome"] == "delivered"
    [post] = [s for s in spans if s.name == "igsend.graph.post"]
    assert post.attributes["http.response.status_code"] == 200
    [enqueue] = [s for s in spans if s.name == "igsend.enqueue"]
    assert enqueue.service == "igsend-api" and enqueue.attributes["igsend.job_id"] == job_id
    # the worker's log lines written inside the job's span carry its trace (text format: a suffix)
    worker_log = Path(traced_logs()) / "worker.log"
    wait_until(lambda: f"trace_id={CALLER_TRACE}" in worker_log.read_text(errors="replace"), timeout=10)


def test_a_retried_message_shows_each_attempt_and_its_wait_and_no_span_holds_a_secret(
        traced: str, sandbox: str, collector: Collector) -> None:
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": "trace-retry", "faults": [
        {"code": 2, "status": 503}]}, timeout=5).raise_for_status()
    send(traced, "trace-retry", trace_id=trace_id)
    wait_until(lambda: len([s for s in collector.trace(trace_id) if s.name == "igsend.send"]) == 2, timeout=30)
    spans = collector.trace(trace_id)
    posts = [s for s in spans if s.name == "igsend.graph.post"]
    assert [p.attributes["http.response.status_code"] for p in posts] == [503, 200]
    assert posts[0].error and posts[0].attributes["graph.code"] == 2
    first, second = [s for s in spans if s.name == "igsend.send"]
    assert first.attributes["igsend.outcome"] in ("retrying", "transient")  # single path: status; chunk: verdict
    assert second.attributes["igsend.outcome"] == "delivered"
    waits = [s for s in spans if s.name == "igsend.wait"]
    assert waits[-1].attributes["igsend.waited_for"] == "retry back-off or its time"
    for line in _span_list(spans):  # the closing note of issue 38 quotes this list
        print(line)
    with collector.lock:
        everything = repr([(s.name, s.attributes) for s in collector.spans])
    for secret in (TOKEN, KEY, TEXT):
        assert secret not in everything


def _span_list(spans: list[Span]) -> list[str]:
    start = min(s.start for s in spans)
    return [f"{s.service:<14} {s.name:<28} +{(s.start - start) / 1e6:8.1f} ms  {(s.end - s.start) / 1e6:8.1f} ms"
            f"{'  ERROR' if s.error else ''}" for s in spans]


def test_with_no_otel_variable_nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.configured()
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    with tracing.span("igsend.nothing") as current:  # a no-op span: nothing is recorded, nothing fails
        assert not current.get_span_context().is_valid
    assert tracing.traceparent() is None

