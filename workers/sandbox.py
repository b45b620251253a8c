"""A local emulator of Meta's Instagram Send API (``POST /{version}/{account}/messages``) for the demo,
the tests and the benchmarks.

Its one job: answer like Meta would. It checks what Meta checks — written from Meta's docs
(/work/shared/seeds/instagram-send-a-message.txt, "Messenger Platform rate limits", "Graph API / Handling
Errors"), independently of ``schemas/`` so a mistake shared with igsend cannot pass both — answers with
Meta's success and error bodies, enforces per-account, per-class limits with Meta's throttling code and
usage headers, and can add latency, random transient errors and scripted faults. ``/_sandbox/*`` shows
what it accepted (never the tokens). asyncio, so latency costs no thread per request.

Run it with ``python -m workers.sandbox --port 8899 --token T``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import random
import re
import secrets
import signal
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

GRAPH_VERSION = re.compile(r"v\d+\.\d+")
ACCOUNT_ID = re.compile(r"\w+")
HTTP_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?", re.IGNORECASE)
MAGIC_ERROR = re.compile(r"ERR_(\d+)(?:_(\d+))?")  # ERR_{code}_{subcode}; subcode 0 or left out = none
MEDIA_TYPES = {"image", "video", "audio", "file"}
ATTACHMENT_TYPES = MEDIA_TYPES | {"MEDIA_SHARE", "like_heart"}
SENDER_ACTIONS = {"react", "unreact", "typing_on", "typing_off", "mark_seen"}
MESSAGING_TYPES = {"RESPONSE", "UPDATE", "MESSAGE_TAG"}
MAX_TEXT_BYTES = 1000  # "Message text must be UTF-8 and be a 1000 bytes or less" (the seed)
MESSAGE_ID_PREFIX = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlE"  # what real Instagram message ids start with
LIVE_SETTINGS = ("latency_ms", "error_rate", "rate_limit", "media_rate_limit")

# Meta's wording for the errors the sandbox can be asked to produce: (code, subcode) first, then code alone.
ERROR_MESSAGES: dict[tuple[int, int | None], str] = {
    (1, None): "An unknown error has occurred.",
    (1, 1357046): "(#1) The message was sent successfully, but the endpoint returned an error.",
    (2, None): "An unexpected error has occurred. Please retry your request later.",
    (4, None): "(#4) Application request limit reached",
    (10, None): "(#10) This message is sent outside of allowed window.",
    (10, 2018108): "(#10) This person isn't receiving messages from you right now.",
    (10, 1893063): "(#10) This account is restricted from sending messages right now.",
    (17, None): "(#17) User request limit reached",
    (32, None): "(#32) Page request limit reached",
    (100, None): "(#100) Invalid parameter",
    (100, 2018001): "(#100) No matching user found",
    (100, 2534014): "(#100) No matching user found",
    (100, 2018047): "(#100) Upload attachment failure.",
    (100, 2018294): "(#100) Timed out while fetching the video.",
    (190, None): "Invalid OAuth access token - Cannot parse access token",
    (190, 463): "Error validating access token: Session has expired.",
    (190, 467): "Error validating access token: The session is invalid because the user logged out.",
    (200, None): "(#200) Permissions error",
    (200, 2534041): "(#200) The account owner has disabled access to instagram direct messages.",
    (368, None): "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    (551, None): "(#551) This person isn't available right now.",
    (613, None): "(#613) Calls to this api have exceeded the rate limit.",
    (80002, None): "(#80002) There have been too many calls to this Instagram account. "
                   "Wait a bit and try again.",
}


@dataclass
class SandboxConfig:
    port: int = 8899
    host: str = "127.0.0.1"
    tokens: list[str] = field(default_factory=list)  # accepted access tokens
    latency_ms: float = 0.0  # added to every message POST
    error_rate: float = 0.0  # probability of a transient code-2 error
    rate_limit: float = 300.0  # text-class calls per second per account (Meta: 300/s since 2024-10)
    media_rate_limit: float = 10.0  # audio/video calls per second per account
    app_secret: str | None = None  # when set, every call needs appsecret_proof
    seed: int | None = None  # for the random error injection


class GraphError(Exception):
    """An error answer in Meta's shape: ``{"error": {"message", "type", "code", "error_subcode", ...}}``."""

    def __init__(self, code: int, message: str | None = None, *, subcode: int | None = None,
                 status: int = 400, transient: bool = False, retry_after: float | None = None,
                 error_type: str = "OAuthException"):
        self.code, self.subcode, self.status = code, subcode, status
        self.message = message or error_message(code, subcode)
        self.transient, self.retry_after, self.error_type = transient, retry_after, error_type
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient:
            error["is_transient"] = True
        error["fbtrace_id"] = secrets.token_urlsafe(8)
        return {"error": error}

    def response(self, headers: dict[str, str]) -> web.Response:
        headers = dict(headers)
        if self.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return web.json_response(self.body(), status=self.status, headers=headers)


def error_message(code: int, subcode: int | None) -> str:
    known = ERROR_MESSAGES.get((code, subcode)) or ERROR_MESSAGES.get((code, None))
    return known or f"(#{code}) Sandbox error"


def invalid(explanation: str, subcode: int | None = 2534015) -> GraphError:
    """Meta's answer to bad message data: code 100, subcode 2534015 unless a closer one fits."""
    return GraphError(100, f"(#100) {explanation}", subcode=subcode)


class Bucket:
    """Token bucket holding one second's worth of calls, refilled continuously at ``rate`` per second."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> float:
        """Spend one call; return 0 if allowed, else the seconds until one is available."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def used_percent(self) -> int:
        self._refill()
        return max(0, min(100, round((1 - self.tokens / self.rate) * 100)))


@dataclass
class ParsedRequest:
    token: str | None
    placement: str  # "header" | "query" | "form" ("form" = any body parameter)
    proof: str | None  # appsecret_proof, from the query or the body
    body: dict[str, Any]
    content_type: str


# --- reading and validating a request, as Meta documents it -------------------------------------------------


async def read_request(request: web.Request) -> ParsedRequest:
    """Token, appsecret_proof and body from a JSON, form-encoded or multipart request."""
    token, placement = None, ""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential.strip():
        token, placement = credential.strip(), "header"
    elif request.query.get("access_token"):
        token, placement = request.query["access_token"], "query"
    proof = request.query.get("appsecret_proof")

    content_type = request.content_type
    if content_type == "application/json":
        body = _json_body(await request.read())
    elif content_type.startswith("multipart/"):
        body = _form_body({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    else:  # curl --data sends x-www-form-urlencoded, and Meta reads a missing type the same way
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The request body is not valid UTF-8", subcode=None) from None
        body = _form_body({k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()})

    # Credentials in the body are taken out of it so they are never stored or shown.
    body_token, body_proof = body.pop("access_token", None), body.pop("appsecret_proof", None)
    if token is None and isinstance(body_token, str) and body_token:
        token, placement = body_token, "form"
    if proof is None and isinstance(body_proof, str):
        proof = body_proof
    return ParsedRequest(token, placement, proof, body, content_type)


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise invalid("The request body is not valid JSON", subcode=None) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object", subcode=None)
    return body


def _form_body(fields: dict[str, str]) -> dict[str, Any]:
    """Form fields hold JSON for the object parameters (the seed: ``recipient={"id":"IGSID"}``)."""
    body: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ("recipient", "message", "payload"):
            try:
                body[key] = json.loads(value)
            except ValueError:
                raise invalid(f"param {key} must be a JSON object", subcode=None) from None
        elif value.startswith('"'):  # the seed sends sender_action="unreact"
            try:
                body[key] = json.loads(value)
            except ValueError:
                body[key] = value
        else:
            body[key] = value
    return body


def validate(body: dict[str, Any]) -> str:
    """Raise Meta's code-100 error for a body Meta would refuse; return the send class, "text" or "media"."""
    recipient = body.get("recipient")
    if not isinstance(recipient, dict) or not isinstance(recipient.get("id"), str) or not recipient["id"]:
        raise invalid("param recipient[id] must be a non-empty string", subcode=2018001)
    messaging_type = body.get("messaging_type")
    if messaging_type is not None and messaging_type not in MESSAGING_TYPES:
        raise invalid(f"param messaging_type must be one of {sorted(MESSAGING_TYPES)}")
    if messaging_type == "MESSAGE_TAG" and not body.get("tag"):
        raise invalid("param tag is required when messaging_type is MESSAGE_TAG", subcode=2018338)

    message, action = body.get("message"), body.get("sender_action")
    if (message is None) == (action is None):
        raise invalid("Exactly one of param message or param sender_action is required")
    if action is not None:
        _validate_sender_action(action, body.get("payload"))
        return "text"
    if not isinstance(message, dict):
        raise invalid("param message must be an object")
    if ("text" in message) == ("attachment" in message):
        raise invalid("param message must contain exactly one of text or attachment")
    if "text" in message:
        text = message["text"]
        if not isinstance(text, str) or not text:
            raise invalid("param message[text] must be a non-empty string")
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise invalid(f"Length of param message[text] must be at most {MAX_TEXT_BYTES} UTF-8 bytes")
        return "text"
    return _validate_attachment(message["attachment"])


def _validate_sender_action(action: Any, payload: Any) -> None:
    if action not in SENDER_ACTIONS:
        raise invalid(f"param sender_action must be one of {sorted(SENDER_ACTIONS)}")
    if action in ("react", "unreact"):
        if not isinstance(payload, dict) or not isinstance(payload.get("message_id"), str) \
                or not payload["message_id"]:
            raise invalid(f"param payload[message_id] is required for sender_action {action}")
        if action == "react" and not (isinstance(payload.get("reaction"), str) and payload["reaction"]):
            raise invalid("param payload[reaction] is required for sender_action react")


def _validate_attachment(attachment: Any) -> str:
    kind = attachment.get("type") if isinstance(attachment, dict) else None
    if kind not in ATTACHMENT_TYPES:
        raise invalid(f"param message[attachment][type] must be one of {sorted(ATTACHMENT_TYPES)}, "
                      f"got {kind!r}")
    payload = attachment.get("payload")
    if kind in MEDIA_TYPES:
        url = payload.get("url") if isinstance(payload, dict) else None
        uploaded = payload.get("attachment_id") if isinstance(payload, dict) else None
        if url is None and uploaded:  # an attachment uploaded beforehand (message_attachments)
            return "media" if kind in ("audio", "video") else "text"
        if not isinstance(url, str) or not HTTP_URL.fullmatch(url):
            raise invalid(f"param message[attachment][payload][url] must be an http(s) URL for {kind}",
                          subcode=2018047)
    elif kind == "MEDIA_SHARE" and not (isinstance(payload, dict) and payload.get("id")):
        raise invalid("param message[attachment][payload][id] (a post you own) is required for MEDIA_SHARE")
    # Meta's limit for audio and video is 10/s, for everything else the text limit
    return "media" if kind in ("audio", "video") else "text"


def usage_headers(account: str, percent: int, regain_minutes: int) -> dict[str, str]:
    """Meta's X-App-Usage and X-Business-Use-Case-Usage (whole percent; regain time in minutes)."""
    app = {"call_count": percent, "total_time": percent, "total_cputime": percent}
    buc = {account: [{"type": "instagram", "call_count": percent, "total_cputime": percent,
                      "total_time": percent, "estimated_time_to_regain_access": regain_minutes}]}
    return {"X-App-Usage": json.dumps(app), "X-Business-Use-Case-Usage": json.dumps(buc)}


def check_fault(fault: Any) -> dict[str, Any]:
    """A scripted fault must be a Graph error (``code``) or a lost answer (``hang``)."""
    if not isinstance(fault, dict) or not (fault.get("hang") is True or isinstance(fault.get("code"), int)):
        raise ValueError(f"a fault needs an integer 'code' or 'hang': true, got {fault!r}")
    if not isinstance(fault.get("status", 400), int) or not 400 <= fault.get("status", 400) <= 599:
        raise ValueError(f"a fault's 'status' must be an HTTP error status, got {fault.get('status')!r}")
    if not isinstance(fault.get("retry_after", 0), int | float):
        raise ValueError(f"a fault's 'retry_after' must be seconds, got {fault.get('retry_after')!r}")
    return fault


def fault_error(fault: dict[str, Any]) -> GraphError:
    return GraphError(int(fault["code"]), fault.get("message"), subcode=fault.get("subcode") or None,
                      status=int(fault.get("status", 400)), transient=bool(fault.get("is_transient")),
                      retry_after=fault.get("retry_after"))


# --- the server's state and handlers ------------------------------------------------------------------------


class Sandbox:
    def __init__(self, config: SandboxConfig):
        self.config = config
        self.random = random.Random(config.seed)
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seen: set[str] = set()  # digests of (account, canonical body) accepted, for the duplicate count
        self.accepted = self.throttled = self.duplicates = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.by_account: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.sticky: dict[str, dict[str, Any]] = {}
        self.buckets: dict[tuple[str, str], Bucket] = {}

    def account_key(self, account_id: str, token: str | None) -> str:
        # /me is "the token's account": keyed by a digest so the token itself is never shown
        if account_id != "me":
            return account_id
        return "me-" + hashlib.sha256((token or "").encode()).hexdigest()[:12]

    def authenticate(self, token: str | None, proof: str | None) -> None:
        if not token or token not in self.config.tokens:
            raise GraphError(190)
        if self.config.app_secret:
            if not proof:
                raise GraphError(100, "(#100) API calls from the server require an appsecret_proof argument")
            expected = hmac.new(self.config.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof, expected):
                raise GraphError(100, "(#100) Invalid appsecret_proof provided in the API argument")

    def bucket(self, account: str, send_class: str) -> Bucket:
        rate = self.config.media_rate_limit if send_class == "media" else self.config.rate_limit
        bucket = self.buckets.get((account, send_class))
        if bucket is None or bucket.rate != rate:  # a live rate change starts a fresh bucket
            bucket = self.buckets[(account, send_class)] = Bucket(rate)
        return bucket

    def used_percent(self, account: str, send_class: str) -> int:
        bucket = self.buckets.get((account, send_class))  # looking must not create buckets for junk requests
        return bucket.used_percent() if bucket else 0

    def next_fault(self, recipient: str) -> dict[str, Any] | None:
        """Sticky fault, else the next scripted one (consumed), else a magic ERR_{code}_{subcode} id."""
        if recipient in self.sticky:
            return self.sticky[recipient]
        queue = self.faults.get(recipient)
        if queue:
            return queue.popleft()
        match = MAGIC_ERROR.fullmatch(recipient)
        if match:
            return {"code": int(match.group(1)), "subcode": int(match.group(2) or 0) or None}
        return None

    def account_stats(self, account: str) -> dict[str, Any]:
        return self.by_account.setdefault(account, {"accepted": 0, "throttled": 0, "first_at": None,
                                                    "last_at": None})

    async def send(self, request: web.Request) -> web.StreamResponse:
        """``POST /{version}/{account}/messages``."""
        response, hang = await self._answer(request)
        if self.config.latency_ms > 0:  # Meta has taken the call already; only the answer is late
            await asyncio.sleep(self.config.latency_ms / 1000)
        if hang and request.transport is not None:
            # "POST written, answer lost": drop the connection; aiohttp then fails to write the response
            # to the closed transport and lets it go.
            request.transport.close()
        return response

    async def _answer(self, request: web.Request) -> tuple[web.Response, bool]:
        """The response and whether to drop it (a hang fault). All state changes happen here, no awaits
        after the body is read, so concurrent requests cannot interleave."""
        version, account_id = request.match_info["version"], request.match_info["account"]
        account, send_class = account_id, "text"
        headers: dict[str, str] | None = None
        try:
            if not GRAPH_VERSION.fullmatch(version):
                raise GraphError(2500, f"Unknown path components: /{account_id}/messages")
            if account_id != "me" and not ACCOUNT_ID.fullmatch(account_id):
                raise GraphError(803, f"(#803) Some of the aliases you requested do not exist: {account_id}")
            parsed = await read_request(request)
            account = self.account_key(account_id, parsed.token)
            self.authenticate(parsed.token, parsed.proof)
            send_class = validate(parsed.body)
            wait = self.bucket(account, send_class).take()
            if wait:
                self.throttled += 1
                self.account_stats(account)["throttled"] += 1
                headers = usage_headers(account, 100, math.ceil(wait / 60))
                raise GraphError(613, subcode=2534040, retry_after=wait)
            recipient = parsed.body["recipient"]["id"]
            fault = self.next_fault(recipient)
            if fault is not None and not fault.get("hang"):
                raise fault_error(fault)
            if fault is None and self.random.random() < self.config.error_rate:
                raise GraphError(2, status=500, transient=True)
        except GraphError as error:
            self.errors[str(error.code)] += 1
            if headers is None:
                headers = usage_headers(account, self.used_percent(account, send_class), 0)
            return error.response(headers), False

        answer = {"recipient_id": recipient}
        if "message" in parsed.body:  # sender actions answer with the recipient only
            answer["message_id"] = MESSAGE_ID_PREFIX + uuid.uuid4().hex
        self._record(account, request, version, parsed, answer)
        headers = usage_headers(account, self.used_percent(account, send_class), 0)
        return web.json_response(answer, headers=headers), bool(fault and fault.get("hang"))

    def _record(self, account: str, request: web.Request, version: str, parsed: ParsedRequest,
                answer: dict[str, Any]) -> None:
        now = time.time()
        canonical = json.dumps([account, parsed.body], sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        if digest in self.seen:
            self.duplicates += 1
        self.seen.add(digest)
        self.accepted += 1
        stats = self.account_stats(account)
        stats["accepted"] += 1
        stats["first_at"] = stats["first_at"] or now
        stats["last_at"] = now
        self.messages.append({
            "seq": len(self.messages) + 1, "account": account, "path": request.path, "version": version,
            "token_placement": parsed.placement, "content_type": parsed.content_type,
            "appsecret_proof": parsed.proof is not None, "body": parsed.body,
            "message_id": answer.get("message_id"), "recipient_id": answer["recipient_id"],
            "received_at": now,
        })

    # --- introspection under /_sandbox/ (no token: it is the test's view, not Meta's) --------------------

    async def list_messages(self, request: web.Request) -> web.Response:
        account = request.query.get("account")
        messages = [m for m in self.messages if account is None or m["account"] == account]
        return web.json_response({"messages": messages})

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"accepted": self.accepted, "throttled": self.throttled,
                                  "errors": dict(self.errors), "duplicates": self.duplicates,
                                  "by_account": self.by_account})

    async def add_faults(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            recipient = spec["recipient"]
            faults = [check_fault(f) for f in spec.get("faults", [])]
            if not isinstance(recipient, str) or not recipient:
                raise ValueError("'recipient' must be a non-empty string")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            return web.json_response({"ok": False, "error": str(error) or repr(error)}, status=400)
        for fault in faults:
            if fault.get("sticky"):
                self.sticky[recipient] = fault
            else:
                self.faults[recipient].append(fault)
        return web.json_response({"ok": True, "queued": len(self.faults[recipient]),
                                  "sticky": recipient in self.sticky})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        self.sticky.clear()
        return web.json_response({"ok": True})

    async def get_config(self, request: web.Request) -> web.Response:
        c = self.config
        return web.json_response({**{key: getattr(c, key) for key in LIVE_SETTINGS}, "tokens": len(c.tokens),
                                  "app_secret": c.app_secret is not None, "seed": c.seed})

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            updates = {key: float(changes[key]) for key in LIVE_SETTINGS if key in changes}
            check_settings(**{key: updates.get(key, getattr(self.config, key)) for key in LIVE_SETTINGS})
        except (ValueError, TypeError, AttributeError) as error:
            return web.json_response({"ok": False, "error": str(error)}, status=400)
        for key, value in updates.items():
            setattr(self.config, key, value)
        return await self.get_config(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def check_settings(*, latency_ms: float, error_rate: float, rate_limit: float,
                   media_rate_limit: float) -> None:
    if latency_ms < 0 or not 0 <= error_rate <= 1 or rate_limit <= 0 or media_rate_limit <= 0:
        raise ValueError("need latency_ms >= 0, 0 <= error_rate <= 1, rate_limit > 0, media_rate_limit > 0")


def create_app(config: SandboxConfig) -> web.Application:
    check_settings(**{key: getattr(config, key) for key in LIVE_SETTINGS})
    sandbox = Sandbox(config)
    app = web.Application()
    app["sandbox"] = sandbox
    app.router.add_post("/{version}/{account}/messages", sandbox.send)
    app.router.add_get("/_sandbox/messages", sandbox.list_messages)
    app.router.add_delete("/_sandbox/messages", sandbox.clear)
    app.router.add_get("/_sandbox/stats", sandbox.stats)
    app.router.add_post("/_sandbox/faults", sandbox.add_faults)
    app.router.add_delete("/_sandbox/faults", sandbox.clear_faults)
    app.router.add_get("/_sandbox/config", sandbox.get_config)
    app.router.add_post("/_sandbox/config", sandbox.set_config)
    app.router.add_get("/healthz", sandbox.healthz)
    return app


async def serve(config: SandboxConfig) -> None:
    """Serve until SIGTERM or SIGINT, then close quickly (pending slow answers get one second)."""
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        # a large backlog: benchmarks open hundreds of keep-alive connections at once
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else config.port
        print(f"sandbox listening on http://{config.host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: SandboxConfig) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.sandbox",
                                     description="A local emulator of Meta's Instagram Send API.")
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", action="append", default=[],
                        help="an accepted access token (repeatable; also env IGSEND_SANDBOX_TOKENS, "
                             "comma separated)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of a transient error")
    parser.add_argument("--rate-limit", type=float, default=300.0, help="text-class calls/s per account")
    parser.add_argument("--media-rate-limit", type=float, default=10.0, help="audio/video calls/s/account")
    parser.add_argument("--app-secret", default=None, help="require appsecret_proof made with this secret")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random error injection")
    args = parser.parse_args(argv)
    env_tokens = [t.strip() for t in os.environ.get("IGSEND_SANDBOX_TOKENS", "").split(",") if t.strip()]
    config = SandboxConfig(port=args.port, host=args.host, tokens=[*args.token, *env_tokens],
                           latency_ms=args.latency_ms, error_rate=args.error_rate, rate_limit=args.rate_limit,
                           media_rate_limit=args.media_rate_limit, app_secret=args.app_secret, seed=args.seed)
    try:
        check_settings(**{key: getattr(config, key) for key in LIVE_SETTINGS})
    except ValueError as error:
        parser.error(str(error))
    run(config)


if __name__ == "__main__":
    main()
