"""Meta's token endpoints (refresh_access_token, debug_token): authenticated here, answered by sandbox.tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

import sandbox.tokens as token_api
from sandbox.errors import GraphError
from sandbox.state import SANDBOX, request_token


async def _authenticated(request: web.Request, host_login: str,
                         answer: Callable[[str], Awaitable[web.Response]]) -> web.Response:
    """``answer(login)`` for a caller whose token (and appsecret_proof) checks out; else Meta's error, in the shape
    of ``host_login``'s host (graph.instagram.com or graph.facebook.com)."""
    sandbox = request.app[SANDBOX]
    token = request_token(request)
    login = sandbox.login_of(sandbox.account_key("me", token), token)
    try:
        sandbox.authenticate(token, request.query.get("appsecret_proof"))
        return await answer(login)
    except GraphError as error:
        sandbox.errors[str(error.code)] += 1
        return error.response(host_login)


async def refresh_token(request: web.Request) -> web.Response:
    """``GET /refresh_access_token`` (graph.instagram.com)."""
    sandbox = request.app[SANDBOX]
    return await _authenticated(request, "instagram", lambda login: token_api.refresh(
        sandbox.token_book, request, request_token(request), login=login, min_age=sandbox.config.refresh_min_age,
        lifetime=sandbox.config.token_lifetime))


async def debug_token(request: web.Request) -> web.Response:
    """``GET /{version}/debug_token`` (graph.facebook.com)."""
    sandbox = request.app[SANDBOX]
    return await _authenticated(request, "facebook",
                                lambda login: token_api.debug_token(sandbox.token_book, request, login=login))
