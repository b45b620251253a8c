"""Meta's token endpoints (refresh_access_token, debug_token): authenticated here, answered by sandbox.tokens."""

from __future__ import annotations

from aiohttp import web

import sandbox.tokens as token_api
from sandbox.errors import GraphError
from sandbox.state import SANDBOX, request_token


async def refresh_token(request: web.Request) -> web.Response:
    """``GET /refresh_access_token`` (graph.instagram.com)."""
    sandbox = request.app[SANDBOX]
    token = request_token(request)
    login = sandbox.login_of(sandbox.account_key("me", token), token)
    try:
        sandbox.authenticate(token, request.query.get("appsecret_proof"))
        return await token_api.refresh(sandbox.token_book, request, token, login=login,
                                       min_age=sandbox.config.refresh_min_age, lifetime=sandbox.config.token_lifetime)
    except GraphError as error:
        sandbox.errors[str(error.code)] += 1
        return error.response("instagram")  # graph.instagram.com


async def debug_token(request: web.Request) -> web.Response:
    """``GET /{version}/debug_token`` (graph.facebook.com)."""
    sandbox = request.app[SANDBOX]
    token = request_token(request)
    login = sandbox.login_of(sandbox.account_key("me", token), token)
    try:
        sandbox.authenticate(token, request.query.get("appsecret_proof"))
        return await token_api.debug_token(sandbox.token_book, request, login=login)
    except GraphError as error:
        sandbox.errors[str(error.code)] += 1
        return error.response("facebook")  # graph.facebook.com
