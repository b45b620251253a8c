"""The HTTP producer API (flask-smorest): enqueue, poll, and work the DLQ from any language.

:func:`create_app` assembles it from this package: :mod:`~producers.api.messages` (the ``/v1`` blueprint) with
:mod:`~producers.api.dead_letters` nested in it, :mod:`~producers.api.health`, Meta's webhooks
(:mod:`producers.webhooks`) and the console (:mod:`producers.console`); the OpenAPI document
(:mod:`~producers.api.openapi`), error answers (:mod:`~producers.api.errors`) and the key check
(:mod:`~producers.api.auth`) are shared by them.

The OpenAPI document at ``/openapi.json`` is generated from the same marshmallow schemas the Python API
validates with; a refused message answers 422 with marshmallow's field messages. Keys come from
``IGSEND_API_KEYS`` (comma-separated) and are sent as ``Authorization: Bearer KEY`` (scheme in any case); each
operation needs one scope (``x-igsend-scope`` in the document; 403 naming it without), and a key with ``@N`` gets
429 with ``Retry-After`` past N requests per second (:mod:`producers.api_keys`).

Every answer that is not a success has one JSON shape, ``{"code": 404, "status": "Not Found", "message": "..."}``,
plus ``errors`` (location -> field -> messages) on a 422. Limits: a body of at most ``MAX_BODY_BYTES`` (4 MiB,
413 beyond), a URL of at most ``MAX_URL_CHARS`` (2,048 characters, 414 beyond), job ids of 1-255 printable ASCII
characters (404 otherwise). When Redis does not answer within about a second every ``/v1`` call answers 503.
"""

from __future__ import annotations

import os
import threading

from flask import Flask, request
from flask_smorest import abort
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from igsend.core import tracing
from producers.api import openapi
from producers.api.auth import KEYLESS_PATHS, check_key, configured_keys, login_throttle, throttled
from producers.api.dead_letters import dead_letters
from producers.api.errors import MAX_BODY_BYTES, MAX_URL_CHARS, Api, ErrorSchema, unavailable
from producers.api.health import health_blp
from producers.api.messages import blp
from producers.api.openapi import MAX_BATCH
from producers.console import console, init_console
from producers.webhooks import start_inbox, webhooks

__all__ = ["MAX_BATCH", "MAX_WAITING", "MAX_BODY_BYTES", "MAX_URL_CHARS", "KEYLESS_PATHS", "ErrorSchema",
           "configured_keys", "create_app", "login_throttle", "throttled"]

# Once, at import: Flask refuses to nest a blueprint into one an app already registered. Its own blueprint, with
# its routes documented under the messages tag (a tag of its own would change the document and generated clients).
blp.register_blueprint(dead_letters)


#: Requests one process lets wait at once (``GET /v1/messages/{id}?wait=N``) unless told otherwise: each holds a
#: server thread, so this many fewer than the threads serve everything else (``igsend api`` runs 32 threads).
MAX_WAITING = 24


def create_app(*, api_keys: list[str] | None = None, require_keys: bool = True,
               max_waiting: int = MAX_WAITING) -> Flask:
    """The WSGI app (``gunicorn --threads 32 'producers.api:create_app()'``). Keys default to ``IGSEND_API_KEYS``;
    ``max_waiting``: requests that may wait for a job's end at once (``?wait=``), each holding a server thread
    (keep it below gunicorn's ``--threads``); one more answers 503 with ``Retry-After`` at once."""
    keys = configured_keys(api_keys)
    if require_keys and not keys:
        raise RuntimeError("IGSEND_API_KEYS is empty: the HTTP API does not run without keys outside the demo")
    app = Flask("igsend")
    if tracing.start("igsend-api"):  # only when OTEL_* variables name an exporter; continues a caller's traceparent
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, excluded_urls="healthz,metrics,ui/static")  # type: ignore[no-untyped-call]
    app.config.update(openapi.settings(keys=bool(keys)), MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
                      WAITING_REQUESTS_MAX=max_waiting)
    app.extensions["igsend_waiting"] = threading.BoundedSemaphore(max(1, max_waiting))
    api = Api(app)
    openapi.add_components(api)  # first: the document lists them before the blueprints' schemas
    api.register_blueprint(blp)  # /v1: messages, and dead letters nested in it
    api.register_blueprint(health_blp)
    openapi.add_schema_rules(api)  # last: every schema has its component now
    app.register_blueprint(webhooks)  # Meta's, not the apps': outside the OpenAPI document
    # the operator's console (HTML, session login): keys authenticate the JSON blueprints, so CSRF skips them
    init_console(app, keys, throttle=throttled, login_throttle=login_throttle,
                 exempt=[blp, dead_letters, health_blp, webhooks],
                 links={"flower": os.environ.get("IGSEND_UI_FLOWER_URL", "").strip(),
                        "grafana": os.environ.get("IGSEND_UI_GRAFANA_URL", "").strip()})

    @app.before_request
    def _guard() -> None:
        # Then, for a routed /v1 call, the /v1 blueprint's own check: its Redis answers (producers.api.messages).
        if len(request.path) + len(request.query_string) > MAX_URL_CHARS:
            abort(414, message=f"the URL is longer than {MAX_URL_CHARS} characters")
        if request.blueprint == console.name or request.path.startswith(console.url_prefix or "/ui"):
            return  # the console: its own login page and session cookie (producers.console)
        if keys and request.path not in KEYLESS_PATHS:
            check_key(keys)

    app.register_error_handler(RedisError, unavailable)
    app.register_error_handler(BrokerError, unavailable)
    start_inbox()
    return app
