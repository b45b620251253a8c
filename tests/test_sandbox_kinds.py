"""The sandbox's later message kinds (GRAPH_API_NOTES "Later kinds, as of 2026-12"): several images, files,
quick replies, generic, button and product templates, typing and seen sender actions, private replies to
comments, the HUMAN_AGENT tag, reply_to, and the attachment upload endpoint. Each is accepted in Meta's shape,
each limit is accepted at N and refused at N+1 with Meta's code-100 error naming the param, and the sandbox's
introspection shows what was sent and uploaded.

The sandbox is served in-process as in test_sandbox, whose fixtures and helpers this file reuses."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests

from sandbox import SandboxConfig
from sandbox.limits import Bucket
from tests import test_sandbox
from tests.test_sandbox import (
    IG_ACCOUNT,
    IG_TOKEN,
    PAGE_ACCOUNT,
    PAGE_TOKEN,
    TOKENS,
    VERSION,
    Server,
    error_of,
    send,
    serve,
    start,
    stop,
)

# test_sandbox's fixtures: one in-process sandbox for this module, emptied and set back to Meta's budgets
# before each test
sandbox, fresh = test_sandbox.sandbox, test_sandbox.fresh

pytestmark = pytest.mark.timeout(60)

# (token, account, the error type Meta's host gives) per login kind
LOGINS = {"instagram": (IG_TOKEN, IG_ACCOUNT, "IGApiException"),
          "facebook": (PAGE_TOKEN, PAGE_ACCOUNT, "OAuthException")}
URL = "https://cdn.example.com/a.png"


def post(sandbox: Server, body: dict, login: str = "facebook") -> requests.Response:
    token, account, _ = LOGINS[login]
    return send(sandbox, token, account, body=body)


def accepted(answer: requests.Response, *, message_id: bool = True) -> dict:
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == ({"recipient_id", "message_id"} if message_id else {"recipient_id"})
    return answer.json()


def refused(answer: requests.Response, words: str, login: str = "facebook", *,
            subcode: int | None = 2534015) -> dict:
    """Meta's answer to a bad parameter: HTTP 400, code 100, the host's error type, a message naming it."""
    error = error_of(answer, 400, LOGINS[login][2])
    assert (error["code"], error.get("error_subcode")) == (100, subcode), error
    assert error["message"].startswith("(#100) ") and words in error["message"], error["message"]
    return error


def message(content: dict, recipient: str = "IGSID", **top: Any) -> dict:
    return {"recipient": {"id": recipient}, "message": content, **top}


def images(count: int) -> dict:
    return message({"attachments": [{"type": "image", "payload": {"url": f"https://cdn.example.com/{i}.png"}}
                                    for i in range(count)]})


def quick_replies(count: int = 1, title: str = "Yes", payload: str = "YES", content_type: str = "text") -> dict:
    replies = [{"content_type": content_type, "title": title, "payload": payload} for _ in range(count)]
    return message({"text": "Pick one", "quick_replies": replies})


def template(payload: dict) -> dict:
    return message({"attachment": {"type": "template", "payload": payload}})


def button(kind: str = "postback", title: str = "Start Chatting") -> dict:
    if kind == "web_url":
        return {"type": "web_url", "url": "https://www.originalcoastclothing.com", "title": title}
    return {"type": kind, "title": title, "payload": "DEVELOPER_DEFINED_PAYLOAD"}


def element(title: str = "Welcome!", **fields: Any) -> dict:
    return {"title": title, **(fields or {"subtitle": "We have the right hat for everyone."})}


def generic(*elements: dict) -> dict:
    return template({"template_type": "generic", "elements": list(elements) or [element()]})


def button_template(text: str = "What do you want to do next?", buttons: int = 1) -> dict:
    return template({"template_type": "button", "text": text, "buttons": [button() for _ in range(buttons)]})


def products(count: int) -> dict:
    return template({"template_type": "product", "elements": [{"id": f"{7000 + i}"} for i in range(count)]})


def private_reply(comment_id: str, text: str = "Thanks! Here is the link.") -> dict:
    return {"recipient": {"comment_id": comment_id}, "message": {"text": text}}


def sandbox_config(sandbox: Server, **changes: Any) -> dict:
    answer = requests.post(f"{sandbox.url}/_sandbox/config", json=changes, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- every kind in Meta's shape, and what /_sandbox/messages shows of it ------------------------------------

# Instagram Messaging "Generic Template" sample (its stray trailing comma left out)
META_GENERIC = template({"template_type": "generic", "elements": [{
    "title": "Welcome!", "image_url": "https://github.com/fbsamples/original-coast-clothing/blob/main/public/looks/"
                                      "male-work.jpg",
    "subtitle": "We have the right hat for everyone.",
    "default_action": {"type": "web_url", "url": "https://www.originalcoastclothing.com"},
    "buttons": [button("web_url", "View Website"), button("postback", "Start Chatting")]}]})

KINDS: dict[str, tuple[dict, str]] = {  # body, the kind /_sandbox/messages records
    "one image by url": (message({"attachment": {"type": "image", "payload": {"url": URL}}}), "image"),
    "several images, url and attachment_id mixed": (message({"attachments": [
        {"type": "image", "payload": {"url": URL}}, {"payload": {"attachment_id": "1857777774821032"}},
        {"type": "image", "payload": {"attachment_id": "1857777774821033"}}]}), "images"),
    "file by url": (message({"attachment": {"type": "file", "payload": {"url": "https://cdn.example.com/a.pdf"}}}),
                    "file"),
    "file by attachment_id": (message({"attachment": {"type": "file", "payload": {"attachment_id": "9001"}}}),
                              "file"),
    "quick replies": (quick_replies(2), "quick_replies"),
    "generic template (Meta's sample)": (META_GENERIC, "template_generic"),
    "button template": (button_template(buttons=2), "template_button"),
    "HUMAN_AGENT tag": (message({"text": "A person answers"}, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT"),
                        "text"),
    "reply_to on text": (message({"text": "Yes, that one"}, reply_to={"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlE1"}),
                         "text"),
    "reply_to on an image": (message({"attachment": {"type": "image", "payload": {"url": URL}}},
                                     reply_to={"mid": "m_1"}), "image"),
}


@pytest.mark.parametrize("login", LOGINS)
@pytest.mark.parametrize("name", KINDS)
def test_each_kind_is_accepted_for_both_logins_and_recorded(sandbox: Server, name: str, login: str) -> None:
    body, kind = KINDS[name]
    answer = accepted(post(sandbox, body, login))
    assert answer["recipient_id"] == "IGSID"
    [seen] = sandbox.messages()
    assert seen["body"] == body and seen["message_id"] == answer["message_id"]
    assert (seen["kind"], seen["send_class"], seen["login"]) == (kind, "text", login)


def test_the_product_template_is_accepted_for_facebook_login(sandbox: Server) -> None:
    accepted(post(sandbox, products(2), "facebook"))
    assert sandbox.messages()[0]["kind"] == "template_product"


@pytest.mark.parametrize("action", ["typing_on", "typing_off", "mark_seen"])
def test_typing_and_seen_answer_the_recipient_only(sandbox: Server, action: str) -> None:
    for login in LOGINS:
        body = {"recipient": {"id": "IGSID"}, "sender_action": action}
        assert accepted(post(sandbox, body, login), message_id=False) == {"recipient_id": "IGSID"}
    assert [(m["kind"], m["message_id"]) for m in sandbox.messages()] == [(action, None)] * 2


def test_the_seeds_form_encoding_carries_the_new_shapes(sandbox: Server) -> None:
    data = {"recipient": json.dumps({"id": "IGSID"}), "message": json.dumps(quick_replies(1)["message"]),
            "reply_to": json.dumps({"mid": "m_1"})}
    answer = requests.post(f"{sandbox.url}/{VERSION}/me/messages", params={"access_token": PAGE_TOKEN}, data=data,
                           timeout=5)
    accepted(answer)
    [seen] = sandbox.messages()
    assert seen["body"]["reply_to"] == {"mid": "m_1"} and seen["kind"] == "quick_replies"


def test_multipart_fields_carry_them_too(sandbox: Server) -> None:
    parts = {"recipient": (None, json.dumps({"id": "IGSID"})), "message": (None, json.dumps(images(2)["message"]))}
    answer = requests.post(f"{sandbox.url}/{VERSION}/{PAGE_ACCOUNT}/messages", files=parts, timeout=5,
                           headers={"Authorization": f"Bearer {PAGE_TOKEN}"})
    accepted(answer)
    [seen] = sandbox.messages()
    assert seen["content_type"] == "multipart/form-data" and seen["body"] == images(2)


# --- 1. several images --------------------------------------------------------------------------------------

def test_ten_images_are_accepted_and_eleven_refused(sandbox: Server) -> None:
    accepted(post(sandbox, images(10)))
    refused(post(sandbox, images(11)), "param message[attachments] must be an array of 1 to 10 image attachments, "
                                       "got 11")
    assert len(sandbox.messages()) == 1


@pytest.mark.parametrize("content,words", [
    ({"attachments": []}, "param message[attachments] must be an array of 1 to 10 image attachments, got 0"),
    ({"attachments": {"type": "image", "payload": {"url": URL}}},  # the IGL sample's object: not an array
     "param message[attachments] must be an array"),
    ({"attachments": [{"type": "image", "payload": {"url": URL}}, {"type": "video", "payload": {"url": URL}}]},
     "param message[attachments][1][type] must be image"),
    ({"attachments": [{"type": "file", "payload": {"attachment_id": "1"}}]},
     "param message[attachments][0][type] must be image"),
    ({"attachment": {"type": "image", "payload": {"url": URL}},
      "attachments": [{"type": "image", "payload": {"url": URL}}]},
     "param message[attachments] cannot be sent with param message[attachment]"),
    ({"attachments": [{"payload": {"url": URL}}]}, "param message[attachments][0][type] (image) is required"),
    ({"attachments": [{"type": "image", "payload": {"url": URL, "attachment_id": "1"}}]},
     "param message[attachments][0][payload] must hold one of url or attachment_id"),
])
def test_several_images_refusals(sandbox: Server, content: dict, words: str) -> None:
    refused(post(sandbox, message(content)), words)


def test_an_image_url_in_the_array_must_be_http(sandbox: Server) -> None:
    body = message({"attachments": [{"type": "image", "payload": {"url": "ftp://cdn.example.com/a.png"}}]})
    refused(post(sandbox, body), "param message[attachments][0][payload][url] must be an http(s) URL",
            subcode=2018047)


# --- 3. quick replies ---------------------------------------------------------------------------------------

def test_quick_reply_limits(sandbox: Server) -> None:
    accepted(post(sandbox, quick_replies(13)))
    refused(post(sandbox, quick_replies(14)), "param message[quick_replies] must be an array of 1 to 13 quick "
                                              "replies, got 14")
    accepted(post(sandbox, quick_replies(title="é" * 20)))
    refused(post(sandbox, quick_replies(title="é" * 21)),
            "Length of param message[quick_replies][0][title] must be at most 20 characters, got 21")
    accepted(post(sandbox, quick_replies(payload="p" * 1000)))
    refused(post(sandbox, quick_replies(payload="p" * 1001)),
            "Length of param message[quick_replies][0][payload] must be at most 1000 characters, got 1001")
    assert len(sandbox.messages()) == 3


@pytest.mark.parametrize("content_type", ["user_phone_number", "user_email"])
def test_phone_and_email_quick_replies_were_disabled_for_instagram(sandbox: Server, content_type: str) -> None:
    for login in LOGINS:
        refused(post(sandbox, quick_replies(content_type=content_type), login),
                f"param message[quick_replies][0][content_type] {content_type} was disabled for Instagram on "
                "2026-10-05", login)


@pytest.mark.parametrize("content,words", [
    ({"text": "Pick", "quick_replies": []}, "param message[quick_replies] must be an array of 1 to 13"),
    ({"text": "Pick", "quick_replies": [{"content_type": "location"}]},
     "param message[quick_replies][0][content_type] must be text, got 'location'"),
    ({"text": "Pick", "quick_replies": [{"content_type": "text", "payload": "P"}]},
     "param message[quick_replies][0][title] must be a non-empty string"),
    ({"text": "Pick", "quick_replies": [{"content_type": "text", "title": "Yes"}]},
     "param message[quick_replies][0][payload] must be a non-empty string"),
    ({"attachment": {"type": "image", "payload": {"url": URL}},
      "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "Y"}]},
     "param message[quick_replies] can only be sent with param message[text]"),
])
def test_quick_reply_refusals(sandbox: Server, content: dict, words: str) -> None:
    refused(post(sandbox, message(content)), words)


# --- 4. generic template ------------------------------------------------------------------------------------

def test_generic_template_limits(sandbox: Server) -> None:
    accepted(post(sandbox, generic(*[element()] * 10)))
    refused(post(sandbox, generic(*[element()] * 11)),
            "param message[attachment][payload][elements] must be an array of 1 to 10 elements, got 11")
    accepted(post(sandbox, generic(element("t" * 80, subtitle="s" * 80))))
    refused(post(sandbox, generic(element("t" * 81))),
            "Length of param message[attachment][payload][elements][0][title] must be at most 80 characters")
    refused(post(sandbox, generic(element(subtitle="s" * 81))),
            "Length of param message[attachment][payload][elements][0][subtitle] must be at most 80 characters")
    accepted(post(sandbox, generic(element(buttons=[button("web_url"), button(), button()]))))
    refused(post(sandbox, generic(element(buttons=[button()] * 4))),
            "param message[attachment][payload][elements][0][buttons] must be an array of 1 to 3 buttons, got 4")
    accepted(post(sandbox, generic(element(buttons=[button(title="b" * 20)]))))
    refused(post(sandbox, generic(element(buttons=[button(title="b" * 21)]))),
            "Length of param message[attachment][payload][elements][0][buttons][0][title] must be at most 20")
    assert len(sandbox.messages()) == 4


@pytest.mark.parametrize("fields,words", [
    ({"image_url": URL}, None),  # any one property besides title is enough
    ({"default_action": {"type": "web_url", "url": URL}}, None),
    ({"buttons": [button("web_url")]}, None),
    ({"title": "Only a title"}, "[elements][0] needs at least one property besides title"),
    ({"subtitle": "no title", "title": ""}, "[elements][0][title] must be a non-empty string"),
    ({"image_url": "not a url"}, "[elements][0][image_url] must be an http(s) URL"),
    ({"default_action": {"type": "web_url", "url": URL, "title": "Open"}},
     "[elements][0][default_action] cannot have a title"),
    ({"default_action": {"type": "postback", "payload": "P"}}, "[elements][0][default_action][type] must be web_url"),
    ({"buttons": [{"type": "phone_number", "title": "Call", "payload": "+15550100"}]},
     "[elements][0][buttons][0][type] must be web_url or postback, got 'phone_number'"),
    ({"buttons": [{"type": "web_url", "title": "Open"}]}, "[elements][0][buttons][0][url] must be an http(s) URL"),
    ({"buttons": [{"type": "postback", "title": "Go"}]}, "[elements][0][buttons][0][payload] must be a non-empty"),
    ({"buttons": []}, "[elements][0][buttons] must be an array of 1 to 3 buttons, got 0"),
])
def test_generic_element_rules(sandbox: Server, fields: dict, words: str | None) -> None:
    body = generic({"title": "Welcome!", **fields})
    if words is None:
        accepted(post(sandbox, body))
    else:
        refused(post(sandbox, body), "param message[attachment][payload]" + words)


def test_an_unknown_template_type_is_refused(sandbox: Server) -> None:
    refused(post(sandbox, template({"template_type": "receipt", "elements": []})),
            "param message[attachment][payload][template_type] must be one of button, generic, product")


# --- 5. button template -------------------------------------------------------------------------------------

def test_button_template_limits_count_characters_not_bytes(sandbox: Server) -> None:
    accepted(post(sandbox, button_template("é" * 640)))  # 640 characters, 1280 UTF-8 bytes
    refused(post(sandbox, button_template("é" * 641)),
            "Length of param message[attachment][payload][text] must be at most 640 characters, got 641")
    accepted(post(sandbox, button_template(buttons=3)))
    refused(post(sandbox, button_template(buttons=4)),
            "param message[attachment][payload][buttons] must be an array of 1 to 3 buttons, got 4")
    refused(post(sandbox, button_template(buttons=0)),
            "param message[attachment][payload][buttons] must be an array of 1 to 3 buttons, got 0")
    assert len(sandbox.messages()) == 2


# --- 6. product template ------------------------------------------------------------------------------------

def test_product_template_limits_on_facebook_login(sandbox: Server) -> None:
    accepted(post(sandbox, products(10)))
    refused(post(sandbox, products(11)),
            "param message[attachment][payload][elements] must be an array of 1 to 10 products, got 11")
    refused(post(sandbox, template({"template_type": "product", "elements": [{"id": ""}]})),
            "param message[attachment][payload][elements][0][id] must be a product id")


def test_product_template_is_refused_on_instagram_login(sandbox: Server) -> None:
    refused(post(sandbox, products(1), "instagram"),
            "product is not available with Instagram Login: the product template needs Facebook Login", "instagram")
    assert sandbox.messages() == []


# --- 7. sender actions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,words", [
    ({"payload": {"message_id": "m_1"}}, "param payload cannot be sent with sender_action typing_on"),
    ({"messaging_type": "RESPONSE"}, "param messaging_type cannot be sent with sender_action typing_on"),
    ({"notification_type": "REGULAR"}, "param notification_type cannot be sent with sender_action typing_on"),
    ({"message": {"text": "hi"}}, "Exactly one of param message or param sender_action"),
    ({"reply_to": {"mid": "m_1"}}, "param reply_to cannot be sent with a sender_action"),
])
def test_typing_requests_hold_only_recipient_and_sender_action(sandbox: Server, extra: dict, words: str) -> None:
    refused(post(sandbox, {"recipient": {"id": "IGSID"}, "sender_action": "typing_on", **extra}), words)


def test_reply_to_is_refused_on_reactions_too(sandbox: Server) -> None:
    body = {"recipient": {"id": "IGSID"}, "sender_action": "react", "payload": {"message_id": "m", "reaction": "love"},
            "reply_to": {"mid": "m"}}
    refused(post(sandbox, body), "param reply_to cannot be sent with a sender_action")


# --- 8. private replies -------------------------------------------------------------------------------------

def test_one_private_reply_per_comment(sandbox: Server) -> None:
    first = accepted(post(sandbox, private_reply("17858893269000001")))
    recipient = first["recipient_id"]
    assert recipient.isdigit() and len(recipient) == 16  # shaped like an IGSID, made up from the comment id
    error = refused(post(sandbox, private_reply("17858893269000001", "again")),
                    "A private reply has already been sent to comment 17858893269000001", subcode=None)
    assert "only one private reply can be sent per comment" in error["message"]
    accepted(post(sandbox, private_reply("17858893269000002")))
    shown = sandbox.get("/_sandbox/private_replies")
    assert shown["count"] == 2
    assert shown["private_replies"][0] == {"account": PAGE_ACCOUNT, "comment_id": "17858893269000001",
                                           "recipient_id": recipient, "message_id": first["message_id"],
                                           "received_at": shown["private_replies"][0]["received_at"]}
    seen = sandbox.messages()
    assert [m["kind"] for m in seen] == ["private_reply"] * 2 and seen[0]["recipient_id"] == recipient
    assert seen[0]["body"] == private_reply("17858893269000001")
    # the commenter's id is the same every time; clearing the sandbox forgets the answered comments
    requests.delete(f"{sandbox.url}/_sandbox/messages", timeout=5).raise_for_status()
    assert sandbox.get("/_sandbox/private_replies") == {"count": 0, "private_replies": []}
    assert accepted(post(sandbox, private_reply("17858893269000001")))["recipient_id"] == recipient


def test_private_replies_on_both_logins(sandbox: Server) -> None:
    accepted(post(sandbox, private_reply("C-ig"), "instagram"))
    accepted(post(sandbox, private_reply("C-fb"), "facebook"))
    assert sandbox.get("/_sandbox/private_replies", account=IG_ACCOUNT)["count"] == 1


def test_an_invalid_comment_answers_2534025(sandbox: Server) -> None:
    for login in LOGINS:
        error = refused(post(sandbox, private_reply("INVALID_17858893269"), login),
                        "This comment is invalid for a private reply", login, subcode=2534025)
        assert error["message"] == "(#100) This comment is invalid for a private reply."
    assert sandbox.get("/_sandbox/private_replies")["count"] == 0


@pytest.mark.parametrize("body,words", [
    ({"recipient": {"comment_id": "C1"}, "message": {"attachment": {"type": "image", "payload": {"url": URL}}}},
     "A private reply (param recipient[comment_id]) can only hold text"),
    ({"recipient": {"comment_id": "C1"}, "message": quick_replies()["message"]}, "can only hold text"),
    ({"recipient": {"comment_id": "C1", "id": "IGSID"}, "message": {"text": "hi"}},
     "param recipient must hold one of id or comment_id, not both"),
    ({"recipient": {"comment_id": ""}, "message": {"text": "hi"}},
     "param recipient[comment_id] must be a non-empty string"),
    ({"recipient": {"comment_id": "C1"}, "sender_action": "typing_on"}, "a sender_action needs param recipient[id]"),
    ({"recipient": {"comment_id": "C1"}, "message": {"text": "hi"}, "reply_to": {"mid": "m"}},
     "param reply_to cannot be sent with param recipient[comment_id]"),
])
def test_private_reply_refusals(sandbox: Server, body: dict, words: str) -> None:
    refused(post(sandbox, body), words)
    assert sandbox.get("/_sandbox/private_replies")["count"] == 0


def test_faults_for_a_comment_are_scripted_by_its_id(sandbox: Server) -> None:
    requests.post(f"{sandbox.url}/_sandbox/faults", json={"recipient": "C9", "faults": [{"code": 2}]},
                  timeout=5).raise_for_status()
    assert error_of(post(sandbox, private_reply("C9")), 500, "OAuthException")["code"] == 2
    accepted(post(sandbox, private_reply("C9")))  # the failed call answered nothing
    assert error_of(post(sandbox, private_reply("ERR_100_2534025")), 400, "OAuthException")["error_subcode"] \
        == 2534025


def test_a_lost_answer_still_used_up_the_comment(sandbox: Server) -> None:
    requests.post(f"{sandbox.url}/_sandbox/faults", json={"recipient": "C8", "faults": [{"hang": True}]},
                  timeout=5).raise_for_status()
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.ReadTimeout)):
        post(sandbox, private_reply("C8"))
    # Meta took it: sending again to find out gets the one-per-comment refusal, not a second message
    refused(post(sandbox, private_reply("C8")), "already been sent to comment C8", subcode=None)
    assert sandbox.get("/_sandbox/private_replies")["count"] == 1


def test_private_replies_have_an_hourly_budget_of_their_own() -> None:
    with serve(SandboxConfig(tokens=TOKENS, private_reply_limit=3)) as server:
        assert server.get("/_sandbox/config")["private_reply_limit"] == 3
        for i in range(3):
            accepted(post(server, private_reply(f"C{i}")))
        answer = post(server, private_reply("C3"))
        error = error_of(answer, 429, "OAuthException")
        assert error["code"] == 613 and "error_subcode" not in error
        assert "Private replies: 3 calls per hour per account" in error["message"]
        assert 1100 <= int(answer.headers["Retry-After"]) <= 1200  # one call comes back every 3600/3 s
        assert json.loads(answer.headers["X-Business-Use-Case-Usage"])[PAGE_ACCOUNT][0]["call_count"] == 100
        accepted(post(server, message({"text": "ordinary sends are not held"})))
        accepted(post(server, private_reply("C3"), "instagram"))  # another account, another budget
        assert server.get("/_sandbox/private_replies")["count"] == 4
        assert server.get("/_sandbox/stats")["by_account"][PAGE_ACCOUNT]["throttled"] == 1


def test_the_private_reply_budget_is_750_an_hour_by_default(sandbox: Server) -> None:
    config = sandbox.get("/_sandbox/config")
    assert (config["private_reply_limit"], config["private_replies_per_hour"]) == (None, 750)
    bucket = Bucket(750, period=3600)
    assert all(bucket.take() == 0 for _ in range(750))
    assert bucket.take() == pytest.approx(3600 / 750, rel=0.01)  # the 751st waits for one to come back


def test_the_private_reply_limit_is_a_live_setting_and_a_flag(sandbox: Server) -> None:
    try:
        assert sandbox_config(sandbox, private_reply_limit=1)["private_reply_limit"] == 1
        accepted(post(sandbox, private_reply("L1")))
        assert error_of(post(sandbox, private_reply("L2")), 429, "OAuthException")["code"] == 613
        assert requests.post(f"{sandbox.url}/_sandbox/config", json={"private_reply_limit": 0},
                             timeout=5).status_code == 400
    finally:
        sandbox_config(sandbox, private_reply_limit=None)
    server = start("--token", PAGE_TOKEN, "--private-reply-limit", "20")
    try:
        assert server.get("/_sandbox/config")["private_reply_limit"] == 20
    finally:
        stop(server)


# --- 9. message tags ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE",
                                 "CUSTOMER_FEEDBACK", "human_agent"])
def test_tags_other_than_human_agent_are_not_available_for_instagram(sandbox: Server, tag: str) -> None:
    for login in LOGINS:
        body = message({"text": "update"}, messaging_type="MESSAGE_TAG", tag=tag)
        refused(post(sandbox, body, login), f"param tag '{tag}' is not available for Instagram: HUMAN_AGENT is "
                                            "the only message tag", login, subcode=2018338)


def test_a_tag_needs_messaging_type_message_tag(sandbox: Server) -> None:
    refused(post(sandbox, message({"text": "hi"}, messaging_type="RESPONSE", tag="HUMAN_AGENT")),
            "param tag needs messaging_type MESSAGE_TAG", subcode=2018338)
    refused(post(sandbox, message({"text": "hi"}, messaging_type="MESSAGE_TAG")),
            "param tag is required when messaging_type is MESSAGE_TAG", subcode=2018338)


# --- 10. reply_to -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply_to", ["m_1", {}, {"mid": ""}, {"mid": 5}, None])
def test_reply_to_must_be_an_object_with_a_mid(sandbox: Server, reply_to: Any) -> None:
    refused(post(sandbox, message({"text": "hi"}, reply_to=reply_to)), "param reply_to must be an object with a "
                                                                        "non-empty mid")


# --- 11. attachment upload ----------------------------------------------------------------------------------

def upload(sandbox: Server, kind: str = "image", data: bytes = b"\x89PNG fake image", *, token: str = PAGE_TOKEN,
           account: str = PAGE_ACCOUNT, filename: str = "photo.png", reusable: bool = True,
           platform: str | None = "instagram") -> requests.Response:
    """Meta's multipart shape: message (JSON), platform, and the file in the part filedata."""
    payload: dict = {"is_reusable": True} if reusable else {}
    fields = {"message": json.dumps({"attachment": {"type": kind, "payload": payload}})}
    if platform is not None:
        fields["platform"] = platform
    return requests.post(f"{sandbox.url}/{VERSION}/{account}/message_attachments", data=fields,
                         files={"filedata": (filename, data, "application/octet-stream")},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)


def uploaded_id(answer: requests.Response) -> str:
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"attachment_id"} and answer.json()["attachment_id"].isdigit()
    return str(answer.json()["attachment_id"])


def test_upload_once_then_send_by_id_many_times(sandbox: Server) -> None:
    data = b"\x89PNG" + bytes(range(256)) * 40
    attachment_id = uploaded_id(upload(sandbox, data=data))
    body = message({"attachment": {"type": "image", "payload": {"attachment_id": attachment_id}}})
    for recipient in ("a", "b", "c"):
        accepted(post(sandbox, {**body, "recipient": {"id": recipient}}))
    accepted(post(sandbox, message({"attachments": [{"payload": {"attachment_id": attachment_id}},
                                                    {"type": "image", "payload": {"url": URL}}]})))
    shown = sandbox.get("/_sandbox/uploads")
    assert shown["count"] == 1
    record = shown["uploads"][attachment_id]
    assert (record["account"], record["type"], record["size"], record["sha256"]) == (
        PAGE_ACCOUNT, "image", len(data), hashlib.sha256(data).hexdigest())
    assert (record["filename"], record["is_reusable"], record["sends"], record["url"]) == ("photo.png", True, 4, None)
    assert sandbox.get("/_sandbox/uploads", account=IG_ACCOUNT) == {"count": 0, "uploads": {}}
    requests.delete(f"{sandbox.url}/_sandbox/messages", timeout=5).raise_for_status()
    assert sandbox.get("/_sandbox/uploads")["count"] == 0


@pytest.mark.parametrize("kind", ["video", "audio", "file"])
def test_each_media_type_uploads_and_sends(sandbox: Server, kind: str) -> None:
    attachment_id = uploaded_id(upload(sandbox, kind, b"media bytes", filename=f"a.{kind}"))
    accepted(post(sandbox, message({"attachment": {"type": kind, "payload": {"attachment_id": attachment_id}}})))
    assert sandbox.messages()[0]["send_class"] == ("media" if kind in ("video", "audio") else "text")


def test_upload_from_a_url_in_json(sandbox: Server) -> None:
    answer = requests.post(f"{sandbox.url}/{VERSION}/{PAGE_ACCOUNT}/message_attachments", timeout=5,
                           headers={"Authorization": f"Bearer {PAGE_TOKEN}"},
                           json={"platform": "instagram", "message": {"attachment": {
                               "type": "file", "payload": {"url": "https://cdn.example.com/menu.pdf",
                                                           "is_reusable": True}}}})
    record = sandbox.get("/_sandbox/uploads")["uploads"][uploaded_id(answer)]
    assert (record["type"], record["url"], record["size"], record["sha256"]) == (
        "file", "https://cdn.example.com/menu.pdf", None, None)


def test_uploads_are_refused_on_instagram_login(sandbox: Server) -> None:
    refused(upload(sandbox, token=IG_TOKEN, account=IG_ACCOUNT),
            "message_attachments is not available with Instagram Login", "instagram", subcode=None)
    assert sandbox.get("/_sandbox/uploads")["count"] == 0


def test_upload_size_limits(sandbox: Server) -> None:
    uploaded_id(upload(sandbox, "image", b"i" * 8_000_000))
    refused(upload(sandbox, "image", b"i" * 8_000_001),
            "Upload attachment failure: image attachments may be at most 8 MB (8000000 bytes), got 8000001 bytes",
            subcode=2018047)
    refused(upload(sandbox, "file", b"f" * 25_000_001, filename="big.pdf"),
            "file attachments may be at most 25 MB (25000000 bytes), got 25000001 bytes", subcode=2018047)
    assert sandbox.get("/_sandbox/uploads")["count"] == 1


@pytest.mark.parametrize("kwargs,words,subcode", [
    ({"platform": None}, "param platform must be instagram", 2534015),
    ({"platform": "messenger"}, "param platform must be instagram", 2534015),
    ({"kind": "sticker"}, "param message[attachment][type] must be one of ['audio', 'file', 'image', 'video']",
     2534015),
    ({"data": b""}, "the filedata part is empty", 2018047),
    ({"filename": "café.png"}, "the file name must be ASCII", 2018047),
])
def test_upload_refusals(sandbox: Server, kwargs: dict, words: str, subcode: int) -> None:
    refused(upload(sandbox, **kwargs), words, subcode=subcode)


def test_an_issued_id_is_sent_as_its_type_and_a_non_reusable_one_once(sandbox: Server) -> None:
    video = uploaded_id(upload(sandbox, "video", b"mp4"))
    refused(post(sandbox, message({"attachment": {"type": "image", "payload": {"attachment_id": video}}})),
            f"Attachment {video} was uploaded as video, not image", subcode=2018047)
    once = uploaded_id(upload(sandbox, "image", b"png", reusable=False))
    body = message({"attachment": {"type": "image", "payload": {"attachment_id": once}}})
    accepted(post(sandbox, body))
    refused(post(sandbox, body), f"Attachment {once} was uploaded without is_reusable", subcode=2018047)
    # ids the sandbox did not issue are taken on trust (real ids come from elsewhere)
    accepted(post(sandbox, message({"attachment": {"type": "image", "payload": {"attachment_id": "424242"}}})))


def test_other_methods_on_the_upload_edge_answer_graph_errors(sandbox: Server) -> None:
    answer = requests.get(f"{sandbox.url}/{VERSION}/{PAGE_ACCOUNT}/message_attachments", timeout=5,
                          headers={"Authorization": f"Bearer {PAGE_TOKEN}"})
    assert error_of(answer, 400, "GraphMethodException")["error_subcode"] == 33
    assert error_of(upload(sandbox, token="nope"), 400, "IGApiException")["code"] == 190
