"""The sandbox's routes (Graph paths and ``/_sandbox/*``) to each endpoint family's handlers, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal

from aiohttp import web

import sandbox.control as control
import sandbox.token_calls as token_calls
from sandbox.errors import GraphError
from sandbox.limits import LOGINS
from sandbox.lookups import read_conversations
from sandbox.messages import MESSAGE_ID_PREFIX, private_reply_recipient, send
from sandbox.state import DEFAULT_APP_VERSION, SANDBOX, Sandbox, SandboxConfig, check_settings, request_token, settings
from sandbox.tokens import DAY, LONG_LIVED
from sandbox.uploads import upload

# what others import from here, kept working where a name moved to another module
__all__ = ["DEFAULT_APP_VERSION", "MESSAGE_ID_PREFIX", "SANDBOX", "Sandbox", "SandboxConfig", "check_settings",
           "create_app", "main", "private_reply_recipient", "run", "serve"]

GRAPH_VERSION = re.compile(r"v\d+\.\d+")
NODE_ID = re.compile(r"\w+")
GRAPH_DOCS = "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
EDGES = ("messages", "message_attachments")  # the Send API and Facebook Login's Attachment Upload API


async def graph(request: web.Request) -> web.StreamResponse:
    """Every path outside ``/_sandbox/``: the Send API edge, or the Graph error Meta gives elsewhere."""
    sandbox = request.app[SANDBOX]
    segments = [s for s in request.path.split("/") if s]
    if segments[:1] == ["_sandbox"]:
        return web.json_response({"ok": False, "error": f"no sandbox endpoint {request.method} "
                                                        f"{request.path}"}, status=404)
    # Meta serves an unversioned call with the version set in the App Dashboard ("Platform Versioning")
    version = segments.pop(0) if segments and GRAPH_VERSION.fullmatch(segments[0]) else None
    if len(segments) == 2 and segments[1] in EDGES and request.method == "POST" \
            and (segments[0] == "me" or NODE_ID.fullmatch(segments[0])):
        if segments[1] == "message_attachments":
            return await upload(sandbox, request, version, segments[0])
        return await send(sandbox, request, version, segments[0])
    if request.method == "GET" and sandbox.conversations.serves(segments):
        return read_conversations(sandbox, request, segments)
    return route_error(sandbox, request, segments)


def route_error(sandbox: Sandbox, request: web.Request, segments: list[str]) -> web.Response:
    node = segments[0] if segments else ""
    login = sandbox.login_of(node, request_token(request))
    if node and node != "me" and not NODE_ID.fullmatch(node):
        error = GraphError(803, f"(#803) Some of the aliases you requested do not exist: {node}")
    elif len(segments) > 2 or (len(segments) == 2 and segments[1] not in (*EDGES, "conversations")):
        error = GraphError(2500, "Unknown path components: /" + "/".join(segments[1:]))
    else:
        error = GraphError(100, f"Unsupported {request.method.lower()} request. Object with ID '{node}' does "
                                "not exist, cannot be loaded due to missing permissions, or does not support "
                                f"this operation. {GRAPH_DOCS}", subcode=33)
    sandbox.errors[str(error.code)] += 1
    return error.response(login)


def create_app(config: SandboxConfig) -> web.Application:
    check_settings(**settings(config))
    app = web.Application()
    app[SANDBOX] = Sandbox(config)
    app.router.add_get("/_sandbox/messages", control.list_messages)
    app.router.add_delete("/_sandbox/messages", control.clear)
    app.router.add_get("/_sandbox/uploads", control.list_uploads)
    app.router.add_get("/_sandbox/private_replies", control.list_private_replies)
    app.router.add_get("/_sandbox/stats", control.stats)
    app.router.add_get("/_sandbox/faults", control.list_faults)
    app.router.add_post("/_sandbox/faults", control.add_faults)
    app.router.add_delete("/_sandbox/faults", control.clear_faults)
    app.router.add_get("/_sandbox/config", control.get_config)
    app.router.add_post("/_sandbox/config", control.set_config)
    app.router.add_get("/healthz", control.healthz)
    app.router.add_get("/_sandbox/tokens", control.list_tokens)
    app.router.add_post("/_sandbox/tokens", control.set_token)
    app.router.add_get("/refresh_access_token", token_calls.refresh_token)
    app.router.add_get("/debug_token", token_calls.debug_token)
    app.router.add_get(r"/{version:v\d+\.\d+}/debug_token", token_calls.debug_token)
    # last, so the routes above win; every other path and method gets a Graph answer, never a plain 404/405
    app.router.add_route("*", "/{path:.*}", graph)
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
        check_settings(**settings(config))
    except ValueError as error:
        parser.error(str(error))
    run(config)
