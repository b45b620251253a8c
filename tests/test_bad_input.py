"""Property-based: random and adversarial input ends in a clear validation error naming a field, or in a
message Meta would accept — never a crash, and never anything enqueued."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import producers
from igsend.cli import main as cli
from schemas import KINDS, InvalidMessage, graph_body, load_message
from tests.conftest import queue_depth

FIELDS = ["kind", "recipient", "text", "url", "post_id", "message_id", "reaction", "account", "idempotency_key"]

nasty_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8")),  # includes control characters
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "é" * 501, "😀" * 251, " ", "", "\n" * 5]),
    st.builds(lambda n: "x" * n, st.integers(0, 5000)),
)
urlish = st.one_of(
    st.sampled_from(["https://user:pw@example.com/a.png", "file:///etc/passwd", "javascript:alert(1)",
                     "data:image/png;base64,AAAA", "http://[::1]/a.png", "https://ex ample.com/a.png", "//x.com/a.png",
                     "https://example.com/a.exe", "HTTPS://EXAMPLE.COM/A.PNG", "https://example.com:0/a.gif"]),
    st.text(), st.builds(lambda s: "https://example.com/" + s, st.text()),
)
junk = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), nasty_text),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                                       max_size=4), max_leaves=20)
value = st.one_of(nasty_text, urlish, junk)
documents = st.one_of(
    junk,
    st.fixed_dictionaries({"kind": st.one_of(st.sampled_from(KINDS), value)},
                          optional={name: value for name in FIELDS[1:]}),
    st.dictionaries(st.sampled_from(FIELDS + ["token", "access_token", "__proto__"]), value, max_size=8),
)


def check(document) -> None:
    try:
        message = load_message(document)
    except InvalidMessage as exc:
        assert isinstance(exc.messages, dict) and exc.messages, "an error names at least one field"
        assert str(exc).strip()
        return
    body = graph_body(message)  # a message that passes must make a body Meta documents
    assert body["recipient"]["id"] == message["recipient"]
    if "text" in body.get("message", {}):
        assert 0 < len(body["message"]["text"].encode("utf-8")) <= 1000


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_schemas_never_crash(document) -> None:
    check(document)


def test_ten_megabytes_is_refused_cheaply() -> None:
    huge = "x" * 10_000_000
    with pytest.raises(InvalidMessage, match="text: must be at most 1000 UTF-8 bytes"):
        load_message({"kind": "text", "recipient": "IGSID", "text": huge})
    with pytest.raises(InvalidMessage, match="url: must be at most 2000 characters"):
        load_message({"kind": "image", "recipient": "IGSID", "url": huge})
    with pytest.raises(InvalidMessage, match="recipient: is far too long"):
        load_message({"kind": "sticker", "recipient": huge})


@pytest.fixture
def r(private_db):
    return private_db


@pytest.fixture
def nothing_enqueued(r):
    """Asserts, after the test, that no job record and no queued message appeared."""
    before = queue_depth(r)
    yield
    assert queue_depth(r) == before
    assert not list(r.scan_iter("igsend:job:*"))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=documents)
def test_python_api_refuses_without_enqueueing(document, nothing_enqueued) -> None:
    try:
        load_message(document)
    except InvalidMessage:
        with pytest.raises(InvalidMessage):
            producers.send(document)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["text", "link", "image", "video", "post", "react"]), text=nasty_text)
def test_cli_refuses_with_a_field_and_exit_2(kind, text, nothing_enqueued) -> None:
    args = {"text": ["IGSID", text], "link": ["IGSID", text], "image": ["IGSID", text], "video": ["IGSID", text],
            "post": ["IGSID", text], "react": ["IGSID", text, "hate"]}[kind]
    # a media kind's SOURCE: ASCII digits are an attachment id, anything else (not a local file) a URL
    source = ["attachment_id"] if text.isascii() and text.isdigit() else ["url"]
    document = {"kind": kind, "recipient": "IGSID", **dict(zip(
        {"text": ["text"], "link": ["url"], "image": source, "video": source, "post": ["post_id"],
         "react": ["message_id", "reaction"]}[kind], args[1:], strict=True))}
    try:
        load_message(document)
        return  # a valid one would be sent; only the refusals are under test here
    except InvalidMessage as exc:
        expected = str(exc)
    if "\x00" in text or max(text or "a") >= "\ud800" and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # argv cannot carry NUL or lone surrogates; the Python API covers them
    result = CliRunner().invoke(cli, ["send", kind, "--", *args])  # "--": a value may start with "-"
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {expected}"


def test_the_fixture_would_see_an_enqueue(r) -> None:
    before = queue_depth(r)
    producers.send_text("IGSID", "a valid one")
    assert queue_depth(r) == before + 1
    assert len(list(r.scan_iter("igsend:job:*"))) == 1
