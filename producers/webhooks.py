"""Meta's webhooks for Instagram, served by ``igsend api`` at ``/webhooks/instagram`` without an API key.

- ``GET``: the subscription handshake. ``hub.mode=subscribe`` with ``hub.verify_token`` equal (constant time) to
  ``IGSEND_WEBHOOK_VERIFY_TOKEN`` answers ``hub.challenge`` as text; anything else (or no token set) 403.
- ``POST``: events. ``X-Hub-Signature-256: sha256=<hex>`` must be the HMAC-SHA256 of the raw body keyed by the
  app secret: ``IGSEND_APP_SECRET``, or the ``app_secret`` / ``app_secret_env`` of an account in
  ``IGSEND_ACCOUNTS_FILE`` (only those fields are read here, never a token). No or a malformed signature: 401; a
  wrong one: 403. A verified body is stored as received in the inbox stream before the 200 (Redis failed: 503, and
  Meta retries for 36 hours); :mod:`producers.webhook_inbox` processes it after the answer. With
  ``IGSEND_GROUPS`` each entry goes to the inbox of its account's group (:mod:`producers.webhook_groups`).

Nothing of the request's headers is stored; the body is kept only until it is processed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import tomllib
from functools import lru_cache
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from igsend.core import routing
from igsend.core.groups import Group
from igsend.core.records import NotReplicated
from igsend.core.settings import get_settings
from igsend.core.store import redis_from_url
from producers.webhook_groups import RegistryUnavailable, split
from producers.webhook_inbox import Inbox, accounts_by_id, store

log = logging.getLogger("igsend.webhooks")

PATH = "/webhooks/instagram"
SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")

webhooks = Blueprint("webhooks", __name__)


def verify_token() -> str | None:
    get_settings()  # reads .env into the environment first
    return os.environ.get("IGSEND_WEBHOOK_VERIFY_TOKEN") or None


def app_secrets() -> list[bytes]:
    """Every app secret a delivery may be signed with: ``IGSEND_APP_SECRET`` and the accounts file's."""
    get_settings()
    secrets = [os.environ.get("IGSEND_APP_SECRET") or ""]
    path = os.environ.get("IGSEND_ACCOUNTS_FILE")
    if path:
        try:
            stat = os.stat(path)
        except OSError as exc:
            log.error("IGSEND_ACCOUNTS_FILE: cannot read %s: %s (its app secrets are not used)", path, exc.strerror)
        else:
            literal, variables = _file_secrets(path, stat.st_mtime_ns, stat.st_size)
            secrets += [*literal, *(os.environ.get(name) or "" for name in variables)]
    return [secret.encode() for secret in dict.fromkeys(secrets) if secret]


@lru_cache(maxsize=4)
def _file_secrets(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The accounts file's ``app_secret`` values and ``app_secret_env`` names (cached while the file is unchanged);
    every other field, tokens included, is left unread."""
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle).get("accounts", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.error("IGSEND_ACCOUNTS_FILE: cannot read %s: %s (its app secrets are not used)", path,
                  type(exc).__name__)
        return (), ()
    specs = [spec for spec in table.values() if isinstance(spec, dict)] if isinstance(table, dict) else []
    literal = tuple(str(spec["app_secret"]) for spec in specs if spec.get("app_secret"))
    variables = tuple(str(spec["app_secret_env"]) for spec in specs if spec.get("app_secret_env"))
    return literal, variables


def signature_valid(body: bytes, signature: bytes, secrets: list[bytes]) -> bool:
    """Whether ``signature`` (hex) is the HMAC-SHA256 of ``body`` under one of ``secrets``; every secret is
    compared in constant time, so the time taken tells nothing."""
    expected = [hmac.new(secret, body, hashlib.sha256).hexdigest().encode() for secret in secrets]
    return any([hmac.compare_digest(signature, digest) for digest in expected])


@lru_cache(maxsize=64)  # per Redis group
def _store_client(url: str, timeout: float) -> redis.Redis:
    """Gives up at once (no retry): Meta hears 503 within seconds and retries, rather than waiting on backoff."""
    return redis_from_url(url, socket_connect_timeout=1, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


@lru_cache(maxsize=64)  # per Redis group
def inbox(url: str) -> Inbox:
    """This process's inbox processor for the Redis at ``url`` (its thread is started on first use)."""
    return Inbox(redis_from_url(url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=15))


def _error(code: int, status: str, message: str) -> tuple[Response, int]:
    return jsonify({"code": code, "status": status, "message": message}), code


def start_inbox() -> None:
    """An API that takes webhooks (a verify token is set) processes from its start what an earlier process left.
    Called by ``create_app``, and before each request: a process forked after ``create_app`` (gunicorn
    ``--preload``) has no thread until then."""
    if verify_token():
        for group in routing.every_group():  # with IGSEND_GROUPS, one thread per group's inbox
            with routing.in_group(group):
                inbox(get_settings().redis_url).ensure_running()


def _registry(group: Group) -> dict[str, tuple[str, ...]]:
    """The group's IG account id -> account names (its workers' registry), read at once or not at all."""
    with routing.in_group(group):
        settings = get_settings()
        return accounts_by_id(_store_client(settings.redis_url, 1 + settings.replica_timeout))


webhooks.before_app_request(start_inbox)


@webhooks.route(PATH, methods=["GET"])
def handshake() -> Any:
    """Meta's verification request when a subscription is saved in the App Dashboard."""
    expected = verify_token()
    supplied = request.args.get("hub.verify_token", "")
    if not (expected and request.args.get("hub.mode") == "subscribe"
            and hmac.compare_digest(supplied.encode(), expected.encode())):
        return _error(403, "Forbidden", "hub.mode must be subscribe and hub.verify_token IGSEND_WEBHOOK_VERIFY_TOKEN")
    return Response(request.args.get("hub.challenge", ""), 200, mimetype="text/plain",
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@webhooks.route(PATH, methods=["POST"])
def receive() -> Any:
    """A delivery of events: verified against the raw body, stored, answered; processed after."""
    body = request.get_data(cache=True)  # the bytes Meta signed, before any parsing
    match = _SIGNATURE.fullmatch(request.headers.get(SIGNATURE_HEADER, "").strip())
    if not match:
        return _error(401, "Unauthorized", f"send {SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the body>")
    secrets = app_secrets()
    if not secrets:
        log.error("a webhook delivery was refused: no app secret is configured (IGSEND_APP_SECRET, or app_secret "
                  "in IGSEND_ACCOUNTS_FILE), so no signature can be verified")
        return _error(503, "Service Unavailable", "no app secret is configured to verify the signature")
    if not signature_valid(body, match[1].lower().encode(), secrets):
        return _error(403, "Forbidden", f"{SIGNATURE_HEADER} does not match the body under the app secret")
    known = routing.groups()
    parts: list[tuple[Group | None, bytes]] = [(None, body)]
    if known:  # with IGSEND_GROUPS: each entry to its account's group, where the window is checked
        try:
            parts = [(known[name], part) for name, part in split(body, known, _registry).items()]
        except RegistryUnavailable as exc:
            log.warning("a webhook delivery could not be routed (%s): answered 503, Meta retries it", exc)
            return _error(503, "Service Unavailable", f"the delivery could not be routed: {exc}; retry")
    for group, part in parts:
        refused = _store_in(group, part)
        if refused is not None:
            return refused  # the parts stored already are processed once: Meta's retry of them is dropped
    return Response("EVENT_RECEIVED", 200, mimetype="text/plain")


def _store_in(group: Group | None, body: bytes) -> tuple[Response, int] | None:
    """Store a delivery in the group's inbox (None: the process's Redis) and wake its processor; the 503 to
    answer when it could not be stored."""
    with routing.in_group(group):
        settings = get_settings()
        try:
            store(_store_client(settings.redis_url, 1 + settings.replica_timeout), body,
                  replica_acks=settings.replica_acks, replica_timeout=settings.replica_timeout)
        except (RedisError, NotReplicated) as exc:
            where = f" in group {group.name}" if group else ""
            log.warning("a webhook delivery could not be stored%s (%s: %s): answered 503, Meta retries it",
                        where, type(exc).__name__, exc)
            return _error(503, "Service Unavailable", f"the delivery could not be stored{where}: retry")
        processor = inbox(settings.redis_url)
        processor.ensure_running()
        processor.wake()
    return None
