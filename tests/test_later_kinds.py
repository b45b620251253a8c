"""The kinds after the seed's (GRAPH_API_NOTES.md, "Later kinds"): each rule at its boundary with the words a user
sees, the Graph body each kind becomes, and every kind end to end through a worker and the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import InvalidMessage, graph_body, load_message

R = "IGSID"
PNG = "https://cdn.example.com/a.png"
PAGE = "https://shop.example.com/a"


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(InvalidMessage) as caught:
        load_message(document)
    return str(caught.value)


def body(document: dict[str, Any]) -> dict[str, Any]:
    return graph_body(load_message(document))


def option(title: str = "Yes", payload: str = "YES", content_type: str = "text") -> dict[str, str]:
    return {"content_type": content_type, "title": title, "payload": payload}


def quick(options: list[dict[str, str]]) -> dict[str, Any]:
    return {"kind": "quick_replies", "recipient": R, "text": "Pick one", "quick_replies": options}


def postback(title: str = "Buy", payload: str = "BUY") -> dict[str, str]:
    return {"type": "postback", "title": title, "payload": payload}


def card(**fields: Any) -> dict[str, Any]:
    return {"title": "Hat", "subtitle": "Warm", **fields}


def generic(elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "generic_template", "recipient": R, "elements": elements}


def buttons(text: str, items: list[dict[str, str]]) -> dict[str, Any]:
    return {"kind": "button_template", "recipient": R, "text": text, "buttons": items}


# --- several images, files, attachment ids -------------------------------------------------------------------

def test_images_up_to_ten_by_url_or_attachment_id() -> None:
    items = [{"url": PNG}] * 9 + [{"attachment_id": "987654321"}]
    attachments = body({"kind": "images", "recipient": R, "images": items})["message"]["attachments"]
    assert len(attachments) == 10
    assert attachments[0] == {"type": "image", "payload": {"url": PNG}}
    assert attachments[9] == {"type": "image", "payload": {"attachment_id": "987654321"}}


@pytest.mark.parametrize("images,message", [
    ([{"url": PNG}] * 11, "images: must hold 1 to 10 images (got 11)"),
    ([], "images: must hold 1 to 10 images (got 0)"),
    ("a.png", "images: must be a list"),
    ([{"url": PNG, "attachment_id": "1"}], "images[0].attachment_id: give url or attachment_id, not both"),
    ([{}], "images[0].url: one of url or attachment_id is required"),
    ([{"url": PNG}, "b.png"], "images[1]: must be an object"),
    ([{"url": "https://cdn.example.com/a.mp4"}], "images[0].url: image must be one of png, jpeg, jpg, gif (got .mp4)"),
    ([{"url": PNG, "caption": "x"}], "images[0].caption: is not a field here"),
])
def test_images_refused(images: Any, message: str) -> None:
    assert refused({"kind": "images", "recipient": R, "images": images}) == message


def test_file_is_a_pdf_by_url_or_attachment_id() -> None:
    assert body({"kind": "file", "recipient": R, "url": "https://cdn.example.com/terms.pdf"})["message"] == {
        "attachment": {"type": "file", "payload": {"url": "https://cdn.example.com/terms.pdf"}}}
    assert body({"kind": "file", "recipient": R, "attachment_id": "42"})["message"]["attachment"]["payload"] == {
        "attachment_id": "42"}
    assert refused({"kind": "file", "recipient": R, "url": "https://cdn.example.com/terms.docx"}) == \
        "url: file must be one of pdf (got .docx)"
    assert refused({"kind": "file", "recipient": R}) == "url: one of url or attachment_id is required"


@pytest.mark.parametrize("kind", ["image", "gif", "video", "audio"])
def test_every_media_kind_takes_an_attachment_id(kind: str) -> None:
    sent = body({"kind": kind, "recipient": R, "attachment_id": "1234567890"})["message"]["attachment"]
    assert sent["payload"] == {"attachment_id": "1234567890"}
    assert refused({"kind": kind, "recipient": R, "attachment_id": "12", "url": "https://cdn.example.com/x"}) == \
        "attachment_id: give url or attachment_id, not both"


# --- quick replies --------------------------------------------------------------------------------------------

def test_quick_replies_up_to_thirteen_with_titles_of_twenty_characters() -> None:
    options = [option(f"Option {i:02d} " + "é" * 10, "P" * 1000) for i in range(13)]
    assert all(len(o["title"]) == 20 for o in options)
    sent = body(quick(options))["message"]
    assert sent["text"] == "Pick one" and sent["quick_replies"] == options


@pytest.mark.parametrize("options,message", [
    ([option()] * 14, "quick_replies: must hold 1 to 13 quick replies (got 14)"),
    ([], "quick_replies: must hold 1 to 13 quick replies (got 0)"),
    ([option(), option("é" * 21)],
     "quick_replies[1].title: must be at most 20 characters (got 21): Meta would cut it short"),
    ([option(payload="p" * 1001)], "quick_replies[0].payload: must be at most 1000 characters (got 1001)"),
    ([option(content_type="user_phone_number")],
     "quick_replies[0].content_type: must be text: Meta disabled user_phone_number quick replies for Instagram "
     "on 2026-10-05"),
    ([option(content_type="user_email")],
     "quick_replies[0].content_type: must be text: Meta disabled user_email quick replies for Instagram on "
     "2026-10-05"),
    ([option(content_type="location")], "quick_replies[0].content_type: must be text (got 'location')"),
    ([{"content_type": "text", "payload": "X"}], "quick_replies[0].title: is required"),
])
def test_quick_replies_refused(options: list[dict[str, str]], message: str) -> None:
    assert refused(quick(options)) == message


# --- templates ------------------------------------------------------------------------------------------------

def test_generic_template_body() -> None:
    element = card(image_url=PNG, default_action={"type": "web_url", "url": PAGE},
                   buttons=[postback(), {"type": "web_url", "title": "Visit", "url": PAGE}, postback("More", "M")])
    assert body(generic([element] * 10))["message"] == {"attachment": {"type": "template", "payload": {
        "template_type": "generic", "elements": [element] * 10}}}
    assert body(generic([{"title": "é" * 80, "subtitle": "é" * 80}]))  # 80 characters, 160 bytes: accepted


@pytest.mark.parametrize("elements,message", [
    ([card()] * 11, "elements: must hold 1 to 10 elements (got 11)"),
    ([card(title="t" * 81)], "elements[0].title: must be at most 80 characters (got 81)"),
    ([card(subtitle="s" * 81)], "elements[0].subtitle: must be at most 80 characters (got 81)"),
    ([{"title": "Hat"}],
     "elements[0]: needs at least one of subtitle, image_url, default_action or buttons besides its title"),
    ([card(buttons=[postback()] * 4)], "elements[0].buttons: must hold 1 to 3 buttons (got 4)"),
    ([card(buttons=[{"type": "phone_number", "title": "Call", "payload": "+1"}])],
     "elements[0].buttons[0].type: must be web_url or postback (got 'phone_number')"),
    ([card(buttons=[{"type": "web_url", "title": "Visit"}])],
     "elements[0].buttons[0].url: is required for a web_url button"),
    ([card(buttons=[postback(title="t" * 21)])],
     "elements[0].buttons[0].title: must be at most 20 characters (got 21)"),
    ([card(default_action={"type": "web_url", "url": PAGE, "title": "Open"})],
     "elements[0].default_action.title: is not a field here"),
    ([card(default_action={"type": "postback", "url": PAGE})],
     "elements[0].default_action.type: must be web_url (got 'postback')"),
])
def test_generic_template_refused(elements: list[dict[str, Any]], message: str) -> None:
    assert refused(generic(elements)) == message


def test_button_template_text_of_640_characters_and_three_buttons() -> None:
    text = "é" * 640  # characters, not bytes (1,280 of them)
    sent = body(buttons(text, [postback()] * 3))["message"]["attachment"]["payload"]
    assert sent == {"template_type": "button", "text": text, "buttons": [postback()] * 3}
    assert refused(buttons("é" * 641, [postback()])) == "text: must be at most 640 characters (got 641)"
    assert refused(buttons("Next?", [postback()] * 4)) == "buttons: must hold 1 to 3 buttons (got 4)"
    assert refused(buttons("Next?", [])) == "buttons: must hold 1 to 3 buttons (got 0)"
    assert refused(buttons("Next?", [{"type": "postback", "title": "Go", "payload": "GO", "url": PAGE}])) == \
        "buttons[0].url: is not a field of a postback button"


def test_product_template_up_to_ten_products() -> None:
    ids = [str(10**12 + i) for i in range(10)]
    sent = body({"kind": "product_template", "recipient": R, "product_ids": ids})["message"]
    assert sent["attachment"]["payload"] == {"template_type": "product", "elements": [{"id": i} for i in ids]}
    assert refused({"kind": "product_template", "recipient": R, "product_ids": ids + ["1"]}) == \
        "product_ids: must hold 1 to 10 product ids (got 11)"


# --- sender actions, private replies, tags, quoted replies ---------------------------------------------------

@pytest.mark.parametrize("action", ["typing_on", "typing_off", "mark_seen"])
def test_sender_actions_are_only_recipient_and_action(action: str) -> None:
    assert body({"kind": action, "recipient": R}) == {"recipient": {"id": R}, "sender_action": action}
    assert refused({"kind": action, "recipient": R, "tag": "HUMAN_AGENT"}) == "tag: is not a field of this kind"
    assert refused({"kind": action, "recipient": R, "text": "hi"}) == "text: is not a field of this kind"


def test_private_reply_goes_to_the_comment() -> None:
    document = {"kind": "private_reply", "comment_id": "17900000000000001", "text": "Thanks! Details in DM"}
    assert body(document) == {"recipient": {"comment_id": "17900000000000001"},
                              "message": {"text": "Thanks! Details in DM"}}
    assert refused({**document, "recipient": R}) == "recipient: is not a field of this kind"
    assert refused({**document, "text": "a" * 1001}) == "text: must be at most 1000 UTF-8 bytes (got 1001)"
    assert refused({"kind": "private_reply", "text": "hi"}) == "comment_id: is required"


def test_human_agent_tag_and_reply_to_on_any_message() -> None:
    sent = body({"kind": "image", "recipient": R, "url": PNG, "tag": "HUMAN_AGENT", "reply_to": "aWdf.mid-1"})
    assert sent["messaging_type"] == "MESSAGE_TAG" and sent["tag"] == "HUMAN_AGENT"
    assert sent["reply_to"] == {"mid": "aWdf.mid-1"}
    assert "messaging_type" not in body({"kind": "text", "recipient": R, "text": "hi"})


@pytest.mark.parametrize("tag,message", [
    ("ACCOUNT_UPDATE", "tag: must be HUMAN_AGENT: Meta does not offer the ACCOUNT_UPDATE tag on Instagram"),
    ("POST_PURCHASE_UPDATE", "tag: must be HUMAN_AGENT: Meta does not offer the POST_PURCHASE_UPDATE tag on Instagram"),
    ("human_agent", "tag: must be HUMAN_AGENT, the only message tag Instagram accepts (got 'human_agent')"),
])
def test_other_tags_are_refused(tag: str, message: str) -> None:
    assert refused({"kind": "text", "recipient": R, "text": "hi", "tag": tag}) == message


def test_errors_keep_their_structure_for_http_clients() -> None:
    """The HTTP API answers marshmallow's nested messages: the failing option by its index."""
    with pytest.raises(InvalidMessage) as caught:
        load_message(quick([option(), option("t" * 21)]))
    assert json.loads(json.dumps(caught.value.normalized_messages())) == {
        "quick_replies": {"1": {"title": ["must be at most 20 characters (got 21): Meta would cut it short"]}}}


# --- end to end: producers -> Redis -> a worker -> the sandbox ------------------------------------------------

#: One document of every later kind, as other apps send them.
DOCUMENTS: dict[str, dict[str, Any]] = {
    "images": {"kind": "images", "recipient": "later-images", "images": [{"url": PNG}, {"attachment_id": "555"}]},
    "file": {"kind": "file", "recipient": "later-file", "url": "https://cdn.example.com/terms.pdf"},
    "quick_replies": quick([option(), option("No", "NO")]) | {"recipient": "later-quick"},
    "generic_template": generic([card(default_action={"type": "web_url", "url": PAGE}, buttons=[postback()])])
    | {"recipient": "later-generic"},
    "button_template": buttons("Next?", [{"type": "web_url", "title": "Visit", "url": PAGE}, postback()])
    | {"recipient": "later-buttons"},
    "product_template": {"kind": "product_template", "recipient": "later-product", "product_ids": ["8012345"],
                         "account": "shop"},
    "typing_on": {"kind": "typing_on", "recipient": "later-typing"},
    "typing_off": {"kind": "typing_off", "recipient": "later-typing"},
    "mark_seen": {"kind": "mark_seen", "recipient": "later-seen"},
    "private_reply": {"kind": "private_reply", "comment_id": "17900000000000101", "text": "Thanks for asking!"},
    "tagged": {"kind": "text", "recipient": "later-agent", "text": "A person here", "tag": "HUMAN_AGENT",
               "reply_to": "aWdf.quoted-1"},
}


@pytest.mark.usefixtures("worker", "clean")
def test_every_later_kind_is_delivered_as_meta_documents_it(sandbox: str) -> None:
    from producers import send
    from tests.conftest import received

    jobs = {name: send(document) for name, document in DOCUMENTS.items()}
    results = {name: job.result(timeout=30) for name, job in jobs.items()}
    assert "message_id" not in results["typing_on"]  # sender actions are answered with the recipient only
    assert results["private_reply"]["comment_id"] == "17900000000000101"
    seen = received(sandbox)
    for name, document in DOCUMENTS.items():
        sent = [m["body"] for m in seen if m["body"] == graph_body(load_message(document))]
        assert len(sent) == 1, f"{name}: the sandbox saw {len(sent)} such bodies"


@pytest.mark.usefixtures("worker", "clean")
def test_one_private_reply_per_comment(sandbox: str) -> None:
    from producers import IdempotencyConflict, reply_privately
    from tests.conftest import received

    first = reply_privately("17900000000000202", "Thanks! Details in your DMs")
    again = reply_privately("17900000000000202", "Thanks! Details in your DMs")  # a retried webhook handler
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict) as caught:
        reply_privately("17900000000000202", "Another text")
    assert caught.value.job_id == first.id
    assert first.result(timeout=30)["comment_id"] == "17900000000000202"
    replies = [m for m in received(sandbox) if m["body"]["recipient"].get("comment_id") == "17900000000000202"]
    assert len(replies) == 1
    assert first.info()["recipient"] == "comment:17900000000000202"


@pytest.mark.usefixtures("worker", "clean")
def test_product_template_only_from_a_facebook_login_account(r) -> None:
    from producers import send_product_template
    from tests.conftest import queue_depth

    with pytest.raises(InvalidMessage) as caught:
        send_product_template("later-product", ["8012345"])  # the default account uses Instagram Login
    assert str(caught.value) == ("kind: product_template needs a Facebook-Login (Page-linked) account: Meta offers "
                                 "it only there, and the account 'default' uses Instagram Login")
    assert queue_depth(r) == 0 and not list(r.scan_iter("igsend:job:*"))
    assert send_product_template("later-product", ["8012345"], account="shop").result(timeout=30)["message_id"]


@pytest.mark.scenario
@pytest.mark.usefixtures("worker", "clean")
def test_cli_forms_of_the_later_kinds(sandbox: str) -> None:
    from tests.conftest import received
    from tests.test_cli import igsend

    runs = {
        "quick_replies": ["quick_replies", "cli-later", "Did it fit?", "Yes=FIT_YES", "No=FIT_NO"],
        "button_template": ["button_template", "cli-later", "Next?", "Track=https://shop.example.com/o/1",
                            "Talk to us=HUMAN"],
        "images": ["images", "cli-later", PNG, "987654"],
        "private_reply": ["private_reply", "17900000000000303", "Thanks!"],
        "tagged": ["text", "cli-later", "A person here", "--tag", "HUMAN_AGENT", "--reply-to", "aWdf.q-2"],
        "typing_on": ["typing_on", "cli-later"],
    }
    for name, args in runs.items():
        run = igsend("send", *args, "--wait")
        assert run.returncode == 0, (name, run.stdout, run.stderr)
        assert json.loads(run.stdout)["status"] == "delivered", name
    bodies = [m["body"] for m in received(sandbox)]
    assert {"recipient": {"id": "cli-later"}, "message": {"text": "Did it fit?", "quick_replies": [
        option("Yes", "FIT_YES"), option("No", "FIT_NO")]}} in bodies
    button_payload = {"template_type": "button", "text": "Next?", "buttons": [
        {"type": "web_url", "title": "Track", "url": "https://shop.example.com/o/1"}, postback("Talk to us", "HUMAN")]}
    assert {"recipient": {"id": "cli-later"}, "message": {"attachment": {"type": "template",
                                                                         "payload": button_payload}}} in bodies
    assert {"recipient": {"id": "cli-later"}, "message": {"attachments": [
        {"type": "image", "payload": {"url": PNG}}, {"type": "image", "payload": {"attachment_id": "987654"}}]}} \
        in bodies
    assert {"recipient": {"id": "cli-later"}, "message": {"text": "A person here"}, "messaging_type": "MESSAGE_TAG",
            "tag": "HUMAN_AGENT", "reply_to": {"mid": "aWdf.q-2"}} in bodies

    refused = igsend("send", "quick_replies", "cli-later", "Pick", "Share your email=EMAIL", "x" * 21 + "=X")
    assert refused.returncode == 2
    assert "quick_replies[1].title: must be at most 20 characters (got 21)" in refused.stderr
