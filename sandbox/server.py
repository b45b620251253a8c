"""The sandbox's state, its HTTP handlers (Graph routes and ``/_sandbox/*``), and the command line."""

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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import sandbox.tokens as token_api
from sandbox.conversations import Conversations
from sandbox.errors import GraphError, usage_headers
from sandbox.faults import Faults, fault_error
from sandbox.limits import BUDGETS, HOUR, LOGINS, PRIVATE_REPLIES_PER_HOUR, Bucket, check_login, login_from_token
from sandbox.tokens import DAY, LONG_LIVED, TokenBook
from sandbox.wire import PRIVATE_REPLY, Checked, ParsedRequest, check_upload, read_request, validate

GRAPH_VERSION = re.compile(r"v\d+\.\d+")
NODE_ID = re.compile(r"\w+")
MESSAGE_ID_PREFIX = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlE"  # what real Instagram message ids start with
DEFAULT_APP_VERSION = "v25.0"  # what an unversioned call is served as (the App Dashboard's version at Meta)
GRAPH_DOCS = "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
EDGES = ("messages", "message_attachments")  # the Send API and Facebook Login's Attachment Upload API
INVALID_COMMENT = "INVALID"  # comment ids starting with it are "invalid for a private reply" (100/2534025)


@dataclass
class SandboxConfig:
    port: int = 8899
    host: str = "127.0.0.1"
    tokens: list[str] = field(default_factory=list)  # accepted access tokens
    latency_ms: float = 0.0  # added to every message POST
    error_rate: float = 0.0  # probability of a transient code-2 error
    rate_limit: float | None = None  # text-class calls/s for every account; None: Meta's per-login budget
    media_rate_limit: float | None = None  # audio/video calls/s for every account; None: Meta's (10/s)
    private_reply_limit: float | None = None  # private replies/hour for every account; None: Meta's (750)
    logins: dict[str, str] = field(default_factory=dict)  # account id -> login kind, over the token's kind
    default_login: str = "instagram"  # for tokens whose prefix names no login kind
    app_version: str = DEFAULT_APP_VERSION
    app_secret: str | None = None  # when set, every call needs appsecret_proof
    seed: int | None = None  # for the random error injection
    refresh_min_age: float = DAY  # seconds: a younger token is not refreshed (Meta: 24 hours); 0 for tests
    token_lifetime: float = LONG_LIVED  # seconds a refreshed token lives (Meta: 60 days)


def check_settings(*, latency_ms: float, error_rate: float, rate_limit: float | None,
                   media_rate_limit: float | None, private_reply_limit: float | None, logins: dict[str, str],
                   default_login: str, refresh_min_age: float = DAY, token_lifetime: float = LONG_LIVED) -> None:
    if refresh_min_age < 0 or token_lifetime <= 0:
        raise ValueError("need refresh_min_age >= 0 and token_lifetime > 0 (seconds)")
    if latency_ms < 0 or not 0 <= error_rate <= 1 or any(
            limit is not None and limit <= 0 for limit in (rate_limit, media_rate_limit, private_reply_limit)):
        raise ValueError("need latency_ms >= 0, 0 <= error_rate <= 1, rate_limit > 0 or null, "
                         "media_rate_limit > 0 or null, private_reply_limit > 0 or null")
    check_login(default_login, "default_login")
    for account, login in logins.items():
        check_login(login, f"login of account {account!r}")


def _settings(config: SandboxConfig) -> dict[str, Any]:
    return {"latency_ms": config.latency_ms, "error_rate": config.error_rate, "rate_limit": config.rate_limit,
            "media_rate_limit": config.media_rate_limit, "private_reply_limit": config.private_reply_limit,
            "logins": config.logins, "default_login": config.default_login,
            "refresh_min_age": config.refresh_min_age, "token_lifetime": config.token_lifetime}


def _number(value: Any, key: str, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key} must be a number{' or null' if nullable else ''}, got {value!r}")
    return float(value)


class Sandbox:
    def __init__(self, config: SandboxConfig):
        self.config = config
        self.random = random.Random(config.seed)
        self.token_book = TokenBook(config)  # outlives reset(): workers keep the tokens it issued
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seen: set[str] = set()  # digests of (account, canonical body) accepted, for the duplicate count
        self.accepted = self.throttled = self.duplicates = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.by_account: dict[str, dict[str, Any]] = {}
        self.faults = Faults()
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.uploads: dict[str, dict[str, Any]] = {}  # attachment id -> what was uploaded (never the bytes)
        self.private_replies: dict[tuple[str, str], dict[str, Any]] = {}  # (account, comment id) -> the reply
        self.conversations = Conversations()  # what was accepted, as the Conversations API shows it

    # --- who is calling -----------------------------------------------------------------------------------

    def account_key(self, account_id: str, token: str | None) -> str:
        # /me is "the token's account": keyed by a digest so the token itself is never shown
        if account_id != "me":
            return account_id
        return "me-" + hashlib.sha256((token or "").encode()).hexdigest()[:12]

    def login_of(self, account: str, token: str | None) -> str:
        """An explicit setting for the account, else the token's prefix, else the default login."""
        return self.config.logins.get(account) or login_from_token(token) or self.config.default_login

    def authenticate(self, token: str | None, proof: str | None) -> None:
        problem = self.token_book.problem(token)  # unknown, revoked or expired: 190
        if problem is not None or token is None:
            raise problem or GraphError(190)
        if self.config.app_secret:
            if not proof:
                raise GraphError(100, "API calls from the server require an appsecret_proof argument")
            expected = hmac.new(self.config.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof, expected):
                raise GraphError(100, "Invalid appsecret_proof provided in the API argument")

    # --- budgets --------------------------------------------------------------------------------------------

    def budgets(self, login: str) -> dict[str, float]:
        c = self.config
        return {"text": c.rate_limit if c.rate_limit is not None else BUDGETS[login]["text"],
                "media": c.media_rate_limit if c.media_rate_limit is not None else BUDGETS[login]["media"]}

    def private_reply_budget(self) -> float:
        limit = self.config.private_reply_limit
        return limit if limit is not None else PRIVATE_REPLIES_PER_HOUR

    def bucket(self, account: str, login: str, send_class: str) -> Bucket:
        """Per account and class: text and media per second, private replies per hour."""
        if send_class == PRIVATE_REPLY:
            rate, period = self.private_reply_budget(), HOUR
        else:
            rate, period = self.budgets(login)[send_class], 1.0
        bucket = self.buckets.get((account, send_class))
        if bucket is None or bucket.rate != rate:  # a live rate change starts a fresh bucket
            bucket = self.buckets[(account, send_class)] = Bucket(rate, period)
        return bucket

    def used_percent(self, account: str, send_class: str) -> int:
        bucket = self.buckets.get((account, send_class))  # looking must not create buckets for junk requests
        return bucket.used_percent() if bucket else 0

    def account_stats(self, account: str, login: str) -> dict[str, Any]:
        stats = self.by_account.setdefault(account, {"accepted": 0, "throttled": 0, "first_at": None,
                                                     "last_at": None})
        stats["login"], stats["budgets"] = login, self.budgets(login)
        return stats

    # --- Graph routes -------------------------------------------------------------------------------------

    async def graph(self, request: web.Request) -> web.StreamResponse:
        """Every path outside ``/_sandbox/``: the Send API edge, or the Graph error Meta gives elsewhere."""
        segments = [s for s in request.path.split("/") if s]
        if segments[:1] == ["_sandbox"]:
            return web.json_response({"ok": False, "error": f"no sandbox endpoint {request.method} "
                                                            f"{request.path}"}, status=404)
        # Meta serves an unversioned call with the version set in the App Dashboard ("Platform Versioning")
        version = segments.pop(0) if segments and GRAPH_VERSION.fullmatch(segments[0]) else None
        if len(segments) == 2 and segments[1] in EDGES and request.method == "POST" \
                and (segments[0] == "me" or NODE_ID.fullmatch(segments[0])):
            if segments[1] == "message_attachments":
                return await self.upload(request, version, segments[0])
            return await self.send(request, version, segments[0])
        if request.method == "GET" and self.conversations.serves(segments):
            return self.read_conversations(request, segments)
        return self.route_error(request, segments)

    def read_conversations(self, request: web.Request, segments: list[str]) -> web.Response:
        """``GET`` of the Conversations API (:mod:`sandbox.conversations`), for the account that owns the data."""
        token = _request_token(request)
        account = self.conversations.owner(segments) or self.account_key(segments[0], token)
        login = self.login_of(account, token)
        try:
            self.authenticate(token, request.query.get("appsecret_proof"))
            refused = self.faults.conversations_error(account)
            if refused is not None:
                raise refused
            answer = self.conversations.read(account, segments, request.query)
        except GraphError as error:
            self.errors[str(error.code)] += 1
            return error.response(login, usage_headers(account, self.conversations.used_percent(account), 0))
        return web.json_response(answer, headers=usage_headers(account, self.conversations.used_percent(account), 0))

    def route_error(self, request: web.Request, segments: list[str]) -> web.Response:
        node = segments[0] if segments else ""
        login = self.login_of(node, _request_token(request))
        if node and node != "me" and not NODE_ID.fullmatch(node):
            error = GraphError(803, f"(#803) Some of the aliases you requested do not exist: {node}")
        elif len(segments) > 2 or (len(segments) == 2 and segments[1] not in (*EDGES, "conversations")):
            error = GraphError(2500, "Unknown path components: /" + "/".join(segments[1:]))
        else:
            error = GraphError(100, f"Unsupported {request.method.lower()} request. Object with ID '{node}' does "
                                    "not exist, cannot be loaded due to missing permissions, or does not support "
                                    f"this operation. {GRAPH_DOCS}", subcode=33)
        self.errors[str(error.code)] += 1
        return error.response(login)

    async def send(self, request: web.Request, version: str | None, account_id: str) -> web.StreamResponse:
        """``POST /{version}/{account}/messages``."""
        response, hang = await self._answer(request, version, account_id)
        if self.config.latency_ms > 0:  # Meta has taken the call already; only the answer is late
            await asyncio.sleep(self.config.latency_ms / 1000)
        if hang and request.transport is not None:
            # "POST written, answer lost": drop the connection; aiohttp then fails to write the response
            # to the closed transport and lets it go.
            request.transport.close()
        return response

    async def _answer(self, request: web.Request, version: str | None, account_id: str,
                      ) -> tuple[web.Response, bool]:
        """The response and whether to drop it (a hang fault). All state changes happen here, no awaits
        after the body is read, so concurrent requests cannot interleave."""
        account, send_class = account_id, "text"
        login = self.login_of(account_id, _request_token(request))
        headers: dict[str, str] | None = None
        try:
            parsed = await read_request(request)
            account = self.account_key(account_id, parsed.token)
            login = self.login_of(account, parsed.token)
            self.authenticate(parsed.token, parsed.proof)
            app_limit = self.faults.app_limit(account)
            if app_limit is not None:  # the app's budget is checked before anything about the account
                self.throttled += 1
                self.account_stats(account, login)["throttled"] += 1
                headers = usage_headers(account, self.used_percent(account, send_class),
                                        math.ceil((app_limit.retry_after or 0) / 60), app_percent=100)
                raise app_limit
            account_error = self.faults.account_error(account)
            if account_error is not None:
                raise account_error
            checked = validate(parsed.body, login)
            send_class = checked.send_class
            self.check_attachment_ids(checked)
            wait = self.bucket(account, login, send_class).take()
            if wait:
                self.throttled += 1
                self.account_stats(account, login)["throttled"] += 1
                headers = usage_headers(account, 100, math.ceil(wait / 60))
                if send_class == PRIVATE_REPLY:  # no documented subcode for this budget
                    raise GraphError(613, "(#613) Calls to this api have exceeded the rate limit. (Private "
                                          f"replies: {self.private_reply_budget():g} calls per hour per account)",
                                     retry_after=wait)
                raise GraphError(613, subcode=2534040, retry_after=wait)
            if checked.comment_id is not None:
                self.check_comment(account, checked.comment_id)
                recipient = private_reply_recipient(checked.comment_id)
            else:
                recipient = parsed.body["recipient"]["id"]
            # faults are scripted per recipient id, or per comment id for private replies
            fault = self.faults.next_for(checked.comment_id or recipient)
            if fault is not None and fault.get("drop"):  # the connection closes before Meta accepts anything
                return web.Response(status=502), True
            if fault is not None and not fault.get("hang"):
                raise fault_error(fault)
            if fault is None and self.random.random() < self.config.error_rate:
                raise GraphError(2, status=500, transient=True)
        except GraphError as error:
            self.errors[str(error.code)] += 1
            if headers is None:
                headers = usage_headers(account, self.used_percent(account, send_class), 0)
            return error.response(login, headers), False

        answer = {"recipient_id": recipient}
        if "message" in parsed.body:  # sender actions answer with the recipient only
            answer["message_id"] = MESSAGE_ID_PREFIX + uuid.uuid4().hex
        self._record(account, login, request, version, parsed, checked, answer)
        headers = usage_headers(account, self.used_percent(account, send_class), 0)
        return web.json_response(answer, headers=headers), bool(fault and fault.get("hang"))

    def check_attachment_ids(self, checked: Checked) -> None:
        """An attachment id the sandbox issued must be sent as the type it was uploaded as, and one uploaded
        without is_reusable only once ("Set is_reusable to true so that the media can be used in multiple
        messages": Upload Media for Instagram Messaging). Ids from elsewhere are taken on trust."""
        for kind, attachment_id in checked.attachment_ids:
            upload = self.uploads.get(attachment_id)
            if upload is None:
                continue
            if upload["type"] != kind:
                raise GraphError(100, f"(#100) Attachment {attachment_id} was uploaded as {upload['type']}, "
                                      f"not {kind}", subcode=2018047)
            if not upload["is_reusable"] and upload["sends"]:
                raise GraphError(100, f"(#100) Attachment {attachment_id} was uploaded without is_reusable "
                                      "and has been sent already", subcode=2018047)

    def check_comment(self, account: str, comment_id: str) -> None:
        """Private Replies (Instagram Messaging; Instagram Platform "Send a Private Reply to a Commenter"): a
        single message per comment. Meta documents no subcode for a second one (code 100 with text); comment
        ids starting INVALID stand for comments Meta refuses (100/2534025: too old, deleted, not yours)."""
        if comment_id.startswith(INVALID_COMMENT):
            raise GraphError(100, subcode=2534025)
        if (account, comment_id) in self.private_replies:
            raise GraphError(100, f"(#100) A private reply has already been sent to comment {comment_id}: only "
                                  "one private reply can be sent per comment")

    def _record(self, account: str, login: str, request: web.Request, version: str | None,
                parsed: ParsedRequest, checked: Checked, answer: dict[str, Any]) -> None:
        now = time.time()
        canonical = json.dumps([account, parsed.body], sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        if digest in self.seen:
            self.duplicates += 1
        self.seen.add(digest)
        self.accepted += 1
        stats = self.account_stats(account, login)
        stats["accepted"] += 1
        stats["first_at"] = stats["first_at"] or now
        stats["last_at"] = now
        self.messages.append({
            "seq": len(self.messages) + 1, "account": account, "login": login, "path": request.path,
            "version": version, "served_version": version or self.config.app_version,
            "token_placement": parsed.placement, "content_type": parsed.content_type,
            "appsecret_proof": parsed.proof is not None, "token_digest": token_api.digest(parsed.token or ""),
            "body": parsed.body,
            "kind": checked.kind, "send_class": checked.send_class,
            "message_id": answer.get("message_id"), "recipient_id": answer["recipient_id"],
            "received_at": now,
        })
        if answer.get("message_id"):
            self.conversations.add(account, answer["recipient_id"], answer["message_id"], parsed.body, now)
        for _, attachment_id in checked.attachment_ids:
            if attachment_id in self.uploads:
                self.uploads[attachment_id]["sends"] += 1
        if checked.comment_id is not None:
            self.private_replies[(account, checked.comment_id)] = {
                "account": account, "comment_id": checked.comment_id, "recipient_id": answer["recipient_id"],
                "message_id": answer["message_id"], "received_at": now}

    # --- attachment upload (Facebook Login) ---------------------------------------------------------------

    async def upload(self, request: web.Request, version: str | None, account_id: str) -> web.Response:
        """``POST /{version}/{account}/message_attachments`` (Instagram Messaging "Upload Media for Instagram
        Messaging"): answers ``{"attachment_id"}``. Meta documents it for Facebook Login only: the Instagram
        Login pages link to that page and no graph.instagram.com upload is documented, so an Instagram-Login
        account gets code 100. Uploads count against no send budget and take no scripted faults."""
        account = account_id
        login = self.login_of(account_id, _request_token(request))
        try:
            parsed = await read_request(request)
            account = self.account_key(account_id, parsed.token)
            login = self.login_of(account, parsed.token)
            self.authenticate(parsed.token, parsed.proof)
            if login != "facebook":
                raise GraphError(100, "(#100) message_attachments is not available with Instagram Login: Meta "
                                      "documents the Attachment Upload API for Facebook Login (a Page access "
                                      "token) only")
            upload = check_upload(parsed.body, parsed.file)
        except GraphError as error:
            self.errors[str(error.code)] += 1
            return error.response(login, usage_headers(account, self.used_percent(account, "text"), 0))
        attachment_id = self._new_attachment_id()
        file = parsed.file
        self.uploads[attachment_id] = {
            "account": account, "login": login, "path": request.path, "version": version, "type": upload.kind,
            "size": file.size if file else None, "sha256": file.sha256 if file else None,
            "filename": file.filename if file else None, "content_type": file.content_type if file else None,
            "url": upload.url, "is_reusable": upload.is_reusable, "sends": 0, "received_at": time.time()}
        return web.json_response({"attachment_id": attachment_id},
                                 headers=usage_headers(account, self.used_percent(account, "text"), 0))

    def _new_attachment_id(self) -> str:
        while True:  # numeric, like Meta's
            attachment_id = str(10**15 + secrets.randbelow(9 * 10**15))
            if attachment_id not in self.uploads:
                return attachment_id

    # --- introspection under /_sandbox/ (no token: it is the test's view, not Meta's) --------------------

    async def list_messages(self, request: web.Request) -> web.Response:
        account = request.query.get("account")
        messages = [m for m in self.messages if account is None or m["account"] == account]
        return web.json_response({"messages": messages})

    async def list_uploads(self, request: web.Request) -> web.Response:
        account = request.query.get("account")
        uploads = {key: u for key, u in self.uploads.items() if account is None or u["account"] == account}
        return web.json_response({"count": len(uploads), "uploads": uploads})

    async def list_private_replies(self, request: web.Request) -> web.Response:
        account = request.query.get("account")
        replies = [r for r in self.private_replies.values() if account is None or r["account"] == account]
        return web.json_response({"count": len(replies), "private_replies": replies})

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"accepted": self.accepted, "throttled": self.throttled,
                                  "errors": dict(self.errors), "duplicates": self.duplicates,
                                  "by_account": self.by_account})

    async def add_faults(self, request: web.Request) -> web.Response:
        try:
            answer = self.faults.add(await request.json())
        except (ValueError, TypeError) as error:
            return web.json_response({"ok": False, "error": str(error) or repr(error)}, status=400)
        return web.json_response(answer)

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.describe())

    async def clear_faults(self, request: web.Request) -> web.Response:
        query = request.query
        self.faults.clear(recipient=query.get("recipient"), account=query.get("account"),
                          app=query.get("app", "").lower() in ("1", "true", "yes"))
        return web.json_response({"ok": True})

    async def get_config(self, request: web.Request) -> web.Response:
        c = self.config
        return web.json_response({**_settings(c), "budgets": BUDGETS,
                                  "private_replies_per_hour": PRIVATE_REPLIES_PER_HOUR, "app_version": c.app_version,
                                  "tokens": len(c.tokens), "app_secret": c.app_secret is not None,
                                  "seed": c.seed})

    async def set_config(self, request: web.Request) -> web.Response:
        """Changes only the keys given; ``rate_limit``/``media_rate_limit``/``private_reply_limit`` null = Meta's;
        ``logins`` merges ``{account: kind}`` (null removes one)."""
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            updates = _settings(self.config)
            for key in ("latency_ms", "error_rate", "refresh_min_age", "token_lifetime"):
                if key in changes:
                    updates[key] = _number(changes[key], key, nullable=False)
            for key in ("rate_limit", "media_rate_limit", "private_reply_limit"):
                if key in changes:
                    updates[key] = _number(changes[key], key, nullable=True)
            if "default_login" in changes:
                updates["default_login"] = changes["default_login"]
            if "logins" in changes:
                if not isinstance(changes["logins"], dict):
                    raise ValueError("logins must be an object {account id: 'instagram' | 'facebook' | null}")
                logins = dict(self.config.logins)
                for account, login in changes["logins"].items():
                    if login is None:
                        logins.pop(account, None)
                    else:
                        logins[account] = login
                updates["logins"] = logins
            check_settings(**updates)
        except (ValueError, TypeError) as error:
            return web.json_response({"ok": False, "error": str(error)}, status=400)
        for key, value in updates.items():
            setattr(self.config, key, value)
        return await self.get_config(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # --- tokens (sandbox.tokens) -------------------------------------------------------------------------

    async def refresh_token(self, request: web.Request) -> web.Response:
        token = _request_token(request)
        login = self.login_of(self.account_key("me", token), token)
        try:
            self.authenticate(token, request.query.get("appsecret_proof"))
            return await token_api.refresh(self.token_book, request, token, login=login,
                                           min_age=self.config.refresh_min_age, lifetime=self.config.token_lifetime)
        except GraphError as error:
            self.errors[str(error.code)] += 1
            return error.response("instagram")  # graph.instagram.com

    async def debug_token(self, request: web.Request) -> web.Response:
        token = _request_token(request)
        login = self.login_of(self.account_key("me", token), token)
        try:
            self.authenticate(token, request.query.get("appsecret_proof"))
            return await token_api.debug_token(self.token_book, request, login=login)
        except GraphError as error:
            self.errors[str(error.code)] += 1
            return error.response("facebook")  # graph.facebook.com

    async def list_tokens(self, request: web.Request) -> web.Response:
        return web.json_response(self.token_book.describe())

    async def set_token(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.token_book.update(await request.json()))
        except ValueError as error:
            return web.json_response({"ok": False, "error": str(error)}, status=400)


SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox", Sandbox)


def private_reply_recipient(comment_id: str) -> str:
    """Meta answers a private reply with the commenter's IGSID; the sandbox makes one up from the comment id,
    the same every time (16 digits, like an IGSID)."""
    digest = hashlib.sha256(comment_id.encode()).hexdigest()
    return str(10**15 + int(digest[:15], 16) % (9 * 10**15))


def _request_token(request: web.Request) -> str | None:
    """The token from the header or the query, without reading the body (for choosing the error type)."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential.strip():
        return credential.strip()
    return request.query.get("access_token")


def create_app(config: SandboxConfig) -> web.Application:
    check_settings(**_settings(config))
    sandbox = Sandbox(config)
    app = web.Application()
    app[SANDBOX] = sandbox
    app.router.add_get("/_sandbox/messages", sandbox.list_messages)
    app.router.add_delete("/_sandbox/messages", sandbox.clear)
    app.router.add_get("/_sandbox/uploads", sandbox.list_uploads)
    app.router.add_get("/_sandbox/private_replies", sandbox.list_private_replies)
    app.router.add_get("/_sandbox/stats", sandbox.stats)
    app.router.add_get("/_sandbox/faults", sandbox.list_faults)
    app.router.add_post("/_sandbox/faults", sandbox.add_faults)
    app.router.add_delete("/_sandbox/faults", sandbox.clear_faults)
    app.router.add_get("/_sandbox/config", sandbox.get_config)
    app.router.add_post("/_sandbox/config", sandbox.set_config)
    app.router.add_get("/healthz", sandbox.healthz)
    app.router.add_get("/_sandbox/tokens", sandbox.list_tokens)
    app.router.add_post("/_sandbox/tokens", sandbox.set_token)
    app.router.add_get("/refresh_access_token", sandbox.refresh_token)
    app.router.add_get("/debug_token", sandbox.debug_token)
    app.router.add_get(r"/{version:v\d+\.\d+}/debug_token", sandbox.debug_token)
    # last, so the routes above win; every other path and method gets a Graph answer, never a plain 404/405
    app.router.add_route("*", "/{path:.*}", sandbox.graph)
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


def _login_setting(value: str) -> tuple[str, str]:
    account, sep, login = value.partition("=")
    if not sep or not account or login not in LOGINS:
        raise argparse.ArgumentTypeError(f"expected ACCOUNT=instagram or ACCOUNT=facebook, got {value!r}")
    return account, login


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="A local emulator of Meta's Instagram Send API.")
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", action="append", default=[],
                        help="an accepted access token (repeatable; also env IGSEND_SANDBOX_TOKENS, "
                             "comma separated)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of a transient error")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="text-class calls/s for every account (default: Meta's, 100 Instagram Login, "
                             "300 Facebook Login)")
    parser.add_argument("--media-rate-limit", type=float, default=None,
                        help="audio/video calls/s for every account (default: Meta's, 10)")
    parser.add_argument("--private-reply-limit", type=float, default=None,
                        help="private replies per hour for every account (default: Meta's, 750)")
    parser.add_argument("--login", action="append", default=[], type=_login_setting, metavar="ACCOUNT=KIND",
                        help="the login kind of an account (instagram or facebook), over its token's prefix; "
                             "repeatable")
    parser.add_argument("--default-login", choices=LOGINS, default="instagram",
                        help="login kind for tokens starting neither IG nor EAA")
    parser.add_argument("--app-secret", default=None, help="require appsecret_proof made with this secret")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random error injection")
    parser.add_argument("--refresh-min-age", type=float, default=DAY,
                        help="seconds a token must have lived before refresh_access_token refreshes it "
                             "(default: Meta's 24 hours)")
    parser.add_argument("--token-lifetime", type=float, default=LONG_LIVED,
                        help="seconds a refreshed token lives (default: Meta's 60 days)")
    args = parser.parse_args(argv)
    env_tokens = [t.strip() for t in os.environ.get("IGSEND_SANDBOX_TOKENS", "").split(",") if t.strip()]
    config = SandboxConfig(port=args.port, host=args.host, tokens=[*args.token, *env_tokens],
                           latency_ms=args.latency_ms, error_rate=args.error_rate, rate_limit=args.rate_limit,
                           media_rate_limit=args.media_rate_limit, private_reply_limit=args.private_reply_limit,
                           logins=dict(args.login),
                           default_login=args.default_login, app_secret=args.app_secret, seed=args.seed,
                           refresh_min_age=args.refresh_min_age, token_lifetime=args.token_lifetime)
    try:
        check_settings(**_settings(config))
    except ValueError as error:
        parser.error(str(error))
    run(config)
