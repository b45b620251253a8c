"""A local emulator of Meta's Instagram Send API (``POST /{version}/{account}/messages``) for the demo,
the tests and the benchmarks.

It checks what Meta checks — written from Meta's docs, independently of ``schemas/``, so a mistake shared
with igsend cannot pass both — answers with Meta's success and error bodies, enforces per-account limits
with Meta's throttling code and usage headers, and can add latency, random transient errors and scripted
faults. ``/_sandbox/*`` shows what it accepted. asyncio, so latency costs no thread per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import random
import re
import signal
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

VERSION = re.compile(r"v\d+\.\d+")
ATTACHMENT_TYPES = {"image", "video", "audio", "file", "MEDIA_SHARE", "like_heart"}
SENDER_ACTIONS = {"react", "unreact", "typing_on", "typing_off", "mark_seen"}
MAGIC_ERROR = re.compile(r"ERR_(\d+)_(\d+)")
MESSAGES = {
    2: "An unexpected error has occurred. Please retry your request later.",
    10: "(#10) This message is sent outside of allowed window.",
    100: "(#100) Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    200: "(#200) Permissions error",
    551: "(#551) This person isn't available right now.",
    613: "(#613) Calls to this api have exceeded the rate limit.",
}


@dataclass
class SandboxConfig:
    port: int = 8899
    host: str = "127.0.0.1"
    tokens: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit: float = 300.0  # text-class calls per second per account
    media_rate_limit: float = 10.0  # audio/video calls per second per account
    app_secret: str | None = None
    seed: int | None = None


class GraphError(Exception):
    def __init__(self, code: int, message: str | None = None, *, subcode: int | None = None, status: int = 400,
                 transient: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.code, self.subcode, self.status = code, subcode, status
        self.message = message or MESSAGES.get(code, f"(#{code}) error")
        self.transient, self.retry_after = transient, retry_after

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        error: dict[str, Any] = {"message": self.message, "type": "OAuthException", "code": self.code,
                                 "fbtrace_id": _trace_id()}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient:
            error["is_transient"] = True
        headers = dict(headers or {})
        if self.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return web.json_response({"error": error}, status=self.status, headers=headers)


def _trace_id() -> str:
    return base64.b64encode(os.urandom(8)).decode().rstrip("=")


class Bucket:
    """Token bucket holding one second's worth of calls."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> tuple[bool, float]:
        """(allowed, seconds until the next token)."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, 0.0
        return False, (1 - self.tokens) / self.rate

    def used_percent(self) -> int:
        return max(0, min(100, round((1 - self.tokens / self.rate) * 100)))


class Sandbox:
    def __init__(self, config: SandboxConfig):
        self.config = config
        self.random = random.Random(config.seed)
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seen_bodies: set[str] = set()
        self.stats: dict[str, Any] = {"accepted": 0, "throttled": 0, "errors": defaultdict(int), "duplicates": 0,
                                      "by_account": {}}
        self.faults: dict[str, deque] = defaultdict(deque)
        self.sticky: dict[str, dict[str, Any]] = {}
        self.buckets: dict[tuple[str, str], Bucket] = {}

    # --- parsing and validation, as Meta documents them ------------------------------------------------------

    async def _read(self, request: web.Request) -> tuple[str | None, str, dict[str, Any], str]:
        content_type = request.content_type or ""
        raw = await request.read()
        token, placement = None, ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            token, placement = header[7:].strip(), "header"
        elif "access_token" in request.query:
            token, placement = request.query["access_token"], "query"
        if content_type == "application/json":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise GraphError(100, "(#100) The request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise GraphError(100, "(#100) The request body must be an object")
        else:
            form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
            if token is None and "access_token" in form:
                token, placement = form["access_token"], "form"
            form.pop("access_token", None)
            body = {}
            for key, value in form.items():
                if key in ("recipient", "message", "payload"):
                    try:
                        body[key] = json.loads(value)
                    except ValueError:
                        raise GraphError(100, f"(#100) param {key} must be JSON") from None
                else:
                    body[key] = value.strip().strip('"').strip("\u201d\u201c")  # the seed quotes sender_action
        return token, placement, body, content_type

    def _check_token(self, token: str | None, request: web.Request) -> None:
        if not token or token not in self.config.tokens:
            raise GraphError(190)
        if self.config.app_secret:
            proof = request.query.get("appsecret_proof", "")
            expected = hmac.new(self.config.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof, expected):
                raise GraphError(100, "(#100) Invalid appsecret_proof provided in the API argument")

    @staticmethod
    def _validate(body: dict[str, Any]) -> str:
        """Returns the send class ("text" or "media") or raises Meta's error."""
        recipient = body.get("recipient")
        if not isinstance(recipient, dict) or not isinstance(recipient.get("id"), str) or not recipient["id"]:
            raise GraphError(100, "(#100) The parameter recipient is required", subcode=2018001)
        message, action = body.get("message"), body.get("sender_action")
        if (message is None) == (action is None):
            raise GraphError(100, "(#100) Exactly one of message or sender_action is required", subcode=2534015)
        if action is not None:
            if action not in SENDER_ACTIONS:
                raise GraphError(100, f"(#100) Unsupported sender_action {action!r}", subcode=2534015)
            payload = body.get("payload")
            if action in ("react", "unreact"):
                if not isinstance(payload, dict) or not payload.get("message_id"):
                    raise GraphError(100, "(#100) payload.message_id is required", subcode=2534015)
                if action == "react" and not payload.get("reaction"):
                    raise GraphError(100, "(#100) payload.reaction is required", subcode=2534015)
            return "text"
        if not isinstance(message, dict) or (("text" in message) == ("attachment" in message)):
            raise GraphError(100, "(#100) message must have exactly one of text or attachment", subcode=2534015)
        if "text" in message:
            text = message["text"]
            if not isinstance(text, str) or not text:
                raise GraphError(100, "(#100) message.text must be a non-empty string", subcode=2534015)
            if len(text.encode("utf-8")) > 1000:
                raise GraphError(100, "(#100) Length of param message[text] must be less than or equal to 1000",
                                 subcode=2534015)
            return "text"
        attachment = message["attachment"]
        kind = attachment.get("type") if isinstance(attachment, dict) else None
        if kind not in ATTACHMENT_TYPES:
            raise GraphError(100, f"(#100) Unsupported attachment type {kind!r}", subcode=2534015)
        payload = attachment.get("payload")
        if kind in ("image", "video", "audio", "file"):
            url = payload.get("url") if isinstance(payload, dict) else None
            if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
                raise GraphError(100, "(#100) payload.url must be an http(s) URL", subcode=2018047)
        elif kind == "MEDIA_SHARE" and not (isinstance(payload, dict) and payload.get("id")):
            raise GraphError(100, "(#100) payload.id is required for MEDIA_SHARE", subcode=2534015)
        return "media" if kind in ("audio", "video") else "text"

    # --- faults and limits --------------------------------------------------------------------------------------

    def _scripted(self, recipient: str) -> dict[str, Any] | None:
        if recipient in self.sticky:
            return self.sticky[recipient]
        queue = self.faults.get(recipient)
        if queue:
            return queue.popleft()
        match = MAGIC_ERROR.fullmatch(recipient)
        if match:
            code, subcode = int(match.group(1)), int(match.group(2))
            return {"code": code, "subcode": subcode or None}
        return None

    def _bucket(self, account: str, send_class: str) -> Bucket:
        rate = self.config.media_rate_limit if send_class == "media" else self.config.rate_limit
        key = (account, send_class)
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[key] = Bucket(rate)
        return bucket

    @staticmethod
    def _usage_headers(account: str, percent: int, regain_minutes: int) -> dict[str, str]:
        app = {"call_count": percent, "total_time": percent, "total_cputime": percent}
        buc = {account: [{"type": "instagram", **app, "estimated_time_to_regain_access": regain_minutes}]}
        return {"X-App-Usage": json.dumps(app), "X-Business-Use-Case-Usage": json.dumps(buc)}

    def _account_stats(self, account: str) -> dict[str, Any]:
        return self.stats["by_account"].setdefault(account, {"accepted": 0, "throttled": 0, "first_at": None,
                                                             "last_at": None})

    # --- handlers --------------------------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.StreamResponse:
        version, account_id = request.match_info["version"], request.match_info["account"]
        if not VERSION.fullmatch(version):
            return GraphError(2500, f"Unknown path components: /{version}/{account_id}/messages").response()
        response = await self._answer(request, version, account_id)
        if self.config.latency_ms:  # Meta counts a call when it arrives and answers later
            await asyncio.sleep(self.config.latency_ms / 1000)
        if response is None:  # a "hang" fault: Meta got it, the answer never arrives
            request.transport.close()
            raise asyncio.CancelledError
        return response

    async def _answer(self, request: web.Request, version: str, account_id: str) -> web.Response | None:
        headers: dict[str, str] = {}
        try:
            token, placement, body, content_type = await self._read(request)
            self._check_token(token, request)
            account = account_id if account_id != "me" else "me-" + hashlib.sha256(token.encode()).hexdigest()[:12]
            send_class = self._validate(body)
            bucket = self._bucket(account, send_class)
            allowed, wait = bucket.take()
            if not allowed:
                self.stats["throttled"] += 1
                self._account_stats(account)["throttled"] += 1
                headers = self._usage_headers(account, 100, math.ceil(wait / 60))
                raise GraphError(613, subcode=2534040, retry_after=wait)
            headers = self._usage_headers(account, bucket.used_percent(), 0)
            recipient = body["recipient"]["id"]
            fault = self._scripted(recipient)
            if fault and not fault.get("hang"):
                raise GraphError(int(fault["code"]), fault.get("message"), subcode=fault.get("subcode"),
                                 status=int(fault.get("status", 400)), transient=bool(fault.get("is_transient")),
                                 retry_after=fault.get("retry_after"))
            if not fault and self.config.error_rate and self.random.random() < self.config.error_rate:
                raise GraphError(2, status=500, transient=True)
        except GraphError as error:
            self.stats["errors"][str(error.code)] += 1
            return error.response(headers)
        answer = {"recipient_id": recipient}
        if "message" in body:
            answer["message_id"] = "aWdfZAG1faXRlbToxOklH" + uuid.uuid4().hex
        self._record(account, request.path, version, placement, content_type, body, answer, request)
        if fault and fault.get("hang"):
            return None
        return web.json_response(answer, headers=headers)

    def _record(self, account: str, path: str, version: str, placement: str, content_type: str,
                body: dict[str, Any], answer: dict[str, Any], request: web.Request) -> None:
        now = time.time()
        canonical = account + json.dumps(body, sort_keys=True, ensure_ascii=False)
        if canonical in self.seen_bodies:
            self.stats["duplicates"] += 1
        self.seen_bodies.add(canonical)
        self.stats["accepted"] += 1
        stats = self._account_stats(account)
        stats["accepted"] += 1
        stats["first_at"] = stats["first_at"] or now
        stats["last_at"] = now
        self.messages.append({
            "seq": len(self.messages) + 1, "account": account, "path": path, "version": version,
            "token_placement": placement, "content_type": content_type,
            "appsecret_proof": "appsecret_proof" in request.query, "body": body,
            "message_id": answer.get("message_id"), "recipient_id": answer["recipient_id"], "received_at": now,
        })

    async def list_messages(self, request: web.Request) -> web.Response:
        account = request.query.get("account")
        messages = [m for m in self.messages if account is None or m["account"] == account]
        return web.json_response({"messages": messages})

    async def stats_view(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "errors": dict(self.stats["errors"])})

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def add_faults(self, request: web.Request) -> web.Response:
        spec = await request.json()
        recipient = spec["recipient"]
        for fault in spec.get("faults", []):
            if fault.get("sticky"):
                self.sticky[recipient] = fault
            else:
                self.faults[recipient].append(fault)
        return web.json_response({"ok": True, "queued": len(self.faults[recipient])})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        self.sticky.clear()
        return web.json_response({"ok": True})

    async def config_view(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            for key, value in (await request.json()).items():
                if key in ("latency_ms", "error_rate", "rate_limit", "media_rate_limit"):
                    setattr(self.config, key, float(value))
        c = self.config
        return web.json_response({"latency_ms": c.latency_ms, "error_rate": c.error_rate, "rate_limit": c.rate_limit,
                                  "media_rate_limit": c.media_rate_limit, "tokens": len(c.tokens),
                                  "app_secret": bool(c.app_secret)})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def create_app(config: SandboxConfig) -> web.Application:
    sandbox = Sandbox(config)
    app = web.Application()
    app["sandbox"] = sandbox
    app.router.add_post("/{version}/{account}/messages", sandbox.send)
    app.router.add_get("/_sandbox/messages", sandbox.list_messages)
    app.router.add_delete("/_sandbox/messages", sandbox.clear)
    app.router.add_get("/_sandbox/stats", sandbox.stats_view)
    app.router.add_post("/_sandbox/faults", sandbox.add_faults)
    app.router.add_delete("/_sandbox/faults", sandbox.clear_faults)
    app.router.add_route("*", "/_sandbox/config", sandbox.config_view)
    app.router.add_get("/healthz", sandbox.healthz)
    return app


def run(config: SandboxConfig) -> None:
    def stop(*_: object) -> None:
        raise web.GracefulExit()

    signal.signal(signal.SIGTERM, stop)
    web.run_app(create_app(config), host=config.host, port=config.port, access_log=None,
                print=lambda _: print(f"sandbox listening on http://{config.host}:{config.port}", flush=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="igsend sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", action="append", default=[], help="an accepted access token (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with code 2")
    parser.add_argument("--rate-limit", type=float, default=300.0, help="text-class calls/s per account")
    parser.add_argument("--media-rate-limit", type=float, default=10.0, help="audio/video calls/s per account")
    parser.add_argument("--app-secret", default=None, help="require appsecret_proof made with this secret")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    tokens = list(args.token) + [t for t in os.environ.get("IGSEND_SANDBOX_TOKENS", "").split(",") if t]
    run(SandboxConfig(port=args.port, host=args.host, tokens=tokens, latency_ms=args.latency_ms,
                      error_rate=args.error_rate, rate_limit=args.rate_limit, media_rate_limit=args.media_rate_limit,
                      app_secret=args.app_secret, seed=args.seed))


if __name__ == "__main__":
    main()
