"""Reading a Send API or upload request (JSON, form fields holding JSON, multipart) and checking it as Meta
documents it.

Written from Meta's docs (Meta's "Send a Message" page and the Instagram Platform pages; each rule names its
page), independently of ``schemas/`` so a mistake shared with igsend cannot pass both.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import BodyPartReader, web

from sandbox.errors import invalid

HTTP_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?", re.IGNORECASE)
MEDIA_TYPES = {"image", "video", "audio", "file"}
ATTACHMENT_TYPES = MEDIA_TYPES | {"MEDIA_SHARE", "like_heart", "template"}
SENDER_ACTIONS = {"react", "unreact", "typing_on", "typing_off", "mark_seen"}
MESSAGING_TYPES = {"RESPONSE", "UPDATE", "MESSAGE_TAG"}
MAX_TEXT_BYTES = 1000  # "Message text must be UTF-8 and be a 1000 bytes or less" (the seed)
PRIVATE_REPLY = "private_reply"  # the send class of a private reply: a budget of its own (sandbox.limits)
JSON_PARAMS = ("recipient", "message", "payload", "reply_to")  # form fields that hold JSON objects

# Several images in one message: Instagram Messaging "Send a Message" (updated 2026-07: "one or more images"),
# out of beta 2026-05-06: up to ten image attachments in message.attachments, each by url or attachment_id.
MAX_IMAGES = 10
# Quick replies: Instagram Messaging "Quick Replies" (at most 13, titles at most 20 characters, which Meta
# truncates silently: the sandbox refuses them so tests see igsend never sends one); the payload limit is
# Messenger's "Quick Replies" reference (1000 characters). Instagram Platform changelog, 2026-10-05:
# user_phone_number and user_email quick replies disabled for Instagram on all versions.
MAX_QUICK_REPLIES, MAX_QUICK_REPLY_TITLE, MAX_QUICK_REPLY_PAYLOAD = 13, 20, 1000
DISABLED_QUICK_REPLIES = {"user_phone_number", "user_email"}
# Templates: Instagram Messaging "Generic Template" (at most 10 elements; title and subtitle at most 80
# characters; at least one property besides title; at most 3 buttons, postback and web_url only;
# default_action is a URL button without title), "Button Template" (text at most 640 UTF-8 characters, 1 to 3
# buttons), Messenger "Product Template" (at most 10 products; Facebook Login only: it needs the catalog's Page).
# Button titles at most 20 characters and postback payloads at most 1000: Messenger's "Buttons" reference.
MAX_ELEMENTS, MAX_ELEMENT_TEXT, MAX_BUTTONS = 10, 80, 3
MAX_BUTTON_TITLE, MAX_POSTBACK_PAYLOAD, MAX_BUTTON_TEMPLATE_TEXT, MAX_PRODUCTS = 20, 1000, 640, 10
BUTTON_TYPES = ("web_url", "postback")
# Messaging type and tags (Instagram Messaging "Human Agent"; GRAPH_API_NOTES "Later kinds"): HUMAN_AGENT is
# the only tag available for Instagram; ACCOUNT_UPDATE, CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE,
# CUSTOMER_FEEDBACK and the other Messenger tags are not.
INSTAGRAM_TAGS = {"HUMAN_AGENT"}
# Attachment upload (Instagram Messaging "Upload Media for Instagram Messaging", updated 2026-04): image 8MB,
# audio, video and file 25MB. Meta writes "MB"; the sandbox takes the smaller reading (10^6 bytes) so that what
# it accepts, Meta accepts under either reading. File names must be ASCII (same page).
UPLOAD_LIMITS = {"image": 8_000_000, "video": 25_000_000, "audio": 25_000_000, "file": 25_000_000}


@dataclass
class UploadedFile:
    """The ``filedata`` part of a multipart request: only its size and digest are kept, never its bytes."""

    filename: str | None
    content_type: str | None
    size: int
    sha256: str


@dataclass
class ParsedRequest:
    token: str | None
    placement: str  # "header" | "query" | "form" ("form" = any body parameter)
    proof: str | None  # appsecret_proof, from the query or the body
    body: dict[str, Any]
    content_type: str
    file: UploadedFile | None = None  # a multipart part named filedata


@dataclass
class Checked:
    """What a valid Send API body is: for the budgets and for ``/_sandbox/messages``."""

    kind: str  # text, quick_replies, image, images, file, template_generic, typing_on, private_reply, ...
    send_class: str  # "text", "media" or PRIVATE_REPLY
    attachment_ids: list[tuple[str, str]] = field(default_factory=list)  # (type, id) sent by attachment_id
    comment_id: str | None = None  # a private reply's comment


async def read_request(request: web.Request) -> ParsedRequest:
    """Token, appsecret_proof and body from a JSON, form-encoded or multipart request."""
    token, placement = None, ""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential.strip():
        token, placement = credential.strip(), "header"
    elif request.query.get("access_token"):
        token, placement = request.query["access_token"], "query"
    proof = request.query.get("appsecret_proof")

    content_type, file = request.content_type, None
    if content_type == "application/json":
        body = _json_body(await request.read())
    elif content_type.startswith("multipart/"):
        fields, file = await _multipart(request)
        body = _form_body(fields)
    else:  # curl --data sends x-www-form-urlencoded, and Meta reads a missing type the same way
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The request body is not valid UTF-8", subcode=None) from None
        body = _form_body({k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()})

    # Credentials in the body are taken out of it so they are never stored or shown.
    body_token, body_proof = body.pop("access_token", None), body.pop("appsecret_proof", None)
    if token is None and isinstance(body_token, str) and body_token:
        token, placement = body_token, "form"
    if proof is None and isinstance(body_proof, str):
        proof = body_proof
    return ParsedRequest(token, placement, proof, body, content_type, file)


async def _multipart(request: web.Request) -> tuple[dict[str, str], UploadedFile | None]:
    """Text parts as fields; the ``filedata`` part streamed through a digest (a 25 MB upload is never held)."""
    fields: dict[str, str] = {}
    file = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or not part.name:
            continue
        if part.name == "filedata":
            digest, size = hashlib.sha256(), 0
            while chunk := await part.read_chunk(1 << 16):
                digest.update(chunk)
                size += len(chunk)
            file = UploadedFile(part.filename, part.headers.get("Content-Type"), size, digest.hexdigest())
        elif part.filename is None:
            fields[part.name] = await part.text()
    return fields, file


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise invalid("The request body is not valid JSON", subcode=None) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object", subcode=None)
    return body


def _form_body(fields: dict[str, str]) -> dict[str, Any]:
    """Form fields hold JSON for the object parameters (the seed: ``recipient={"id":"IGSID"}``)."""
    body: dict[str, Any] = {}
    for key, value in fields.items():
        if key in JSON_PARAMS:
            try:
                body[key] = json.loads(value)
            except ValueError:
                raise invalid(f"param {key} must be a JSON object", subcode=None) from None
        elif value.startswith('"'):  # the seed sends sender_action="unreact"
            try:
                body[key] = json.loads(value)
            except ValueError:
                body[key] = value
        else:
            body[key] = value
    return body


# --- the Send API body ------------------------------------------------------------------------------------

def validate(body: dict[str, Any], login: str = "instagram") -> Checked:
    """Raise Meta's code-100 error for a body Meta would refuse; else what the body is (:class:`Checked`)."""
    recipient = body.get("recipient")
    comment_id = _comment_id(recipient)
    if comment_id is None and (not isinstance(recipient, dict) or not isinstance(recipient.get("id"), str)
                               or not recipient["id"]):
        raise invalid("param recipient[id] must be a non-empty string", subcode=2018001)
    _validate_tag(body)

    message, action = body.get("message"), body.get("sender_action")
    if (message is None) == (action is None):
        raise invalid("Exactly one of param message or param sender_action is required")
    if action is not None:
        if comment_id is not None:
            raise invalid("param recipient[comment_id] is for a private reply (a text message); "
                          "a sender_action needs param recipient[id]")
        if "reply_to" in body:
            raise invalid("param reply_to cannot be sent with a sender_action: it is for message sends")
        _validate_sender_action(action, body)
        return Checked(action, "text")
    if "reply_to" in body:
        _validate_reply_to(body["reply_to"], comment_id)
    checked = _validate_message(message, login)
    if comment_id is not None:
        # Instagram Platform "Send a Private Reply to a Commenter": recipient.comment_id and message.text.
        if checked.kind != "text":
            raise invalid("A private reply (param recipient[comment_id]) can only hold text: param message "
                          "must be {\"text\": ...} without attachments, templates or quick replies")
        return Checked(PRIVATE_REPLY, PRIVATE_REPLY, comment_id=comment_id)
    return checked


def _comment_id(recipient: Any) -> str | None:
    """A private reply names the comment (``recipient: {"comment_id": ID}``) instead of the person."""
    if not isinstance(recipient, dict) or "comment_id" not in recipient:
        return None
    if "id" in recipient:
        raise invalid("param recipient must hold one of id or comment_id, not both")
    comment_id = recipient["comment_id"]
    if not isinstance(comment_id, str) or not comment_id:
        raise invalid("param recipient[comment_id] must be a non-empty string")
    return comment_id


def _validate_tag(body: dict[str, Any]) -> None:
    messaging_type, tag = body.get("messaging_type"), body.get("tag")
    if messaging_type is not None and messaging_type not in MESSAGING_TYPES:
        raise invalid(f"param messaging_type must be one of {sorted(MESSAGING_TYPES)}")
    if messaging_type == "MESSAGE_TAG":
        if not tag:
            raise invalid("param tag is required when messaging_type is MESSAGE_TAG", subcode=2018338)
        if not isinstance(tag, str) or tag not in INSTAGRAM_TAGS:
            raise invalid(f"param tag {tag!r} is not available for Instagram: HUMAN_AGENT is the only message "
                          "tag Instagram supports", subcode=2018338)
    elif tag is not None:
        raise invalid("param tag needs messaging_type MESSAGE_TAG", subcode=2018338)


def _validate_sender_action(action: Any, body: dict[str, Any]) -> None:
    if not isinstance(action, str) or action not in SENDER_ACTIONS:
        raise invalid(f"param sender_action must be one of {sorted(SENDER_ACTIONS)}")
    payload = body.get("payload")
    if action in ("react", "unreact"):
        if not isinstance(payload, dict) or not isinstance(payload.get("message_id"), str) \
                or not payload["message_id"]:
            raise invalid(f"param payload[message_id] is required for sender_action {action}")
        if action == "react" and not (isinstance(payload.get("reaction"), str) and payload["reaction"]):
            raise invalid("param payload[reaction] is required for sender_action react")
        return
    # Instagram Messaging "Sender Actions": typing_on, typing_off and mark_seen go in a request of their own
    # holding only recipient and sender_action.
    extra = sorted(set(body) - {"recipient", "sender_action"})
    if extra:
        raise invalid(f"param {extra[0]} cannot be sent with sender_action {action}: a {action} request holds "
                      "only recipient and sender_action")


def _validate_reply_to(reply_to: Any, comment_id: str | None) -> None:
    # Instagram changelog: reply_to {"mid"} on message sends, Facebook Login since 2025-12-19, Instagram Login
    # since 2026-09-21.
    if not isinstance(reply_to, dict) or not isinstance(reply_to.get("mid"), str) or not reply_to["mid"]:
        raise invalid("param reply_to must be an object with a non-empty mid: {\"mid\": MESSAGE-ID}")
    if comment_id is not None:
        raise invalid("param reply_to cannot be sent with param recipient[comment_id]: a private reply answers "
                      "a comment, not a message")


def _validate_message(message: Any, login: str) -> Checked:
    if not isinstance(message, dict):
        raise invalid("param message must be an object")
    if "attachment" in message and "attachments" in message:
        raise invalid("param message[attachments] cannot be sent with param message[attachment]: one image goes "
                      "in attachment, several in attachments")
    if sum(key in message for key in ("text", "attachment", "attachments")) != 1:
        raise invalid("param message must contain exactly one of text, attachment or attachments")
    if "quick_replies" in message and "text" not in message:
        raise invalid("param message[quick_replies] can only be sent with param message[text]")
    if "text" in message:
        text = message["text"]
        if not isinstance(text, str) or not text:
            raise invalid("param message[text] must be a non-empty string")
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise invalid(f"Length of param message[text] must be at most {MAX_TEXT_BYTES} UTF-8 bytes")
        if "quick_replies" in message:
            _validate_quick_replies(message["quick_replies"])
            return Checked("quick_replies", "text")
        return Checked("text", "text")
    if "attachments" in message:
        return _validate_images(message["attachments"])
    return _validate_attachment(message["attachment"], login)


def _validate_quick_replies(items: Any) -> None:
    where = "message[quick_replies]"
    for i, item in enumerate(_array(items, where, MAX_QUICK_REPLIES, "quick replies")):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"param {at} must be an object")
        content_type = item.get("content_type")
        if isinstance(content_type, str) and content_type in DISABLED_QUICK_REPLIES:
            raise invalid(f"param {at}[content_type] {content_type} was disabled for Instagram on 2026-10-05 "
                          "(all API versions): only content_type text is available")
        if content_type != "text":
            raise invalid(f"param {at}[content_type] must be text, got {content_type!r}")
        _text_param(item.get("title"), f"{at}[title]", MAX_QUICK_REPLY_TITLE,
                    " (Meta truncates longer titles silently; the sandbox refuses them)")
        _text_param(item.get("payload"), f"{at}[payload]", MAX_QUICK_REPLY_PAYLOAD)
        if "image_url" in item:
            _url_param(item["image_url"], f"{at}[image_url]")


def _validate_images(items: Any) -> Checked:
    where, ids = "message[attachments]", []
    for i, item in enumerate(_array(items, where, MAX_IMAGES, "image attachments")):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"param {at} must be an object")
        payload, kind = item.get("payload"), item.get("type")
        if kind is None and not (isinstance(payload, dict) and "attachment_id" in payload):
            raise invalid(f"param {at}[type] (image) is required for an attachment by url")
        if kind is not None and kind != "image":  # {"payload": {"attachment_id": ...}} alone is an image
            raise invalid(f"param {at}[type] must be image: only images can be sent several to a message, "
                          f"got {kind!r}")
        uploaded = _media_payload(payload, at, "image")
        if uploaded is not None:
            ids.append(("image", uploaded))
    return Checked("images", "text", ids)


def _validate_attachment(attachment: Any, login: str) -> Checked:
    if not isinstance(attachment, dict):
        attachment = {}
    kind = attachment.get("type")
    if not isinstance(kind, str) or kind not in ATTACHMENT_TYPES:
        raise invalid(f"param message[attachment][type] must be one of {sorted(ATTACHMENT_TYPES)}, "
                      f"got {kind!r}")
    payload = attachment.get("payload")
    if kind in MEDIA_TYPES:
        uploaded = _media_payload(payload, "message[attachment]", kind)
        return Checked(kind, send_class(kind), [(kind, uploaded)] if uploaded is not None else [])
    if kind == "MEDIA_SHARE" and not (isinstance(payload, dict) and payload.get("id")):
        raise invalid("param message[attachment][payload][id] (a post you own) is required for MEDIA_SHARE")
    if kind == "template":
        return _validate_template(payload, login)
    return Checked(kind, send_class(kind))


def _media_payload(payload: Any, at: str, kind: str) -> str | None:
    """A media payload holds a URL or the id of an attachment uploaded beforehand (message_attachments); the
    id, if that is what it holds."""
    if not isinstance(payload, dict):
        raise invalid(f"param {at}[payload] must be an object with url or attachment_id", subcode=2018047)
    url, uploaded = payload.get("url"), payload.get("attachment_id")
    if url is not None and uploaded is not None:
        raise invalid(f"param {at}[payload] must hold one of url or attachment_id, not both")
    if uploaded is not None:
        if isinstance(uploaded, bool) or not isinstance(uploaded, str | int) or uploaded == "":
            raise invalid(f"param {at}[payload][attachment_id] must be an attachment id", subcode=2018047)
        return str(uploaded)
    if not isinstance(url, str) or not HTTP_URL.fullmatch(url):
        raise invalid(f"param {at}[payload][url] must be an http(s) URL for {kind}", subcode=2018047)
    return None


def _validate_template(payload: Any, login: str) -> Checked:
    at = "message[attachment][payload]"
    if not isinstance(payload, dict):
        raise invalid(f"param {at} must be an object with template_type")
    template_type = payload.get("template_type")
    if template_type == "generic":
        for i, element in enumerate(_array(payload.get("elements"), f"{at}[elements]", MAX_ELEMENTS, "elements")):
            _validate_element(element, f"{at}[elements][{i}]")
    elif template_type == "button":
        _text_param(payload.get("text"), f"{at}[text]", MAX_BUTTON_TEMPLATE_TEXT)
        _validate_buttons(payload.get("buttons"), f"{at}[buttons]")
    elif template_type == "product":
        if login != "facebook":
            raise invalid(f"param {at}[template_type] product is not available with Instagram Login: the "
                          "product template needs Facebook Login (the Page token of the catalog's Page)")
        for i, element in enumerate(_array(payload.get("elements"), f"{at}[elements]", MAX_PRODUCTS, "products")):
            if not isinstance(element, dict) or not isinstance(element.get("id"), str) or not element["id"]:
                raise invalid(f"param {at}[elements][{i}][id] must be a product id (a non-empty string)")
    else:
        raise invalid(f"param {at}[template_type] must be one of button, generic, product, got {template_type!r}")
    return Checked(f"template_{template_type}", "text")


def _validate_element(element: Any, at: str) -> None:
    if not isinstance(element, dict):
        raise invalid(f"param {at} must be an object")
    _text_param(element.get("title"), f"{at}[title]", MAX_ELEMENT_TEXT)
    if "subtitle" in element:
        _text_param(element["subtitle"], f"{at}[subtitle]", MAX_ELEMENT_TEXT)
    if "image_url" in element:
        _url_param(element["image_url"], f"{at}[image_url]")
    if "default_action" in element:
        action = element["default_action"]
        if not isinstance(action, dict) or action.get("type") != "web_url":
            raise invalid(f"param {at}[default_action][type] must be web_url")
        if "title" in action:
            raise invalid(f"param {at}[default_action] cannot have a title (a URL button without title)")
        _url_param(action.get("url"), f"{at}[default_action][url]")
    if "buttons" in element:
        _validate_buttons(element["buttons"], f"{at}[buttons]")
    if not any(key in element for key in ("subtitle", "image_url", "default_action", "buttons")):
        raise invalid(f"param {at} needs at least one property besides title: subtitle, image_url, "
                      "default_action or buttons")


def _validate_buttons(buttons: Any, where: str) -> None:
    for i, button in enumerate(_array(buttons, where, MAX_BUTTONS, "buttons")):
        at = f"{where}[{i}]"
        if not isinstance(button, dict):
            raise invalid(f"param {at} must be an object")
        kind = button.get("type")
        if not isinstance(kind, str) or kind not in BUTTON_TYPES:
            raise invalid(f"param {at}[type] must be web_url or postback, got {kind!r}")
        _text_param(button.get("title"), f"{at}[title]", MAX_BUTTON_TITLE)
        if kind == "web_url":
            _url_param(button.get("url"), f"{at}[url]")
        else:
            _text_param(button.get("payload"), f"{at}[payload]", MAX_POSTBACK_PAYLOAD)


def _array(value: Any, where: str, limit: int, what: str) -> list[Any]:
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise invalid(f"param {where} must be an array of 1 to {limit} {what}, got {got}")
    return value


def _text_param(value: Any, where: str, limit: int, note: str = "") -> None:
    """Meta counts these limits in characters (the button template's "640 UTF-8 characters" too), not bytes."""
    if not isinstance(value, str) or not value:
        raise invalid(f"param {where} must be a non-empty string")
    if len(value) > limit:
        raise invalid(f"Length of param {where} must be at most {limit} characters, got {len(value)}{note}")


def _url_param(value: Any, where: str) -> None:
    if not isinstance(value, str) or not HTTP_URL.fullmatch(value):
        raise invalid(f"param {where} must be an http(s) URL")


def send_class(attachment_type: str) -> str:
    """Meta's rate-limit page budgets "audio or video" at 10/s and text, links, reactions and stickers at the
    login kind's larger rate; it names images (GIFs are images), files, shared posts and templates in neither
    class. They ride in the text class here, as igsend's worker counts them (schemas.SEND_CLASS)."""
    return "media" if attachment_type in ("audio", "video") else "text"


# --- the attachment upload body ---------------------------------------------------------------------------

@dataclass
class Upload:
    kind: str  # image, video, audio or file
    url: str | None  # uploaded from a URL, else from the filedata part
    is_reusable: bool


def check_upload(body: dict[str, Any], file: UploadedFile | None) -> Upload:
    """``POST /{PAGE-ID}/message_attachments`` (Instagram Messaging "Upload Media for Instagram Messaging"):
    ``platform=instagram``, ``message={"attachment": {"type", "payload": {"is_reusable": true, "url"?}}}`` and
    the file in the multipart part ``filedata`` (or ``payload.url``)."""
    if body.get("platform") != "instagram":
        raise invalid(f"param platform must be instagram, got {body.get('platform')!r}")
    message = body.get("message")
    attachment = message.get("attachment") if isinstance(message, dict) else None
    if not isinstance(attachment, dict):
        attachment = {}
    kind = attachment.get("type")
    if not isinstance(kind, str) or kind not in MEDIA_TYPES:
        raise invalid(f"param message[attachment][type] must be one of {sorted(MEDIA_TYPES)}, got {kind!r}")
    payload = attachment.get("payload", {})
    if not isinstance(payload, dict):
        raise invalid("param message[attachment][payload] must be an object")
    url = payload.get("url")
    if (url is None) == (file is None):
        raise invalid("Send the file in the multipart part filedata or its URL in param "
                      "message[attachment][payload][url], one of them", subcode=2018047)
    if url is not None:
        if not isinstance(url, str) or not HTTP_URL.fullmatch(url):
            raise invalid("param message[attachment][payload][url] must be an http(s) URL", subcode=2018047)
    elif file is not None:
        limit = UPLOAD_LIMITS[kind]
        if file.size == 0:
            raise invalid("Upload attachment failure: the filedata part is empty", subcode=2018047)
        if file.size > limit:
            raise invalid(f"Upload attachment failure: {kind} attachments may be at most {limit // 1_000_000} MB "
                          f"({limit} bytes), got {file.size} bytes", subcode=2018047)
        if file.filename is not None and not file.filename.isascii():
            raise invalid(f"Upload attachment failure: the file name must be ASCII, got {file.filename!r}",
                          subcode=2018047)
    return Upload(kind, url, payload.get("is_reusable") in (True, "true"))
