"""The Send API, ``POST /{version}/{account}/messages``: budgets, scripted faults, latency, and what was accepted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from typing import Any

from aiohttp import web

from sandbox.errors import GraphError, usage_headers
from sandbox.faults import fault_error
from sandbox.state import Sandbox, request_token
from sandbox.tokens import digest as token_digest
from sandbox.wire import PRIVATE_REPLY, Checked, ParsedRequest, read_request, validate

MESSAGE_ID_PREFIX = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlE"  # what real Instagram message ids start with
INVALID_COMMENT = "INVALID"  # comment ids starting with it are "invalid for a private reply" (100/2534025)


async def send(sandbox: Sandbox, request: web.Request, version: str | None, account_id: str) -> web.StreamResponse:
    """``POST /{version}/{account}/messages``."""
    response, hang = await _answer(sandbox, request, version, account_id)
    if sandbox.config.latency_ms > 0:  # Meta has taken the call already; only the answer is late
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    if hang and request.transport is not None:
        # "POST written, answer lost": drop the connection; aiohttp then fails to write the response
        # to the closed transport and lets it go.
        request.transport.close()
    return response


async def _answer(sandbox: Sandbox, request: web.Request, version: str | None, account_id: str,
                  ) -> tuple[web.Response, bool]:
    """The response and whether to drop it (a hang fault). All state changes happen here, no awaits
    after the body is read, so concurrent requests cannot interleave."""
    account, send_class = account_id, "text"
    login = sandbox.login_of(account_id, request_token(request))
    headers: dict[str, str] | None = None
    try:
        parsed = await read_request(request)
        account = sandbox.account_key(account_id, parsed.token)
        login = sandbox.login_of(account, parsed.token)
        sandbox.authenticate(parsed.token, parsed.proof)
        app_limit = sandbox.faults.app_limit(account)
        if app_limit is not None:  # the app's budget is checked before anything about the account
            sandbox.throttled += 1
            sandbox.account_stats(account, login)["throttled"] += 1
            headers = usage_headers(account, sandbox.used_percent(account, send_class),
                                    math.ceil((app_limit.retry_after or 0) / 60), app_percent=100)
            raise app_limit
        account_error = sandbox.faults.account_error(account)
        if account_error is not None:
            raise account_error
        checked = validate(parsed.body, login)
        send_class = checked.send_class
        check_attachment_ids(sandbox, checked)
        wait = sandbox.bucket(account, login, send_class).take()
        if wait:
            sandbox.throttled += 1
            sandbox.account_stats(account, login)["throttled"] += 1
            headers = usage_headers(account, 100, math.ceil(wait / 60))
            if send_class == PRIVATE_REPLY:  # no documented subcode for this budget
                raise GraphError(613, "(#613) Calls to this api have exceeded the rate limit. (Private "
                                      f"replies: {sandbox.private_reply_budget():g} calls per hour per account)",
                                 retry_after=wait)
            raise GraphError(613, subcode=2534040, retry_after=wait)
        if checked.comment_id is not None:
            check_comment(sandbox, account, checked.comment_id)
            recipient = private_reply_recipient(checked.comment_id)
        else:
            recipient = parsed.body["recipient"]["id"]
        # faults are scripted per recipient id, or per comment id for private replies
        fault = sandbox.faults.next_for(checked.comment_id or recipient)
        if fault is not None and fault.get("drop"):  # the connection closes before Meta accepts anything
            return web.Response(status=502), True
        if fault is not None and not fault.get("hang"):
            raise fault_error(fault)
        if fault is None and sandbox.random.random() < sandbox.config.error_rate:
            raise GraphError(2, status=500, transient=True)
    except GraphError as error:
        sandbox.errors[str(error.code)] += 1
        if headers is None:
            headers = usage_headers(account, sandbox.used_percent(account, send_class), 0)
        return error.response(login, headers), False

    answer = {"recipient_id": recipient}
    if "message" in parsed.body:  # sender actions answer with the recipient only
        answer["message_id"] = MESSAGE_ID_PREFIX + uuid.uuid4().hex
    _record(sandbox, account, login, request, version, parsed, checked, answer)
    headers = usage_headers(account, sandbox.used_percent(account, send_class), 0)
    return web.json_response(answer, headers=headers), bool(fault and fault.get("hang"))


def check_attachment_ids(sandbox: Sandbox, checked: Checked) -> None:
    """An attachment id the sandbox issued must be sent as the type it was uploaded as, and one uploaded
    without is_reusable only once ("Set is_reusable to true so that the media can be used in multiple
    messages": Upload Media for Instagram Messaging). Ids from elsewhere are taken on trust."""
    for kind, attachment_id in checked.attachment_ids:
        upload = sandbox.uploads.get(attachment_id)
        if upload is None:
            continue
        if upload["type"] != kind:
            raise GraphError(100, f"(#100) Attachment {attachment_id} was uploaded as {upload['type']}, "
                                  f"not {kind}", subcode=2018047)
        if not upload["is_reusable"] and upload["sends"]:
            raise GraphError(100, f"(#100) Attachment {attachment_id} was uploaded without is_reusable "
                                  "and has been sent already", subcode=2018047)


def check_comment(sandbox: Sandbox, account: str, comment_id: str) -> None:
    """Private Replies (Instagram Messaging; Instagram Platform "Send a Private Reply to a Commenter"): a
    single message per comment. Meta documents no subcode for a second one (code 100 with text); comment
    ids starting INVALID stand for comments Meta refuses (100/2534025: too old, deleted, not yours)."""
    if comment_id.startswith(INVALID_COMMENT):
        raise GraphError(100, subcode=2534025)
    if (account, comment_id) in sandbox.private_replies:
        raise GraphError(100, f"(#100) A private reply has already been sent to comment {comment_id}: only "
                              "one private reply can be sent per comment")


def private_reply_recipient(comment_id: str) -> str:
    """Meta answers a private reply with the commenter's IGSID; the sandbox makes one up from the comment id,
    the same every time (16 digits, like an IGSID)."""
    digest = hashlib.sha256(comment_id.encode()).hexdigest()
    return str(10**15 + int(digest[:15], 16) % (9 * 10**15))


def _record(sandbox: Sandbox, account: str, login: str, request: web.Request, version: str | None,
            parsed: ParsedRequest, checked: Checked, answer: dict[str, Any]) -> None:
    now = time.time()
    canonical = json.dumps([account, parsed.body], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    if digest in sandbox.seen:
        sandbox.duplicates += 1
    sandbox.seen.add(digest)
    sandbox.accepted += 1
    stats = sandbox.account_stats(account, login)
    stats["accepted"] += 1
    stats["first_at"] = stats["first_at"] or now
    stats["last_at"] = now
    sandbox.messages.append({
        "seq": len(sandbox.messages) + 1, "account": account, "login": login, "path": request.path,
        "version": version, "served_version": version or sandbox.config.app_version,
        "token_placement": parsed.placement, "content_type": parsed.content_type,
        "appsecret_proof": parsed.proof is not None, "token_digest": token_digest(parsed.token or ""),
        "body": parsed.body,
        "kind": checked.kind, "send_class": checked.send_class,
        "message_id": answer.get("message_id"), "recipient_id": answer["recipient_id"],
        "received_at": now,
    })
    if answer.get("message_id"):
        sandbox.conversations.add(account, answer["recipient_id"], answer["message_id"], parsed.body, now)
    for _, attachment_id in checked.attachment_ids:
        if attachment_id in sandbox.uploads:
            sandbox.uploads[attachment_id]["sends"] += 1
    if checked.comment_id is not None:
        sandbox.private_replies[(account, checked.comment_id)] = {
            "account": account, "comment_id": checked.comment_id, "recipient_id": answer["recipient_id"],
            "message_id": answer["message_id"], "received_at": now}
