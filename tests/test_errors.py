"""The error taxonomy, row by row from the error table of docs/delivery.md ("Errors: one
taxonomy, decided by Graph code").

"Graph API / Handling Errors" and "Messenger Platform / Common Error Codes" (2026): the class is decided by
the Graph code (and subcode), never by the HTTP status alone. Transport failures are classified by whether the
request can have reached Meta.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ProtocolError, ProxyError

from workers.accounts import Account
from workers.errors import Outcome, Verdict, classify_answer, classify_error, classify_transport
from workers.graph import GraphClient

T, X, P, B, U = Outcome.TRANSIENT, Outcome.THROTTLED, Outcome.PERMANENT, Outcome.ACCOUNT_BROKEN, Outcome.UNKNOWN
D = Outcome.DELIVERED

THROTTLE_CODES = [4, 17, 32, 341, 613, 80001, 80002, 80006]
INVALID_DATA_SUBCODES = [2018001, 2534014, 2534015, 2018008, 2018047, 2018074, 2018109, 2018294, 2534025]
TOKEN_SUBCODES = [463, 467, 458, 459, 460, 464, 492]


def graph_error(code: Any, subcode: Any = None, *, is_transient: bool | None = None,
                message: str = "An error occurred", fbtrace_id: str = "AbCdEfGhIjK") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": fbtrace_id}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    return {"error": error}


# (HTTP status, code, subcode, is_transient, expected outcome)
ROWS: list[tuple[int, int, int | None, bool | None, Outcome]] = [
    # 1 (1357046): Meta says it was sent but answers with an error -> never resend blindly
    (500, 1, 1357046, None, U),
    (400, 1, 1357046, True, U),
    # 1, 2: unknown / temporary
    (500, 1, None, True, T),
    (400, 1, None, None, T),
    (503, 2, None, True, T),
    (400, 2, None, None, T),
    # throttling: decided by code whatever the HTTP status
    *[(status, code, None, None, X) for code in THROTTLE_CODES for status in (400, 429)],
    (400, 613, 2534040, None, X),  # Instagram send limit
    (429, 613, 2534040, True, X),
    (400, 4, None, True, X),
    # 613 (2018338): misuse of message tags
    (400, 613, 2018338, None, P),
    (429, 613, 2018338, None, P),
    # 100: no matching user / invalid message data, media fetch, upload, id, size, timeout, bad comment
    *[(400, 100, subcode, None, P) for subcode in INVALID_DATA_SUBCODES],
    (400, 100, None, None, P),
    (400, 100, 2018999, None, P),  # "others"
    (400, 100, 2018001, True, P),  # is_transient does not override a permanent code
    # 10: outside the allowed window / person can't receive messages now
    (400, 10, 2534022, None, P),
    (400, 10, 2018278, None, P),
    (400, 10, 2018108, None, P),
    # 551 and 551 (1545041)
    (400, 551, None, None, P),
    (400, 551, 1545041, None, P),
    # 200 (2534041): the account owner disabled message access
    (403, 200, 2534041, None, B),
    (400, 200, 2534041, None, B),
    # refusals about one recipient: that message only, never the account (issue 10)
    (400, 200, 1545041, None, P),
    (403, 200, 1545041, None, P),
    (400, 200, 2018028, None, P),
    (403, 10, 2018065, None, P),
    # 10 and 200-299 (others): permission missing, or a refusal about one person -> the message only; the
    # circuit breaker holds the account when the same error repeats across recipients (test_breaker.py)
    (400, 10, None, None, P),
    (400, 200, None, None, P),
    (400, 230, None, None, P),
    (400, 250, 1234, None, P),
    (400, 299, None, None, P),
    # 190: token invalid
    *[(400, 190, subcode, None, B) for subcode in TOKEN_SUBCODES],
    (401, 190, None, None, B),
    # 368, 10 (1893063): blocked / restricted for policy
    (400, 368, None, None, B),
    (400, 368, 1390008, None, B),
    (400, 10, 1893063, None, B),
    # 2534068: multi-image not enabled (documented as a bare subcode)
    (400, 100, 2534068, None, P),
    (400, 10, 2534068, None, P),  # would be account_broken by code 10 alone
    (400, 2534068, None, None, P),
]


@pytest.mark.parametrize(("status", "code", "subcode", "is_transient", "expected"), ROWS,
                         ids=[f"{s}-{c}-{sc}-{t}" for s, c, sc, t, _ in ROWS])
def test_documented_codes(status: int, code: int, subcode: int | None, is_transient: bool | None,
                          expected: Outcome) -> None:
    verdict = classify_error(status, graph_error(code, subcode, is_transient=is_transient))
    assert verdict.outcome is expected
    assert verdict.code == code
    assert verdict.subcode == subcode
    assert verdict.http_status == status
    # unrecognised errors and the "wait and retry" codes 1 and 2 get the small attempt budget
    assert verdict.bounded is (expected is T and code in (1, 2))
    assert verdict.reason


@pytest.mark.parametrize(("code", "subcode", "suspect"), [
    (100, None, True), (10, None, True), (200, None, True), (230, None, True), (250, 1234, True),
    (200, 1545041, False), (200, 2018028, False), (10, 2018065, False), (10, 2534022, False), (551, None, False),
    (100, 2018001, False), (100, 2534015, False),
])
def test_errors_that_may_be_the_accounts_setup_are_suspect(code: int, subcode: int | None, suspect: bool) -> None:
    # Suspect errors count toward the account's circuit breaker; per-recipient refusals never do.
    assert classify_error(400, graph_error(code, subcode)).suspect is suspect


@pytest.mark.parametrize(("code", "message", "outcome", "suspect", "reason"), [
    (2, "An unexpected error has occurred. Please retry your request later.", T, False, "temporary service error"),
    (1, "An unknown error occurred", T, False, "unknown error, retry later"),
    (2, "The user has blocked the business from messaging them", P, False, "the person blocked the account"),
    (1, "Permissions error: the app does not have permission for this action", P, True, "permission error"),
    (2, "(#2) Service temporarily unavailable. Requires instagram_manage_messages permission", P, True,
     "permission error"),
    (2, "This person BLOCKED you", P, False, "the person blocked the account"),  # whatever the letter case
])
def test_codes_1_and_2_read_the_message(code: int, message: str, outcome: Outcome, suspect: bool,
                                        reason: str) -> None:
    verdict = classify_error(400, graph_error(code, message=message))
    assert (verdict.outcome, verdict.suspect, verdict.reason) == (outcome, suspect, reason)
    assert verdict.bounded is (outcome is T)  # "wait and retry": a few attempts; a refusal is not retried


@pytest.mark.parametrize("code", [1, 2])
def test_codes_1_and_2_without_a_message_wait_and_retry(code: int) -> None:
    verdict = classify_error(500, {"error": {"code": code}})
    assert (verdict.outcome, verdict.bounded, verdict.suspect, verdict.message) == (T, True, False, None)


@pytest.mark.parametrize("body", [None, {}, {"ok": True}, {"message_id": "m"}, {"recipient_id": ""}, "", [1]])
@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_without_recipient_id_is_an_unknown_outcome_never_a_retry(status: int, body: Any) -> None:
    verdict = classify_answer(status, body)
    assert verdict.outcome is U
    assert "may have sent" in verdict.reason


def test_2xx_with_recipient_id_is_delivered() -> None:
    assert classify_answer(200, {"recipient_id": "1", "message_id": "m"}).outcome is Outcome.DELIVERED


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308, 399])
def test_a_redirect_is_its_own_class_and_holds_the_account(status: int) -> None:
    verdict = classify_answer(status, None, location="http://elsewhere.example/v25.0/me/messages")
    assert verdict.outcome is B and verdict.error()["class"] == "redirect"
    assert verdict.http_status == status
    assert verdict.reason == (f"the Graph API answered HTTP {status} (a redirect to "
                              "http://elsewhere.example/v25.0/me/messages); igsend never follows redirects on a POST: "
                              "check the account's graph_url")


def test_a_redirect_without_a_location_says_so() -> None:
    verdict = classify_answer(302, {"recipient_id": "1"})
    assert (verdict.outcome, verdict.label, verdict.http_status) == (B, "redirect", 302)
    assert verdict.reason == ("the Graph API answered HTTP 302 (a redirect); igsend never follows redirects on a "
                              "POST: check the account's graph_url")


def test_a_redirects_location_is_cut_at_200_characters() -> None:
    location = "http://elsewhere.example/" + "x" * 300
    reason = classify_answer(301, None, location=location).reason
    assert f"(a redirect to {location[:200]});" in reason


@pytest.mark.parametrize(("status", "outcome", "label"), [(199, T, None), (200, D, None), (299, D, None),
                                                          (300, B, "redirect"), (399, B, "redirect"), (400, T, None)])
def test_the_2xx_and_3xx_boundaries(status: int, outcome: Outcome, label: str | None) -> None:
    # the same body at each edge: a 300 answer is a redirect, not a delivery, and 400 is an error, not a redirect
    verdict = classify_answer(status, {"recipient_id": "1", "message_id": "m"})
    assert (verdict.outcome, verdict.label, verdict.http_status) == (outcome, label, status)


@pytest.mark.parametrize("status", [200, 201])
def test_a_2xx_carrying_a_graph_error_is_that_error(status: int) -> None:
    verdict = classify_answer(status, graph_error(190, 463))
    assert (verdict.outcome, verdict.code, verdict.subcode, verdict.http_status) == (B, 190, 463, status)


def test_a_4xx_answer_is_classified_by_its_graph_error() -> None:
    verdict = classify_answer(400, graph_error(100, 2018001, message="No matching user found"))
    assert verdict == Verdict(P, "no matching user", 400, 100, 2018001, "No matching user found", "AbCdEfGhIjK")


# (HTTP status, body, the verdict an operator reads in the job record: outcome, reason, attempt budget bounded)
PLAIN_ANSWERS: list[tuple[int, Any, Outcome, str, bool]] = [
    (200, {"recipient_id": "1", "message_id": "m"}, D, "accepted by Meta", False),
    (201, {"recipient_id": "1"}, D, "accepted by Meta", False),
    (200, {"message_id": "m"}, U, "HTTP 200 without a recipient_id: Meta may have sent it; not resent", False),
    (204, None, U, "HTTP 204 without a recipient_id: Meta may have sent it; not resent", False),
    (429, "Too Many Requests", X, "HTTP 429 without a Graph error", False),
    (500, None, T, "HTTP 500 without a Graph error", False),
    (503, {"error": "upstream"}, T, "HTTP 503 without a Graph error", False),
    (404, "<html>Not Found</html>", T, "HTTP 404 with an unexpected body", True),
    (499, {}, T, "HTTP 499 with an unexpected body", True),
]


@pytest.mark.parametrize(("status", "body", "outcome", "reason", "bounded"), PLAIN_ANSWERS,
                         ids=[f"{status}-{outcome}" for status, _, outcome, _, _ in PLAIN_ANSWERS])
def test_answers_without_a_graph_error_say_why_and_keep_the_status(status: int, body: Any, outcome: Outcome,
                                                                   reason: str, bounded: bool) -> None:
    assert classify_answer(status, body) == Verdict(outcome, reason, status, bounded=bounded)


@pytest.mark.parametrize("body", [None, "", "Too Many Requests", {}])
def test_429_without_a_graph_body_is_throttling(body: Any) -> None:
    verdict = classify_answer(429, body)
    assert verdict.outcome is X and not verdict.app_wide


def test_code_4_is_app_wide_and_other_throttles_are_not() -> None:
    assert classify_error(400, graph_error(4)).app_wide
    assert not classify_error(400, graph_error(80002)).app_wide


def test_scrubbed_blanks_configured_and_token_shaped_secrets() -> None:
    configured = "plain-configured-secret-99"
    shaped = "EAA" + "Z" * 40
    verdict = classify_error(400, graph_error(190, message=f"token {configured} and {shaped} invalid"))
    clean = verdict.scrubbed(["", configured]).error()["message"]
    assert clean == "token [redacted] and [redacted] invalid"


def test_scrubbed_keeps_a_verdict_with_nothing_to_blank_as_it_is() -> None:
    verdict = classify_error(400, graph_error(100, message="No matching user found"))
    assert verdict.scrubbed(["plain-configured-secret-99"]) is verdict
    bare = classify_error(502, None)
    assert bare.scrubbed(["plain-configured-secret-99"]) is bare


@pytest.mark.parametrize(("status", "code", "is_transient", "reason", "bounded"), [
    (400, 77777, True, "Meta marked the error transient", False),
    (500, 77777, None, "Meta marked the error transient", False),  # a 5xx is Meta's trouble, not the message's
    (503, 77777, False, "Meta marked the error transient", False),
    (499, 77777, None, "unrecognised Graph error", True),
    (400, 77777, False, "unrecognised Graph error", True),
])
def test_unrecognised_codes_are_retried_in_full_only_when_meta_says_transient(
        status: int, code: int, is_transient: bool | None, reason: str, bounded: bool) -> None:
    verdict = classify_error(status, graph_error(code, is_transient=is_transient))
    assert (verdict.outcome, verdict.reason, verdict.bounded) == (T, reason, bounded)
    assert (verdict.code, verdict.http_status, verdict.fbtrace_id) == (code, status, "AbCdEfGhIjK")


def test_codes_200_to_299_without_a_row_read_like_code_10() -> None:
    # permission missing, or a refusal about one person: the message only, counted toward the circuit breaker
    assert classify_error(403, graph_error(230)).reason == classify_error(403, graph_error(10)).reason
    verdict = classify_error(403, graph_error(230))
    assert (verdict.outcome, verdict.suspect, verdict.bounded, verdict.http_status) == (P, True, False, 403)


def test_a_graph_error_without_a_code_is_unrecognised() -> None:
    verdict = classify_error(400, {"error": {"message": "Something went wrong", "type": "OAuthException"}})
    assert (verdict.outcome, verdict.bounded, verdict.suspect, verdict.code) == (T, True, False, None)


@pytest.mark.parametrize(("code", "subcode", "outcome"), [(100, 190, P), (99999, 190, T), (99999, 368, T),
                                                          (99999, 2534068, P)])
def test_only_a_subcode_documented_on_its_own_decides_under_any_code(code: int, subcode: int,
                                                                     outcome: Outcome) -> None:
    # subcode 190 is not error 190 (an invalid token): only subcodes above 100,000 stand on their own (2534068)
    assert classify_error(400, graph_error(code, subcode)).outcome is outcome


def test_codes_sent_as_strings_are_read_as_numbers() -> None:
    verdict = classify_error(400, graph_error("100", "2018001"))
    assert (verdict.outcome, verdict.code, verdict.subcode) == (P, 100, 2018001)


@pytest.mark.parametrize("status", [400, 403, 429])
def test_bare_subcode_2534068_without_code(status: int) -> None:
    body = {"error": {"message": "multi-image", "error_subcode": 2534068}}
    assert classify_error(status, body).outcome is P


@pytest.mark.parametrize(("status", "code"), [(400, 99999), (400, 300), (403, 12345), (429, 99999)])
def test_unrecognised_code_is_transient_but_bounded(status: int, code: int) -> None:
    verdict = classify_error(status, graph_error(code))
    assert verdict.outcome is T
    assert verdict.bounded is True
    assert verdict.code == code


@pytest.mark.parametrize("body", [None, "", "<html><body>502 Bad Gateway</body></html>", {}, {"data": []},
                                  {"error": "upstream"}, [1, 2]])
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_without_a_graph_error_is_transient(status: int, body: Any) -> None:
    verdict = classify_error(status, body)
    assert verdict.outcome is T
    assert verdict.bounded is False
    assert verdict.http_status == status
    assert verdict.code is None


def test_non_json_502_from_the_client_is_transient() -> None:
    # GraphClient hands over body=None when the answer is not JSON (e.g. a load balancer's HTML page)
    verdict = classify_error(502, None)
    assert verdict.outcome is T
    assert verdict.error()["http_status"] == 502


def test_4xx_with_an_unexpected_body_is_bounded() -> None:
    verdict = classify_error(400, "<html>nope</html>")
    assert verdict.outcome is T
    assert verdict.bounded is True


def test_verdict_error_carries_the_details() -> None:
    verdict = classify_error(400, graph_error(100, 2018001, message="No matching user found",
                                             fbtrace_id="A1b2C3d4E5"))
    assert verdict.error() == {"code": 100, "subcode": 2018001, "message": "No matching user found",
                               "fbtrace_id": "A1b2C3d4E5", "http_status": 400, "class": "permanent"}


def test_verdict_error_falls_back_to_the_reason_and_truncates_long_messages() -> None:
    verdict = classify_error(400, {"error": {"code": 190, "error_subcode": 463}})
    assert verdict.message is None
    bare = verdict.error()
    assert bare["message"] == verdict.reason == "access token invalid or expired"  # the taxonomy's reason stands in
    assert bare["fbtrace_id"] is None
    assert bare["class"] == "account_broken"
    long = classify_error(400, graph_error(100, message="x" * 5000)).error()
    assert len(long["message"]) == 500


def test_verdict_error_without_graph_details() -> None:
    error = Verdict(Outcome.TRANSIENT, "could not connect").error()
    assert error == {"code": None, "subcode": None, "message": "could not connect", "fbtrace_id": None,
                     "http_status": None, "class": "transient"}


# --- transport failures -------------------------------------------------------------------------------------


class OneShotServer:
    """A TCP server on 127.0.0.1 that reads each HTTP request and then either closes or stays silent."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v25.0/me/messages"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            self.requests.append(self._read_request(conn))
            if self.mode == "close":
                conn.close()
            else:
                self.held.append(conn)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def closing_server() -> Iterator[OneShotServer]:
    server = OneShotServer("close")
    yield server
    server.close()


@pytest.fixture
def silent_server() -> Iterator[OneShotServer]:
    server = OneShotServer("silent")
    yield server
    server.close()


def _account(url: str) -> Account:
    base = url.split("/v25.0/")[0]
    return Account(name="t", id="me", login="instagram", graph_url=base, api_version="v25.0",
                   token="IGQtesttoken" + "x" * 40)


def _via_requests(url: str, timeout: tuple[float, float]) -> None:
    requests.post(url, json={"recipient": {"id": "1"}, "message": {"text": "hi"}}, timeout=timeout)


def _via_client(url: str, timeout: tuple[float, float]) -> None:
    client = GraphClient(connect_timeout=timeout[0], read_timeout=timeout[1])
    try:
        client.send(_account(url), {"recipient": {"id": "1"}, "message": {"text": "hi"}})
    finally:
        client.session.close()


SENDERS: list[Callable[[str, tuple[float, float]], None]] = [_via_requests, _via_client]


def _raised(send: Callable[[str, tuple[float, float]], None], url: str,
            timeout: tuple[float, float] = (2.0, 2.0)) -> requests.RequestException:
    with pytest.raises(requests.RequestException) as info:
        send(url, timeout)
    return info.value


def test_connect_timeout_is_transient() -> None:
    assert classify_transport(requests.ConnectTimeout()).outcome is T
    wrapped = requests.ConnectTimeout(MaxRetryError(None, "/x", ConnectTimeoutError("timed out")))
    assert classify_transport(wrapped).outcome is T


@pytest.mark.parametrize("send", SENDERS, ids=lambda f: f.__name__)
def test_connection_refused_is_transient(send: Callable[[str, tuple[float, float]], None]) -> None:
    exc = _raised(send, "http://127.0.0.1:1/x")  # nothing listens on port 1
    assert isinstance(exc, requests.ConnectionError)
    assert not isinstance(exc, requests.ConnectTimeout)
    verdict = classify_transport(exc)
    assert verdict.outcome is T
    assert verdict.bounded is False


def test_read_timeout_is_unknown() -> None:
    assert classify_transport(requests.ReadTimeout()).outcome is U


@pytest.mark.parametrize("send", SENDERS, ids=lambda f: f.__name__)
def test_real_read_timeout_is_unknown(silent_server: OneShotServer,
                                      send: Callable[[str, tuple[float, float]], None]) -> None:
    exc = _raised(send, silent_server.url, timeout=(2.0, 0.3))
    assert isinstance(exc, requests.ReadTimeout)
    assert classify_transport(exc).outcome is U
    assert silent_server.requests and b"POST" in silent_server.requests[0]


@pytest.mark.parametrize("send", SENDERS, ids=lambda f: f.__name__)
def test_server_closing_without_an_answer_is_unknown(closing_server: OneShotServer,
                                                     send: Callable[[str, tuple[float, float]], None]) -> None:
    exc = _raised(send, closing_server.url)
    assert isinstance(exc, requests.ConnectionError)
    assert not isinstance(exc, requests.ConnectTimeout)
    assert classify_transport(exc).outcome is U
    # the request did reach the server: resending could deliver the message twice
    assert closing_server.requests and b'"text": "hi"' in closing_server.requests[0]


def test_chunked_encoding_error_is_unknown() -> None:
    assert classify_transport(requests.exceptions.ChunkedEncodingError()).outcome is U


@pytest.mark.parametrize(("exc", "outcome", "reason"), [
    (requests.ConnectTimeout(), T, "could not connect to the Graph API (ConnectTimeout)"),
    (requests.ReadTimeout(), U, "request sent but no answer came back (ReadTimeout)"),
    (requests.ConnectionError(), U, "request sent but no answer came back (ConnectionError)"),
    (requests.exceptions.ContentDecodingError(), U, "transport failure after sending (ContentDecodingError)"),
    (requests.exceptions.TooManyRedirects(), U, "transport failure after sending (TooManyRedirects)"),
])
def test_transport_verdicts_name_the_exception(exc: requests.RequestException, outcome: Outcome,
                                               reason: str) -> None:
    assert classify_transport(exc) == Verdict(outcome, reason)


def _refused() -> NewConnectionError:
    return NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")


def _raised_from(exc: requests.RequestException, cause: BaseException) -> requests.RequestException:
    try:
        raise exc from cause
    except requests.RequestException as caught:
        return caught


def _raised_while_handling(exc: requests.RequestException, handled: BaseException) -> requests.RequestException:
    try:
        try:
            raise handled
        except type(handled):
            raise exc  # noqa: B904 - the implicit __context__ is the point
    except requests.RequestException as caught:
        return caught


def _looping() -> requests.ConnectionError:
    # an exception chain that comes back to where it started (a __context__ cycle)
    first, second = requests.ConnectionError("first"), RuntimeError("second")
    first.__context__, second.__context__ = second, first
    return first


def _reasons_looping_back() -> requests.ConnectionError:
    # urllib3-style .reason links that point back at each other; the connect failure hangs off the second's cause
    first, second = MaxRetryError(None, "/x"), MaxRetryError(None, "/x")
    first.reason, second.reason = second, first
    second.__cause__ = _refused()
    return requests.ConnectionError(first)


# How requests and urllib3 nest the exception that says "never connected": as an argument, as urllib3's .reason
# (also several .reason links deep, behind a proxy), as __cause__ or __context__. Anything else is UNKNOWN.
CHAINS: list[tuple[str, Callable[[], requests.RequestException], Outcome]] = [
    ("argument", lambda: requests.ConnectionError(_refused()), T),
    ("reason", lambda: requests.ConnectionError(MaxRetryError(None, "/x", _refused())), T),
    ("reason-behind-a-proxy", lambda: requests.exceptions.ProxyError(
        MaxRetryError(None, "/x", ProxyError("Unable to connect to proxy", _refused()))), T),
    ("cause", lambda: _raised_from(requests.ConnectionError("refused"), _refused()), T),
    ("context", lambda: _raised_while_handling(requests.ConnectionError("refused"), ConnectTimeoutError("slow")), T),
    ("reasons-looping-back", _reasons_looping_back, T),
    ("sent-then-dropped", lambda: requests.ConnectionError(
        MaxRetryError(None, "/x", ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")))), U),
    ("sent-then-dropped-cause", lambda: _raised_from(requests.ConnectionError("aborted"), ProtocolError("aborted")),
     U),
    ("chain-looping", _looping, U),
]


@pytest.mark.parametrize(("make", "outcome"), [(make, outcome) for _, make, outcome in CHAINS],
                         ids=[name for name, _, _ in CHAINS])
@pytest.mark.timeout(10)
def test_the_exception_chain_is_walked_for_a_connect_failure(make: Callable[[], requests.RequestException],
                                                             outcome: Outcome) -> None:
    assert classify_transport(make()).outcome is outcome
