"""Schemathesis hooks for fuzzing ``igsend api`` (``SCHEMATHESIS_HOOKS=<this file>``; ``ops/fuzz`` and
tests/test_contract_fuzz.py set it): what the OpenAPI document cannot state, told to the generator.

The document states every rule JSON Schema can (lengths, patterns, enums, formats: :mod:`producers.api.openapi`).
Three kinds of rules it cannot, so a generated message the document calls valid may still be refused (422):

- a limit in UTF-8 bytes (``x-maxUtf8Bytes``: JSON Schema's ``maxLength`` counts characters);
- a moment relative to the time of the request (``x-maxSecondsAhead``: ``send_at`` at most a year ahead,
  ``last_user_message_at`` not in the future) and the calendar (no 31 February);
- the messaging window: a ``last_user_message_at`` more than 24 hours ago (7 days with ``HUMAN_AGENT``) is refused.

:func:`before_call` (run before every request, in every phase) takes a valid (positive) ``POST /v1/messages`` body
that breaks one of those, judged by igsend's own field types and window rule (not a copy), and makes it keep them:
an optional moment is left out, a text too long in bytes is shortened; and the rules a schema states under
``x-igsend-rules`` (one source of a media item, a button's fields of its type), which Schemathesis does not read,
are kept as :func:`keep_schema_rules` says. Nothing else is changed, and a negative case is sent as generated. A
batch needs nothing: its items are judged one by one in a 200. A valid ``?wait=`` is shortened to at most a second:
a job no worker ends holds the request that long, and 30 s per request would make the run minutes long.
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from marshmallow import ValidationError
from schemathesis import GenerationMode

from igsend.core import inbound
from producers.api.messages import MAX_WAIT
from schemas import SCHEMAS
from schemas.fields import HttpUrl, Utf8Text
from schemas.messages import (
    ELEMENT_CONTENT,
    ONE_SOURCE,
    SOURCES,
    ButtonSchema,
    ElementSchema,
    ImageItemSchema,
)

#: The longest ``?wait=`` (seconds) a generated request keeps.
MAX_FUZZ_WAIT = 1.0
#: A link that keeps every rule, for a generated one too long in bytes.
SHORT_URL = "https://example.com/a"


def _shortened(text: str, max_bytes: int) -> str:
    while len(text.encode("utf-8")) > max_bytes:
        text = text[: len(text) - 1]
    return text if text.strip() else "x"


def keep_unstated_rules(document: Any) -> Any:
    """A message document the document calls valid, made to keep the rules it cannot state (a copy)."""
    if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
        return document
    schema = SCHEMAS.get(document["kind"])
    if schema is None:
        return document
    kept = dict(document)
    for name, field in schema._declared_fields.items():
        if name not in kept or not getattr(field, "beyond_json_schema", False):
            continue
        try:
            field.deserialize(kept[name])
        except ValidationError:
            if isinstance(field, Utf8Text) and isinstance(kept[name], str):
                kept[name] = _shortened(kept[name], field.max_bytes)
            elif isinstance(field, HttpUrl):
                kept[name] = SHORT_URL
            elif not field.required:
                del kept[name]
    if "last_user_message_at" in kept and "recipient" in kept:
        message = {"kind": kept["kind"], "account": "default", "recipient": "fuzz", "tag": kept.get("tag"),
                   "last_user_message_at": SCHEMAS[kept["kind"]]._declared_fields["last_user_message_at"]
                   .deserialize(kept["last_user_message_at"])}
        if "send_at" in kept:
            message["send_at"] = schema._declared_fields["send_at"].deserialize(kept["send_at"])
        if inbound.outside_window(message, None, time.time()) is not None:
            del kept["last_user_message_at"]
    return kept


def keep_schema_rules(item: Any, schema: Any) -> Any:
    """``item`` (a document, an image, a button, an element) made to keep its schema's own rules, which the
    document states under ``x-igsend-rules`` (producers.api.openapi) where Schemathesis does not read them: one
    source of a media item, a button's fields of its type, an element with more than a title."""
    if not isinstance(item, dict):
        return item
    rules = getattr(schema, "OPENAPI_RULES", None)
    if rules is ONE_SOURCE:
        given = [source for source in SOURCES if source in item]
        item = {key: value for key, value in item.items() if key not in given[1:]}
        if not given:
            item["attachment_id"] = "1"
    elif schema is ButtonSchema and item.get("type") in ("web_url", "postback"):
        needed, refused = ("url", "payload") if item["type"] == "web_url" else ("payload", "url")
        item = {key: value for key, value in item.items() if key != refused}
        item.setdefault(needed, SHORT_URL if needed == "url" else "P")
    elif schema is ElementSchema and not set(ELEMENT_CONTENT) & item.keys():
        item = {**item, "subtitle": "s"}
    for name, nested in (("images", ImageItemSchema), ("buttons", ButtonSchema), ("elements", ElementSchema)):
        if name in item and isinstance(item[name], list) and name in schema._declared_fields:
            item = {**item, name: [keep_schema_rules(part, nested) for part in item[name]]}
    return item


def _shortened_wait(query: Any) -> Any:
    if not isinstance(query, dict) or "wait" not in query:
        return query
    try:
        wait = float(query["wait"])
    except (TypeError, ValueError):
        return query
    if MAX_FUZZ_WAIT < wait <= MAX_WAIT:  # valid, and long: shortened, still valid (an invalid one stays as it is)
        return {**query, "wait": MAX_FUZZ_WAIT}
    return query


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, kwargs: dict[str, Any]) -> None:
    case.query = _shortened_wait(case.query)
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and case.method.upper() == "POST" and case.operation.path == "/v1/messages":
        body = keep_unstated_rules(case.body)
        if isinstance(body, dict) and body.get("kind") in SCHEMAS:
            body = keep_schema_rules(body, SCHEMAS[body["kind"]])
        case.body = body
