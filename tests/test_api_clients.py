"""The OpenAPI document as other languages use it: it validates, a generated Python client (openapi-python-client)
sends one message of every kind through a real ``igsend api`` server to the session's worker and sandbox, and
TypeScript types generated from it (openapi-typescript) accept a body of every kind under ``tsc --strict``."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from openapi_spec_validator import validate

from producers.api import create_app
from schemas import KINDS
from tests.conftest import received

KEY = "client-api-key"
TS_FIXTURE = Path(__file__).parent / "clients" / "ts" / "package.json"

#: One valid document of every kind, the same for the Python and the TypeScript client.
EXAMPLES: dict[str, dict[str, Any]] = {
    "text": {"kind": "text", "recipient": "client-text", "text": "hello from a generated client"},
    "link": {"kind": "link", "recipient": "client-link", "url": "https://example.com/a"},
    "image": {"kind": "image", "recipient": "client-image", "url": "https://cdn.example.com/a.png"},
    "gif": {"kind": "gif", "recipient": "client-gif", "url": "https://cdn.example.com/a.gif"},
    "video": {"kind": "video", "recipient": "client-video", "url": "https://cdn.example.com/a.mp4"},
    "audio": {"kind": "audio", "recipient": "client-audio", "url": "https://cdn.example.com/a.m4a"},
    "post": {"kind": "post", "recipient": "client-post", "post_id": "17900000000000000"},
    "sticker": {"kind": "sticker", "recipient": "client-sticker"},
    "react": {"kind": "react", "recipient": "client-react", "message_id": "mid.react-1"},  # reaction: default
    "unreact": {"kind": "unreact", "recipient": "client-unreact", "message_id": "mid.react-1"},
    "images": {"kind": "images", "recipient": "client-images",
               "images": [{"url": "https://cdn.example.com/a.png"}, {"attachment_id": "123456"}]},
    "file": {"kind": "file", "recipient": "client-file", "url": "https://cdn.example.com/terms.pdf"},
    "quick_replies": {"kind": "quick_replies", "recipient": "client-quick", "text": "Pick one",
                      "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "YES"}]},
    "generic_template": {"kind": "generic_template", "recipient": "client-generic", "elements": [
        {"title": "Hat", "subtitle": "Warm", "default_action": {"type": "web_url", "url": "https://example.com/h"},
         "buttons": [{"type": "postback", "title": "Buy", "payload": "BUY"}]}]},
    "button_template": {"kind": "button_template", "recipient": "client-buttons", "text": "Next?",
                        "buttons": [{"type": "web_url", "title": "Visit", "url": "https://example.com/v"}]},
    "product_template": {"kind": "product_template", "recipient": "client-product", "product_ids": ["1234567890"],
                         "account": "shop"},  # Facebook Login only: the session's Page-linked account
    "typing_on": {"kind": "typing_on", "recipient": "client-typing-on"},
    "typing_off": {"kind": "typing_off", "recipient": "client-typing-off"},
    "mark_seen": {"kind": "mark_seen", "recipient": "client-seen"},
    "private_reply": {"kind": "private_reply", "comment_id": "17900000000000077", "text": "Thanks!"},
}


def recipient(example: dict[str, Any]) -> str:
    """Who a job says it went to: the IGSID, or the comment a private reply answers."""
    return example.get("recipient") or f"comment:{example['comment_id']}"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(api_keys=[KEY]).test_client().get("/openapi.json").get_json()


def component_of(document: dict[str, Any], kind: str) -> str:
    """The component a kind's body is, by the discriminator's mapping (what generators go by)."""
    return document["components"]["schemas"]["Message"]["discriminator"]["mapping"][kind].rsplit("/", 1)[-1]


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(KINDS), "add an example of each new kind to EXAMPLES"


def test_the_document_is_valid_openapi(document) -> None:
    validate(document)
    operations = {op["operationId"] for path in document["paths"].values() for method, op in path.items()
                  if method != "parameters"}
    assert {"sendMessage", "sendBatch", "getMessage", "listDeadLetters", "replayDeadLetter",
            "health"} <= operations
    assert document["servers"] == [{"url": "/", "description": "the server that serves this document"}]


def test_the_document_types_what_clients_read(document) -> None:
    schemas = document["components"]["schemas"]
    mapping = schemas["Message"]["discriminator"]["mapping"]
    assert mapping == {kind: f"#/components/schemas/{component_of(document, kind)}" for kind in KINDS}
    for kind in KINDS:
        schema = schemas[component_of(document, kind)]
        assert schema["properties"]["kind"]["enum"] == [kind]
        assert not {"account", "idempotency_key", "reaction"} & set(schema["required"]), kind  # server defaults
        # openapi-typescript types a property with a `default` as always present: the server's default is told
        assert not [name for name, prop in schema["properties"].items() if "default" in prop], kind
    send = document["paths"]["/v1/messages"]["post"]
    assert send["responses"]["202"]["headers"]["Location"]["required"] is True
    error = {"$ref": "#/components/schemas/Error"}
    for path in document["paths"].values():
        for method, op in path.items():
            if method == "parameters" or op["operationId"] == "health":
                continue
            for code in ("401", "503"):
                assert op["responses"][code]["content"]["application/json"]["schema"] == error, (op, code)
    assert set(schemas["Error"]["required"]) == {"code", "status", "message"}
    for name, props in (("Status", ("attempt_log",)), ("DeadLetter", ("attempts",))):
        for prop in props:
            assert schemas[name]["properties"][prop]["items"] == {"$ref": "#/components/schemas/Attempt"}
    assert schemas["BatchItem"]["properties"]["errors"]["allOf"] == [{"$ref": "#/components/schemas/FieldErrors"}]

    def untyped(node: Any, where: str) -> list[str]:
        """Objects that say nothing of their shape (the stored message document is one, on purpose)."""
        if isinstance(node, dict):
            found = [where] if node.get("type") == "object" and not {"properties", "additionalProperties"} & set(
                node) and "message document" not in node.get("description", "") else []
            if node.get("additionalProperties") == {}:
                found.append(where)
            return found + [f for key, value in node.items() for f in untyped(value, f"{where}/{key}")]
        if isinstance(node, list):
            return [f for i, value in enumerate(node) for f in untyped(value, f"{where}/{i}")]
        return []

    assert untyped(document["components"], "components") == []


# --- a generated Python client against a real server -----------------------------------------------------------

@pytest.fixture(scope="module")
def api_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``igsend api`` (gunicorn) on a free port, with its own key, on the session's Redis."""
    from igsend.local.embedded_redis import free_port
    from igsend.local.processes import start_command

    port = free_port()
    service = start_command("api", ["api", "--port", str(port), "--workers", "1"],
                            env={"IGSEND_REDIS_URL": redis_url, "IGSEND_API_KEYS": KEY},
                            ready_url=f"http://127.0.0.1:{port}/openapi.json",
                            log_path=tmp_path_factory.mktemp("logs") / "api.log")
    yield f"http://127.0.0.1:{port}"
    service.stop()


@pytest.fixture(scope="module")
def python_client(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The package openapi-python-client generates from the served document, imported."""
    import requests

    root = tmp_path_factory.mktemp("pyclient")
    (root / "openapi.json").write_text(requests.get(f"{api_url}/openapi.json", timeout=5).text)
    (root / "config.yaml").write_text("post_hooks: []\n")  # no ruff/formatter runs over the generated code
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run([str(generator), "generate", "--path", "openapi.json", "--meta", "none",
                           "--output-path", "igsend_client", "--config", "config.yaml"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("igsend_client")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "igsend_client" or m.startswith("igsend_client.")]:
            del sys.modules[name]


@pytest.mark.scenario
def test_a_generated_python_client_delivers_every_kind(python_client, api_url, worker, clean, sandbox,
                                                       document) -> None:
    client_mod = python_client
    models = importlib.import_module("igsend_client.models")
    send_message = importlib.import_module("igsend_client.api.messages.send_message")
    get_message = importlib.import_module("igsend_client.api.messages.get_message")
    list_dead_letters = importlib.import_module("igsend_client.api.messages.list_dead_letters")
    health = importlib.import_module("igsend_client.api.health.health")

    anonymous = client_mod.Client(base_url=api_url, raise_on_unexpected_status=True)
    assert health.sync(client=anonymous).ok is True  # the session's worker answers
    refused = send_message.sync(client=anonymous, body=models.StickerMessage.from_dict(EXAMPLES["sticker"]))
    assert isinstance(refused, models.Error) and refused.code == 401

    client = client_mod.AuthenticatedClient(base_url=api_url, token=KEY, raise_on_unexpected_status=True)
    jobs: dict[str, str] = {}
    for kind in KINDS:
        body = getattr(models, component_of(document, kind)).from_dict(EXAMPLES[kind])
        answer = send_message.sync_detailed(client=client, body=body, idempotency_key=f"client-{kind}")
        assert answer.status_code == 202, (kind, answer.content)
        assert isinstance(answer.parsed, models.Queued) and answer.parsed.warnings == []
        assert answer.headers["Location"] == f"/v1/messages/{answer.parsed.id}"
        jobs[kind] = answer.parsed.id

    delivered: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while len(delivered) < len(jobs) and time.monotonic() < deadline:
        for kind, job_id in jobs.items():
            if kind not in delivered:
                status = get_message.sync(client=client, job_id=job_id)
                assert isinstance(status, models.Status), status
                assert status.status not in (models.StatusStatus.DEAD, models.StatusStatus.UNKNOWN), status
                if status.status == models.StatusStatus.DELIVERED:
                    delivered[kind] = status
        time.sleep(0.1)
    assert sorted(delivered) == sorted(KINDS), f"delivered {len(delivered)}/{len(KINDS)}: {sorted(delivered)}"
    for kind, status in delivered.items():
        assert status.kind == kind and status.recipient == recipient(EXAMPLES[kind])
        assert status.result.recipient_id and status.attempt_log[0].outcome == "delivered"
    to = {m["body"]["recipient"].get("id") or f"comment:{m['body']['recipient'].get('comment_id')}"
          for m in received(sandbox)}
    assert to >= {recipient(doc) for doc in EXAMPLES.values()}

    missing = get_message.sync(client=client, job_id="no-such-job")
    assert isinstance(missing, models.Error) and missing.code == 404 and missing.message
    assert list_dead_letters.sync(client=client) == []


# --- TypeScript types, type-checked ------------------------------------------------------------------------------

def typescript_source(document: dict[str, Any]) -> str:
    """A client file: a body of every kind typed by its component and as a Message, a batch, an error, and
    a kind spelt as the component's name, which the types must refuse."""
    lines = ['import type { components, operations, paths } from "./schema";',
             'type S = components["schemas"];']
    for kind in KINDS:
        lines.append(f'const {kind}Body: S["{component_of(document, kind)}"] = {json.dumps(EXAMPLES[kind])};')
    lines += [
        f"const every: S[\"Message\"][] = [{', '.join(f'{kind}Body' for kind in KINDS)}];",
        'const batch: S["BatchRequest"] = { messages: every };',
        'type SendBody = paths["/v1/messages"]["post"]["requestBody"]["content"]["application/json"];',
        'const one: SendBody = { kind: "text", recipient: "1", text: "hi" };',
        'type Queued = operations["sendMessage"]["responses"][202];',
        'const where: Queued["headers"]["Location"] = "/v1/messages/1";',
        'const queued: Queued["content"]["application/json"] = { id: "1" };',
        'const refused: S["Error"] = { code: 422, status: "Unprocessable Entity", message: "x", '
        'errors: { json: { text: ["is required"] } } };',
        "// @ts-expect-error the kind is the wire value, not the component's name",
        'const wrong: S["TextMessage"] = { kind: "TextMessage", recipient: "1", text: "hi" };',
        "// @ts-expect-error a text message needs its text",
        'const missing: S["Message"] = { kind: "text", recipient: "1" };',
        "export const all = [every, batch, one, where, queued, refused, wrong, missing];",
    ]
    return "\n".join(lines) + "\n"


def test_typescript_types_accept_a_body_of_every_kind(document, tmp_path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the TypeScript client check needs node and npm")
    shutil.copy(TS_FIXTURE, tmp_path / "package.json")
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    install = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    bin_dir = tmp_path / "node_modules" / ".bin"
    generate = subprocess.run([str(bin_dir / "openapi-typescript"), "openapi.json", "-o", "schema.d.ts"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert generate.returncode == 0, generate.stdout + generate.stderr
    (tmp_path / "client.ts").write_text(typescript_source(document))
    check = subprocess.run([str(bin_dir / "tsc"), "--noEmit", "--strict", "--target", "es2020", "--module",
                            "commonjs", "client.ts"], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert check.returncode == 0, check.stdout + check.stderr + (tmp_path / "client.ts").read_text()
