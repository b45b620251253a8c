"""Reading a Send API request (JSON, form fields holding JSON, multipart) and checking it as Meta documents it.

Written from Meta's docs (Meta's "Send a Message" page and the Instagram Platform pages),
independently of ``schemas/`` so a mistake shared with igsend cannot pass both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from sandbox.errors import invalid

HTTP_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?", re.IGNORECASE)
MEDIA_TYPES = {"image", "video", "audio", "file"}
ATTACHMENT_TYPES = MEDIA_TYPES | {"MEDIA_SHARE", "like_heart"}
SENDER_ACTIONS = {"react", "unreact", "typing_on", "typing_off", "mark_seen"}
MESSAGING_TYPES = {"RESPONSE", "UPDATE", "MESSAGE_TAG"}
MAX_TEXT_BYTES = 1000  # "Message text must be UTF-8 and be a 1000 bytes or less" (the seed)


@dataclass
class ParsedRequest:
    token: str | None
    placement: str  # "header" | "query" | "form" ("form" = any body parameter)
    proof: str | None  # appsecret_proof, from the query or the body
    body: dict[str, Any]
    content_type: str


async def read_request(request: web.Request) -> ParsedRequest:
    """Token, appsecret_proof and body from a JSON, form-encoded or multipart request."""
    token, placement = None, ""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential.strip():
        token, placement = credential.strip(), "header"
    elif request.query.get("access_token"):
        token, placement = request.query["access_token"], "query"
    proof = request.query.get("appsecret_proof")

    content_type = request.content_type
    if content_type == "application/json":
        body = _json_body(await request.read())
    elif content_type.startswith("multipart/"):
        body = _form_body({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
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
    return ParsedRequest(token, placement, proof, body, content_type)


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
        if key in ("recipient", "message", "payload"):
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


def validate(body: dict[str, Any]) -> str:
    """Raise Meta's code-100 error for a body Meta would refuse; return the send class, "text" or "media"."""
    recipient = body.get("recipient")
    if not isinstance(recipient, dict) or not isinstance(recipient.get("id"), str) or not recipient["id"]:
        raise invalid("param recipient[id] must be a non-empty string", subcode=2018001)
    messaging_type = body.get("messaging_type")
    if messaging_type is not None and messaging_type not in MESSAGING_TYPES:
        raise invalid(f"param messaging_type must be one of {sorted(MESSAGING_TYPES)}")
    if messaging_type == "MESSAGE_TAG" and not body.get("tag"):
        raise invalid("param tag is required when messaging_type is MESSAGE_TAG", subcode=2018338)

    message, action = body.get("message"), body.get("sender_action")
    if (message is None) == (action is None):
        raise invalid("Exactly one of param message or param sender_action is required")
    if action is not None:
        _validate_sender_action(action, body.get("payload"))
        return "text"
    if not isinstance(message, dict):
        raise invalid("param message must be an object")
    if ("text" in message) == ("attachment" in message):
        raise invalid("param message must contain exactly one of text or attachment")
    if "text" in message:
        text = message["text"]
        if not isinstance(text, str) or not text:
            raise invalid("param message[text] must be a non-empty string")
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise invalid(f"Length of param message[text] must be at most {MAX_TEXT_BYTES} UTF-8 bytes")
        return "text"
    return _validate_attachment(message["attachment"])


def _validate_sender_action(action: Any, payload: Any) -> None:
    if action not in SENDER_ACTIONS:
        raise invalid(f"param sender_action must be one of {sorted(SENDER_ACTIONS)}")
    if action in ("react", "unreact"):
        if not isinstance(payload, dict) or not isinstance(payload.get("message_id"), str) \
                or not payload["message_id"]:
            raise invalid(f"param payload[message_id] is required for sender_action {action}")
        if action == "react" and not (isinstance(payload.get("reaction"), str) and payload["reaction"]):
            raise invalid("param payload[reaction] is required for sender_action react")


def _validate_attachment(attachment: Any) -> str:
    kind = attachment.get("type") if isinstance(attachment, dict) else None
    if kind not in ATTACHMENT_TYPES:
        raise invalid(f"param message[attachment][type] must be one of {sorted(ATTACHMENT_TYPES)}, "
                      f"got {kind!r}")
    payload = attachment.get("payload")
    if kind in MEDIA_TYPES:
        url = payload.get("url") if isinstance(payload, dict) else None
        uploaded = payload.get("attachment_id") if isinstance(payload, dict) else None
        if url is None and uploaded:  # an attachment uploaded beforehand (message_attachments)
            return send_class(kind)
        if not isinstance(url, str) or not HTTP_URL.fullmatch(url):
            raise invalid(f"param message[attachment][payload][url] must be an http(s) URL for {kind}",
                          subcode=2018047)
    elif kind == "MEDIA_SHARE" and not (isinstance(payload, dict) and payload.get("id")):
        raise invalid("param message[attachment][payload][id] (a post you own) is required for MEDIA_SHARE")
    return send_class(kind)


def send_class(attachment_type: str) -> str:
    """Meta's rate-limit page budgets "audio or video" at 10/s and text, links, reactions and stickers at the
    login kind's larger rate; it names images (GIFs are images), files and shared posts in neither class. They
    ride in the text class here, as igsend's worker counts them (schemas.SEND_CLASS)."""
    return "media" if attachment_type in ("audio", "video") else "text"
