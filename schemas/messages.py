"""The message contract: one marshmallow schema per kind, and the Graph API body each one becomes.

Rules come from Meta's "Send a Message" page and the Graph API notes; every rule lives here
once, so producers (before enqueueing), the HTTP API (for its OpenAPI document) and workers (for raw
``send_task`` bodies) all refuse the same things with the same words.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from igsend.core.errors import InvalidMessage as InvalidMessage  # re-exported: the contract's error
from schemas.fields import HttpUrl, Identifier, Str, Utf8Text

TEXT_MAX_BYTES = 1000

# Media formats Meta accepts (seed, "Limitations"); a URL whose path has an extension must use one of these.
IMAGE_FORMATS = ("png", "jpeg", "jpg", "gif")
GIF_FORMATS = ("gif",)
VIDEO_FORMATS = ("mp4", "ogg", "avi", "mov", "webm")
AUDIO_FORMATS = ("aac", "m4a", "wav", "mp4")

MEDIA_KINDS = ("image", "gif", "video", "audio")
KINDS = ("text", "link", "image", "gif", "video", "audio", "post", "sticker", "react", "unreact")

# Meta budgets the Send API per account in two classes: 300/s for text, links, reactions and stickers,
# 10/s for audio and video ("Messenger Platform rate limits"). Images and posts ride in the larger class.
SEND_CLASS = {kind: "media" if kind in ("video", "audio") else "text" for kind in KINDS}

# The seed documents "love"; Instagram-Login accounts also take any single emoji (since 2025-12).
DEFAULT_REACTION = "love"


def _is_emoji(value: str) -> bool:
    # An emoji is a short run of symbol code points, optionally joined (ZWJ) or styled (variation selectors,
    # skin tones); this accepts the emoji users send without pulling in an emoji database.
    if not 1 <= len(value) <= 12:
        return False
    joiners = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}
    has_symbol = False
    for char in value:
        code = ord(char)
        if code in joiners or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
            continue
        if code >= 0x1F000 or 0x2190 <= code <= 0x2BFF or 0x3030 <= code <= 0x303D or code in (0x00A9, 0x00AE):
            has_symbol = True
            continue
        return False
    return has_symbol


class MessageSchema(Schema):
    """Fields every kind shares. Unknown fields are refused, so a typo is never silently dropped."""

    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, metadata={"description": "message kind", "enum": list(KINDS)})
    recipient = Identifier(required=True, what="Instagram-scoped ID (IGSID)",
                           metadata={"description": "the recipient's Instagram-scoped ID"})
    account = Identifier(load_default="default", what="account name",
                         metadata={"description": "name of the sending account (a worker-side setting)"})
    idempotency_key = Str(load_default=None, allow_none=True, max_input=200,
                          metadata={"description": "same key + account within the window = same job"})

    @validates_schema
    def _key_is_printable(self, data: dict[str, Any], **kwargs: Any) -> None:
        key = data.get("idempotency_key")
        if key is not None and (not key or not key.isascii() or not key.isprintable()):
            raise ValidationError("must be 1-200 printable ASCII characters", "idempotency_key")


class TextSchema(MessageSchema):
    text = Utf8Text(required=True, max_bytes=TEXT_MAX_BYTES, metadata={"description": "UTF-8, at most 1000 bytes"})


class LinkSchema(MessageSchema):
    url = HttpUrl(required=True, metadata={"description": "an http(s) URL sent as the message text"})

    @validates_schema
    def _fits_in_text(self, data: dict[str, Any], **kwargs: Any) -> None:
        size = len(data.get("url", "").encode("utf-8"))
        if size > TEXT_MAX_BYTES:
            raise ValidationError(f"must be at most {TEXT_MAX_BYTES} UTF-8 bytes (got {size})", "url")


def _media_schema(kind: str, formats: tuple[str, ...], label: str) -> type[MessageSchema]:
    url = HttpUrl(required=True, extensions=formats, media=label,
                  metadata={"description": f"public http(s) URL of the {label} ({', '.join(formats)})"})
    return type(f"{kind.capitalize()}Schema", (MessageSchema,), {"url": url})


ImageSchema = _media_schema("image", IMAGE_FORMATS, "image")
GifSchema = _media_schema("gif", GIF_FORMATS, "gif")
VideoSchema = _media_schema("video", VIDEO_FORMATS, "video")
AudioSchema = _media_schema("audio", AUDIO_FORMATS, "audio")


class PostSchema(MessageSchema):
    post_id = Identifier(required=True, what="post id", metadata={"description": "id of a post the account owns"})


class StickerSchema(MessageSchema):
    pass


class UnreactSchema(MessageSchema):
    message_id = Identifier(required=True, what="message id", pattern=r"[A-Za-z0-9_.=+/\-]+", max_length=512,
                            metadata={"description": "id of the message to (un)react to"})


class ReactSchema(UnreactSchema):
    reaction = Str(load_default=DEFAULT_REACTION, max_input=32,
                   metadata={"description": "'love' (documented) or a single emoji (Instagram Login)"})

    @validates_schema
    def _known_reaction(self, data: dict[str, Any], **kwargs: Any) -> None:
        reaction = data.get("reaction")
        if reaction is not None and reaction != DEFAULT_REACTION and not _is_emoji(reaction):
            raise ValidationError(f"must be 'love' or a single emoji (got {reaction[:20]!r})", "reaction")


SCHEMAS: dict[str, type[MessageSchema]] = {
    "text": TextSchema, "link": LinkSchema, "image": ImageSchema, "gif": GifSchema, "video": VideoSchema,
    "audio": AudioSchema, "post": PostSchema, "sticker": StickerSchema, "react": ReactSchema,
    "unreact": UnreactSchema,
}
_INSTANCES = {kind: schema() for kind, schema in SCHEMAS.items()}


def load_message(document: Any) -> dict[str, Any]:
    """Validate a message document and return it normalised (defaults filled in, ``None`` keys dropped).

    Raises :class:`InvalidMessage` naming each offending field and rule.
    """
    if not isinstance(document, dict):
        raise InvalidMessage({"_schema": [f"a message must be a JSON object (got {type(document).__name__})"]})
    kind = document.get("kind")
    if kind is None:
        raise InvalidMessage({"kind": ["is required"]})
    if not isinstance(kind, str) or kind not in _INSTANCES:
        shown = kind[:30] if isinstance(kind, str) else type(kind).__name__
        raise InvalidMessage({"kind": [f"must be one of {', '.join(KINDS)} (got {shown!r})"]})
    try:
        loaded = _INSTANCES[kind].load(document)
    except ValidationError as exc:
        raise InvalidMessage(_rename_unknown(exc.normalized_messages())) from None
    return {k: v for k, v in loaded.items() if v is not None}


def _rename_unknown(messages: dict[str, Any]) -> dict[str, Any]:
    return {field: (["is not a field of this kind"] if msgs == ["Unknown field."] else msgs)
            for field, msgs in messages.items()}


def graph_body(message: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /{version}/{account}/messages`` for a validated message."""
    kind = message["kind"]
    body: dict[str, Any] = {"recipient": {"id": message["recipient"]}}
    if kind in ("react", "unreact"):
        body["sender_action"] = kind
        body["payload"] = {"message_id": message["message_id"]}
        if kind == "react":
            body["payload"]["reaction"] = message.get("reaction", DEFAULT_REACTION)
        return body
    if kind == "text":
        content: dict[str, Any] = {"text": message["text"]}
    elif kind == "link":
        content = {"text": message["url"]}
    elif kind in MEDIA_KINDS:
        media_type = "image" if kind == "gif" else kind  # Meta sends GIFs as images
        content = {"attachment": {"type": media_type, "payload": {"url": message["url"]}}}
    elif kind == "post":
        content = {"attachment": {"type": "MEDIA_SHARE", "payload": {"id": message["post_id"]}}}
    else:  # sticker
        content = {"attachment": {"type": "like_heart"}}
    body["message"] = content
    return body
