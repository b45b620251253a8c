"""The Attachment Upload API, ``POST /{version}/{account}/message_attachments``: what was uploaded, by numeric id."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from sandbox.errors import GraphError, usage_headers
from sandbox.state import Sandbox, request_token
from sandbox.wire import check_upload, read_request


async def upload(sandbox: Sandbox, request: web.Request, version: str | None, account_id: str) -> web.Response:
    """``POST /{version}/{account}/message_attachments`` (Instagram Messaging "Upload Media for Instagram
    Messaging"): answers ``{"attachment_id"}``. Meta documents it for Facebook Login only: the Instagram
    Login pages link to that page and no graph.instagram.com upload is documented, so an Instagram-Login
    account gets code 100. Uploads count against no send budget and take no scripted faults."""
    account = account_id
    login = sandbox.login_of(account_id, request_token(request))
    try:
        parsed = await read_request(request)
        account = sandbox.account_key(account_id, parsed.token)
        login = sandbox.login_of(account, parsed.token)
        sandbox.authenticate(parsed.token, parsed.proof)
        if login != "facebook":
            raise GraphError(100, "(#100) message_attachments is not available with Instagram Login: Meta "
                                  "documents the Attachment Upload API for Facebook Login (a Page access "
                                  "token) only")
        upload = check_upload(parsed.body, parsed.file)
    except GraphError as error:
        sandbox.errors[str(error.code)] += 1
        return error.response(login, usage_headers(account, sandbox.used_percent(account, "text"), 0))
    attachment_id = _new_attachment_id(sandbox)
    file = parsed.file
    sandbox.uploads[attachment_id] = {
        "account": account, "login": login, "path": request.path, "version": version, "type": upload.kind,
        "size": file.size if file else None, "sha256": file.sha256 if file else None,
        "filename": file.filename if file else None, "content_type": file.content_type if file else None,
        "url": upload.url, "is_reusable": upload.is_reusable, "sends": 0, "received_at": time.time()}
    return web.json_response({"attachment_id": attachment_id},
                             headers=usage_headers(account, sandbox.used_percent(account, "text"), 0))


def _new_attachment_id(sandbox: Sandbox) -> str:
    while True:  # numeric, like Meta's
        attachment_id = str(10**15 + secrets.randbelow(9 * 10**15))
        if attachment_id not in sandbox.uploads:
            return attachment_id
