"""Graph error answers: Meta's wording, the exception ``type`` per login kind and the HTTP status per code."""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from aiohttp import web

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
    (100, 2534025): "(#100) This comment is invalid for a private reply.",
    (190, None): "Invalid OAuth access token - Cannot parse access token",
    (190, 463): "Error validating access token: Session has expired.",
    (190, 467): "Error validating access token: The session is invalid because the user logged out.",
    (200, None): "(#200) Permissions error",
    (200, 1545041): "(#200) This person isn't receiving messages from you right now.",
    (200, 2018028): "(#200) Cannot message users who are not admins, developers or testers of the app until "
                    "pages_messaging permission is reviewed and the app is live.",
    (200, 2534041): "(#200) The account owner has disabled access to instagram direct messages.",
    (368, None): "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    (551, None): "(#551) This person isn't available right now.",
    (613, None): "(#613) Calls to this api have exceeded the rate limit.",
    (80002, None): "(#80002) There have been too many calls to this Instagram account. "
                   "Wait a bit and try again.",
}

# Meta documents no HTTP status for throttling (third parties report 400 and 429), so the sandbox picks one per
# code and igsend must decide by code: the Graph-wide limits keep Graph's usual 400, the messaging and
# business-use-case limits answer 429. 613/2018338 (message tag misuse) is a refusal, not a limit.
GRAPH_THROTTLES = frozenset({4, 17, 32, 341})
MESSAGING_THROTTLES = frozenset({613, 80001, 80002, 80006})
THROTTLE_CODES = GRAPH_THROTTLES | MESSAGING_THROTTLES
TAG_MISUSE = (613, 2018338)


def default_status(code: int, subcode: int | None) -> int:
    """The HTTP status Meta (or, where Meta is silent, the sandbox) sends with a Graph error code."""
    if code in (1, 2):
        return 500
    if (code, subcode) == TAG_MISUSE:
        return 400
    if code in MESSAGING_THROTTLES:
        return 429
    if code == 10 or 200 <= code <= 299:  # permission family, including the 24-hour window (10/2534022)
        return 403
    return 400


def error_type(login: str, code: int, subcode: int | None) -> str:
    """graph.instagram.com (Instagram Login) names every error IGApiException; graph.facebook.com says
    OAuthException, except GraphMethodException for an unsupported method on an object (100/33)."""
    if login == "instagram":
        return "IGApiException"
    if (code, subcode) == (100, 33):
        return "GraphMethodException"
    return "OAuthException"


def error_message(code: int, subcode: int | None) -> str:
    known = ERROR_MESSAGES.get((code, subcode)) or ERROR_MESSAGES.get((code, None))
    return known or f"(#{code}) Sandbox error"


class GraphError(Exception):
    """An error answer in Meta's shape: ``{"error": {"message", "type", "code", "error_subcode", ...}}``.

    The ``type`` depends on the host, so it is chosen when the answer is written (:meth:`response`)."""

    def __init__(self, code: int, message: str | None = None, *, subcode: int | None = None,
                 status: int | None = None, transient: bool | None = None, retry_after: float | None = None,
                 user_title: str | None = None, user_msg: str | None = None):
        self.code, self.subcode = code, subcode
        self.status = status or default_status(code, subcode)
        self.message = message or error_message(code, subcode)
        # Meta's own samples of code 2 and code 4 carry is_transient: true
        self.transient = transient if transient is not None else code in (2, 4)
        self.retry_after, self.user_title, self.user_msg = retry_after, user_title, user_msg
        super().__init__(self.message)

    def body(self, login: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": error_type(login, self.code, self.subcode),
                                 "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient:
            error["is_transient"] = True
        if self.user_title:
            error["error_user_title"] = self.user_title
        if self.user_msg:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = secrets.token_urlsafe(8)
        return {"error": error}

    def response(self, login: str, headers: dict[str, str] | None = None) -> web.Response:
        headers = dict(headers or {})
        if self.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return web.json_response(self.body(login), status=self.status, headers=headers)


def invalid(explanation: str, subcode: int | None = 2534015) -> GraphError:
    """Meta's answer to bad message data: code 100, subcode 2534015 unless a closer one fits."""
    return GraphError(100, f"(#100) {explanation}", subcode=subcode)


def usage_headers(account: str, percent: int, regain_minutes: int, app_percent: int | None = None,
                  ) -> dict[str, str]:
    """Meta's X-App-Usage and X-Business-Use-Case-Usage (whole percent; regain time in minutes)."""
    app_percent = percent if app_percent is None else app_percent
    app = {"call_count": app_percent, "total_time": app_percent, "total_cputime": app_percent}
    buc = {account: [{"type": "instagram", "call_count": percent, "total_cputime": percent,
                      "total_time": percent, "estimated_time_to_regain_access": regain_minutes}]}
    return {"X-App-Usage": json.dumps(app), "X-Business-Use-Case-Usage": json.dumps(buc)}
