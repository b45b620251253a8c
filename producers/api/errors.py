"""Error answers: the one Error shape, the limits and failures they name, and the decorators documenting them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import flask_smorest
from flask import jsonify
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from producers.api.openapi import ref

#: The largest request body. A batch of 1,000 text messages at the 1,000-byte limit, every character
#: \u-escaped as json.dumps writes non-ASCII (up to 3 bytes of JSON per byte of UTF-8), with the longest ids
#: and 200-character idempotency keys of characters JSON escapes, is 3.6 MB: every valid batch of text fits
#: (tests/test_api_hostile.py), and nothing much bigger is read into memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: The longest URL (path and query). The longest legitimate one is a 255-character job id under /v1.
MAX_URL_CHARS = 2048
REDIS_DOWN = "Redis is unavailable: nothing was done; try again shortly"
FAILED_MIDWAY = "Redis or the broker failed during the call: check the job's status, then try again"

log = logging.getLogger("igsend.api")


class ErrorSchema(Schema):
    """The one shape of every error answer."""

    code = fields.Integer(required=True, metadata={"description": "the HTTP status code"})
    status = fields.String(required=True, metadata={"description": "the HTTP status phrase"})
    message = fields.String(required=True, metadata={"description": "what went wrong, for a person"})
    errors = fields.Raw(metadata={
        "type": "object", "additionalProperties": ref("FieldErrors"),
        "description": "on 422: where (json, query) -> field -> messages"})


class Api(flask_smorest.Api):
    """flask-smorest's Api answering every HTTP error in the Error shape, always with a message."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        payload, code, headers = super().handle_http_exception(error)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            # RFC 9110 15.5.6: a 405 names the methods the resource has (werkzeug's own answer would; the Error
            # shape's must too)
            headers.setdefault("Allow", ", ".join(sorted(error.valid_methods)))
        if code == 413 and "message" not in payload:
            payload["message"] = f"the body is larger than {MAX_BODY_BYTES} bytes: split the batch"
        payload.setdefault("message", error.description or error.name)
        return payload, code, headers


def unavailable(exc: Exception) -> tuple[Any, int]:
    """The answer when Redis went away after the guard's check (or the broker refused a publish): the caller may
    retry."""
    log.warning("answering 503: %s: %s", type(exc).__name__, exc)
    return jsonify({"code": 503, "status": "Service Unavailable", "message": FAILED_MIDWAY}), 503


def fails(blp: Any, code: int, description: str, headers: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Document an error answer of a route of ``blp`` with the shared error schema."""
    return cast(Callable[[Any], Any], blp.alt_response(code, schema=ErrorSchema, description=description,
                                                       headers=headers))


def common_errors(blp: Any) -> Callable[[Any], Any]:
    """Document the errors every keyed call of ``blp`` may answer: no key, a long URL, too fast, Redis down."""

    def decorate(func: Any) -> Any:
        func = fails(blp, 401, "no valid key: send Authorization: Bearer KEY", headers={"WWW-Authenticate": {
            "description": 'Bearer realm="igsend"', "schema": {"type": "string"}}})(func)
        func = fails(blp, 414, f"the URL is longer than {MAX_URL_CHARS} characters")(func)
        func = fails(blp, 429, "the key made more requests per second than its @N allows",
                     headers={"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}})(func)
        return fails(blp, 503, "Redis or the broker did not answer, or Redis is nearly full: nothing was done; "
                               "try again", headers={"Retry-After": {
                                   "description": "seconds to wait, when Redis is nearly full",
                                   "schema": {"type": "integer"}}})(func)
    return decorate


def body_errors(blp: Any) -> Callable[[Any], Any]:
    """Document the errors of a call with a JSON body: not JSON, or too large."""

    def decorate(func: Any) -> Any:
        func = fails(blp, 400, "the body is not valid JSON, or is nested too deeply")(func)
        return fails(blp, 413, f"the body is larger than {MAX_BODY_BYTES} bytes")(func)
    return decorate
