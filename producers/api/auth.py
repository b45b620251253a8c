"""The API-key check: a bearer key from IGSEND_API_KEYS, the scope each operation needs, and each key's rate."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flask import current_app, request
from flask_smorest import abort
from redis.exceptions import RedisError

from igsend.core import routing
from igsend.core.settings import get_settings
from producers.api.errors import ErrorSchema
from producers.api.redis_check import quick_redis
from producers.api_keys import OPERATE, ApiKey, find_key, login_wait, parse_keys, retry_after
from producers.webhooks import PATH as WEBHOOK_PATH

AUTH_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="igsend"'}
#: Paths served without an API key: the health probe, the OpenAPI document, and Meta's webhooks (signed by Meta).
KEYLESS_PATHS = ("/healthz", "/openapi.json", WEBHOOK_PATH)
#: The attribute of a view function naming the scope it needs (see scope); a view without it needs operate.
SCOPE_ATTRIBUTE = "igsend_scope"


def scope(blp: Any, needed: str) -> Callable[[Any], Any]:
    """The operation of ``blp`` needs a key with the scope ``needed``: enforced by :func:`check_key`, declared in
    the OpenAPI document (``x-igsend-scope``: a bearer scheme's security requirement cannot carry scopes in OpenAPI
    3.0) with its 403 answer. The mark is an attribute of the function, which the wrappers of flask-smorest's
    decorators copy (as they copy their own documentation), so the view Flask calls carries it too."""

    def decorate(func: Any) -> Any:
        setattr(func, SCOPE_ATTRIBUTE, needed)
        func = blp.doc(**{"x-igsend-scope": needed})(func)
        return blp.alt_response(403, schema=ErrorSchema, description=f"the key lacks the scope `{needed}`")(func)
    return decorate


def _header_bytes(value: str) -> bytes:
    # WSGI servers hand header bytes over as latin-1 text: encoding back gives what the client sent. Comparing
    # bytes also keeps hmac.compare_digest from raising on non-ASCII text.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def _bearer_key(header: str, keys: list[ApiKey]) -> ApiKey | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235: the scheme is case-insensitive
        return None
    return find_key(_header_bytes(credentials.strip()), keys)


def configured_keys(api_keys: list[str] | None = None) -> list[ApiKey]:
    """The keys of ``api_keys`` (entries), default ``IGSEND_API_KEYS``; a bad entry raises ConfigurationError."""
    if api_keys is not None:
        return parse_keys(",".join(api_keys))
    return parse_keys(os.environ.get("IGSEND_API_KEYS", ""))


def check_key(keys: list[ApiKey]) -> None:
    """Refuse a request without one of ``keys`` (401), with a key that lacks the operation's scope (403), or past
    the key's rate (429)."""
    key = _bearer_key(request.headers.get("Authorization", ""), keys)
    if key is None:
        abort(401, message="send a key from IGSEND_API_KEYS as Authorization: Bearer KEY", headers=AUTH_CHALLENGE)
    view = current_app.view_functions.get(request.endpoint or "")
    needed: str = getattr(view, SCOPE_ATTRIBUTE, OPERATE)
    if not key.allows(needed):
        abort(403, message=f"this key lacks the scope {needed!r}: give it {needed} in IGSEND_API_KEYS "
                           "(KEY:scope+scope)")
    throttled(key)


def throttled(key: ApiKey) -> None:
    """Refuse (429 with Retry-After) a request past the key's @N requests per second. When Redis does not answer
    the request goes on: the limit protects Redis, and a call that needs it answers 503 anyway. With several groups
    the counts live in the first group's Redis (the API's own IGSEND_REDIS_URL need not be a Redis then)."""
    try:
        with routing.in_group(routing.every_group()[0]):
            wait = retry_after(quick_redis(get_settings().redis_url), key)
    except RedisError:
        return
    if wait:
        abort(429, message=f"this key may make {key.rate:g} requests per second: try again in {wait} s",
              headers={"Retry-After": str(wait)})


def login_throttle(address: str) -> int:
    """Seconds ``address`` must wait before another console login (0: go on, the try is counted); counted where
    :func:`throttled` counts, and not at all while that Redis does not answer."""
    try:
        with routing.in_group(routing.every_group()[0]):
            return login_wait(quick_redis(get_settings().redis_url), address)
    except RedisError:
        return 0

