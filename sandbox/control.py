"""The sandbox's own endpoints, ``/_sandbox/*`` and ``/healthz``: what it accepted, faults, settings and tokens."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sandbox.limits import BUDGETS, PRIVATE_REPLIES_PER_HOUR
from sandbox.state import SANDBOX, check_settings, settings

# No token on any of these: it is the test's view, not Meta's.


def _number(value: Any, key: str, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key} must be a number{' or null' if nullable else ''}, got {value!r}")
    return float(value)


async def list_messages(request: web.Request) -> web.Response:
    account = request.query.get("account")
    messages = [m for m in request.app[SANDBOX].messages if account is None or m["account"] == account]
    return web.json_response({"messages": messages})


async def list_uploads(request: web.Request) -> web.Response:
    account = request.query.get("account")
    uploads = {key: u for key, u in request.app[SANDBOX].uploads.items()
               if account is None or u["account"] == account}
    return web.json_response({"count": len(uploads), "uploads": uploads})


async def list_private_replies(request: web.Request) -> web.Response:
    account = request.query.get("account")
    replies = [r for r in request.app[SANDBOX].private_replies.values()
               if account is None or r["account"] == account]
    return web.json_response({"count": len(replies), "private_replies": replies})


async def clear(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset()
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    return web.json_response({"accepted": sandbox.accepted, "throttled": sandbox.throttled,
                              "errors": dict(sandbox.errors), "duplicates": sandbox.duplicates,
                              "by_account": sandbox.by_account})


async def add_faults(request: web.Request) -> web.Response:
    try:
        answer = request.app[SANDBOX].faults.add(await request.json())
    except (ValueError, TypeError) as error:
        return web.json_response({"ok": False, "error": str(error) or repr(error)}, status=400)
    return web.json_response(answer)


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].faults.describe())


async def clear_faults(request: web.Request) -> web.Response:
    query = request.query
    request.app[SANDBOX].faults.clear(recipient=query.get("recipient"), account=query.get("account"),
                                      app=query.get("app", "").lower() in ("1", "true", "yes"))
    return web.json_response({"ok": True})


async def get_config(request: web.Request) -> web.Response:
    c = request.app[SANDBOX].config
    return web.json_response({**settings(c), "budgets": BUDGETS,
                              "private_replies_per_hour": PRIVATE_REPLIES_PER_HOUR, "app_version": c.app_version,
                              "tokens": len(c.tokens), "app_secret": c.app_secret is not None,
                              "seed": c.seed})


async def set_config(request: web.Request) -> web.Response:
    """Changes only the keys given; ``rate_limit``/``media_rate_limit``/``private_reply_limit`` null = Meta's;
    ``logins`` merges ``{account: kind}`` (null removes one)."""
    config = request.app[SANDBOX].config
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object")
        updates = settings(config)
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
            logins = dict(config.logins)
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
        setattr(config, key, value)
    return await get_config(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def list_tokens(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].token_book.describe())


async def set_token(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[SANDBOX].token_book.update(await request.json()))
    except ValueError as error:
        return web.json_response({"ok": False, "error": str(error)}, status=400)
