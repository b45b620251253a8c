"""Every rule of the message contract at its boundary, with the exact words a user sees."""

from __future__ import annotations

import pytest

from schemas import InvalidMessage, graph_body, load_message


def refused(document) -> str:
    with pytest.raises(InvalidMessage) as caught:
        load_message(document)
    return str(caught.value)


def text(value, **extra):
    return {"kind": "text", "recipient": "IGSID", "text": value, **extra}


@pytest.mark.parametrize("value,size", [("a" * 1000, 1000), ("é" * 500, 1000), ("😀" * 250, 1000),
                                        ("é" * 499 + "a" * 2, 1000)])
def test_text_up_to_1000_utf8_bytes_is_accepted(value: str, size: int) -> None:
    assert len(value.encode()) == size
    assert load_message(text(value))["text"] == value


@pytest.mark.parametrize("value,size", [("a" * 1001, 1001), ("é" * 501, 1002), ("😀" * 251, 1004),
                                        ("é" * 500 + "a", 1001)])
def test_text_over_1000_bytes_is_refused_with_the_count(value: str, size: int) -> None:
    assert refused(text(value)) == f"text: must be at most 1000 UTF-8 bytes (got {size})"


@pytest.mark.parametrize("value,message", [
    ("", "text: must not be empty"),
    ("   \n\t", "text: must not be empty"),
    (42, "text: must be a string (got int)"),
    (None, "text: must not be null"),
    ("a\x00b", "text: must not contain control characters (U+0000 at 1)"),
    ("ok\ud800", "text: must be valid UTF-8 (lone surrogate U+D800 at 2)"),
])
def test_text_rules(value, message: str) -> None:
    assert refused(text(value)) == message


def test_text_keeps_newlines() -> None:
    assert load_message(text("line 1\nline 2\r\n\tend"))["text"] == "line 1\nline 2\r\n\tend"


MEDIA = {
    "image": (["png", "jpeg", "jpg", "gif", "PNG"], ["bmp", "webp", "mp4"], "png, jpeg, jpg, gif"),
    "gif": (["gif"], ["png", "mp4"], "gif"),
    "video": (["mp4", "ogg", "avi", "mov", "webm", "MOV"], ["mkv", "gif"], "mp4, ogg, avi, mov, webm"),
    "audio": (["aac", "m4a", "wav", "mp4"], ["mp3", "ogg"], "aac, m4a, wav, mp4"),
}


@pytest.mark.parametrize("kind", MEDIA)
def test_media_formats(kind: str) -> None:
    allowed, refused_exts, listed = MEDIA[kind]
    for ext in allowed:
        message = load_message({"kind": kind, "recipient": "IGSID", "url": f"https://cdn.example.com/f.{ext}?v=2"})
        assert message["url"].endswith(f".{ext}?v=2")
    for ext in refused_exts:
        assert refused({"kind": kind, "recipient": "IGSID", "url": f"https://cdn.example.com/f.{ext}"}) == (
            f"url: {kind} must be one of {listed} (got .{ext})")
    # no extension in the path: Meta decides from the content
    assert load_message({"kind": kind, "recipient": "IGSID", "url": "https://cdn.example.com/media/123"})


@pytest.mark.parametrize("url,message", [
    ("ftp://example.com/a.png", "url: must be an http or https URL (got scheme 'ftp')"),
    ("javascript:alert(1)", "url: must be an http or https URL (got scheme 'javascript')"),
    ("https://", "url: must be a valid http(s) URL with a host name (got 'https://')"),
    ("https://localhost/a.png", "url: must be a public address Meta can fetch, not this machine (got "
                                "'https://localhost/a.png')"),
    ("https://shop.localhost/a.png", "url: must be a public address Meta can fetch, not this machine (got "
                                     "'https://shop.localhost/a.png')"),
    ("cdn.example.com/a.png", "url: must be an http(s) URL such as https://example.com/page (got "
                              "'cdn.example.com/a.png', which is not a URL)"),
    ("https://user:pw@example.com/a.png", "url: must not contain credentials (user:password@)"),
    ("https://example.com/a b.png", "url: must not contain spaces"),
    ("https://example.com/" + "a" * 2000, "url: must be at most 2000 characters (got 2020)"),
    ("https://example.com:99999/a.png", "url: must be a valid http(s) URL (Port out of range 0-65535)"),
])
def test_bad_urls(url: str, message: str) -> None:
    assert refused({"kind": "image", "recipient": "IGSID", "url": url}) == message


def test_link_is_a_valid_url_sent_as_text() -> None:
    message = load_message({"kind": "link", "recipient": "IGSID", "url": "https://example.com/sale?x=1#top"})
    assert graph_body(message) == {"recipient": {"id": "IGSID"}, "message": {"text": "https://example.com/sale?x=1#top"}}
    assert refused({"kind": "link", "recipient": "IGSID", "url": "example.com"}) == (
        "url: must be an http(s) URL such as https://example.com/page (got 'example.com', which is not a URL)")


@pytest.mark.parametrize("document,message", [
    ({"kind": "text", "text": "hi"}, "recipient: is required"),
    ({"kind": "text", "recipient": "", "text": "hi"}, "recipient: must be a non-empty Instagram-scoped ID (IGSID)"),
    ({"kind": "text", "recipient": "a b", "text": "hi"},
     "recipient: must contain only letters, digits, '_', '.' or '-' (got 'a b')"),
    ({"kind": "text", "recipient": "1" * 65, "text": "hi"}, "recipient: must be at most 64 characters (got 65)"),
    ({"kind": "text", "recipient": 123, "text": "hi"}, "recipient: must be a string (got int)"),
    ({"recipient": "IGSID"}, "kind: is required"),
    ({"kind": "fax", "recipient": "IGSID"},
     "kind: must be one of text, link, image, gif, video, audio, post, sticker, react, unreact, images, file, "
     "quick_replies, generic_template, button_template, product_template, typing_on, typing_off, mark_seen, "
     "private_reply (got 'fax')"),
    ({"kind": ["text"], "recipient": "IGSID"},
     "kind: must be one of text, link, image, gif, video, audio, post, sticker, react, unreact, images, file, "
     "quick_replies, generic_template, button_template, product_template, typing_on, typing_off, mark_seen, "
     "private_reply (got 'list')"),
    ({"kind": "sticker", "recipient": "IGSID", "text": "hi"}, "text: is not a field of this kind"),
    ({"kind": "post", "recipient": "IGSID"}, "post_id: is required"),
    ({"kind": "react", "recipient": "IGSID"}, "message_id: is required"),
    ({"kind": "react", "recipient": "IGSID", "message_id": "m", "reaction": "hate"},
     "reaction: must be 'love' or a single emoji (got 'hate')"),
    ({"kind": "unreact", "recipient": "IGSID", "message_id": "m", "reaction": "love"},
     "reaction: is not a field of this kind"),
    ({"kind": "text", "recipient": "IGSID", "text": "hi", "account": "no spaces"},
     "account: must contain only letters, digits, '_', '.' or '-' (got 'no spaces')"),
    ({"kind": "text", "recipient": "IGSID", "text": "hi", "idempotency_key": "é"},
     "idempotency_key: must be 1-200 printable ASCII characters"),
    ("not an object", "_schema: a message must be a JSON object (got str)"),
])
def test_structural_rules(document, message: str) -> None:
    assert refused(document) == message


def test_every_error_is_reported_at_once() -> None:
    text_of = refused({"kind": "text", "recipient": "", "text": "", "extra": 1})
    assert "recipient:" in text_of and "text:" in text_of and "extra:" in text_of


@pytest.mark.parametrize("reaction", ["love", "❤️", "😂", "👍🏽", "👨‍👩‍👧"])
def test_reactions(reaction: str) -> None:
    message = load_message({"kind": "react", "recipient": "IGSID", "message_id": "m.1", "reaction": reaction})
    assert graph_body(message)["payload"] == {"message_id": "m.1", "reaction": reaction}


def test_defaults() -> None:
    message = load_message({"kind": "react", "recipient": "IGSID", "message_id": "m"})
    assert message["account"] == "default" and message["reaction"] == "love"


@pytest.mark.parametrize("document,body", [
    ({"kind": "text", "text": "Hi"}, {"message": {"text": "Hi"}}),
    ({"kind": "image", "url": "https://c.example.com/a.png"},
     {"message": {"attachment": {"type": "image", "payload": {"url": "https://c.example.com/a.png"}}}}),
    ({"kind": "gif", "url": "https://c.example.com/a.gif"},
     {"message": {"attachment": {"type": "image", "payload": {"url": "https://c.example.com/a.gif"}}}}),
    ({"kind": "video", "url": "https://c.example.com/a.mp4"},
     {"message": {"attachment": {"type": "video", "payload": {"url": "https://c.example.com/a.mp4"}}}}),
    ({"kind": "audio", "url": "https://c.example.com/a.m4a"},
     {"message": {"attachment": {"type": "audio", "payload": {"url": "https://c.example.com/a.m4a"}}}}),
    ({"kind": "post", "post_id": "1789"},
     {"message": {"attachment": {"type": "MEDIA_SHARE", "payload": {"id": "1789"}}}}),
    ({"kind": "sticker"}, {"message": {"attachment": {"type": "like_heart"}}}),
    ({"kind": "react", "message_id": "mid", "reaction": "love"},
     {"sender_action": "react", "payload": {"message_id": "mid", "reaction": "love"}}),
    ({"kind": "unreact", "message_id": "mid"}, {"sender_action": "unreact", "payload": {"message_id": "mid"}}),
])
def test_graph_body_of_every_kind(document: dict, body: dict) -> None:
    assert graph_body(load_message({"recipient": "IGSID", **document})) == {"recipient": {"id": "IGSID"}, **body}
