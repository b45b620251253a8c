"""The Conversations API's GETs, authenticated and fault-checked here; :mod:`sandbox.conversations` answers them."""

from __future__ import annotations

from aiohttp import web

from sandbox.errors import GraphError, usage_headers
from sandbox.state import Sandbox, request_token


def read_conversations(sandbox: Sandbox, request: web.Request, segments: list[str]) -> web.Response:
    """``GET`` of the Conversations API (:mod:`sandbox.conversations`), for the account that owns the data."""
    token = request_token(request)
    account = sandbox.conversations.owner(segments) or sandbox.account_key(segments[0], token)
    login = sandbox.login_of(account, token)
    try:
        sandbox.authenticate(token, request.query.get("appsecret_proof"))
        refused = sandbox.faults.conversations_error(account)
        if refused is not None:
            raise refused
        answer = sandbox.conversations.read(account, segments, request.query)
    except GraphError as error:
        sandbox.errors[str(error.code)] += 1
        return error.response(login, usage_headers(account, sandbox.conversations.used_percent(account), 0))
    return web.json_response(answer, headers=usage_headers(account, sandbox.conversations.used_percent(account), 0))
