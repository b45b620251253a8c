"""The message contract: one marshmallow schema per kind, and the Graph API body each one becomes.

Rules come from Meta's "Send a Message" page and the Graph API notes; every rule lives here
once, so producers (before enqueueing), the HTTP API (for its OpenAPI document) and workers (for raw
``send_task`` bodies) all refuse the same things with the same words.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates, validates_schema

from igsend.core.errors import InvalidMessage as InvalidMessage  # re-exported: the contract's error
from igsend.core.lanes import PRIORITIES
from schemas.fields import (
    Chars,
    HttpUrl,
    Identifier,
    PastMoment,
    SendAt,
    Str,
    StrictBoolean,
    Utf8Text,
    count_between,
)

TEXT_MAX_BYTES = 1000

# Media formats Meta accepts (seed, "Limitations"); a URL whose path has an extension must use one of these.
IMAGE_FORMATS = ("png", "jpeg", "jpg", "gif")
GIF_FORMATS = ("gif",)
VIDEO_FORMATS = ("mp4", "ogg", "avi", "mov", "webm")
AUDIO_FORMATS = ("aac", "m4a", "wav", "mp4")

FILE_FORMATS = ("pdf",)  # "Send audio, video or file" (Instagram Platform, 2025-12-19): PDF, 25 MB

MEDIA_KINDS = ("image", "gif", "video", "audio", "file")
#: The seed's kinds ("Send a Message"), then the later ones (GRAPH_API_NOTES.md, "Later kinds, as of 2026-12").
SEED_KINDS = ("text", "link", "image", "gif", "video", "audio", "post", "sticker", "react", "unreact")
SENDER_ACTIONS = ("typing_on", "typing_off", "mark_seen")
KINDS = (*SEED_KINDS, "images", "file", "quick_replies", "generic_template", "button_template",
         "product_template", *SENDER_ACTIONS, "private_reply")
#: Kinds Meta offers only to Facebook-Login (Page-linked) accounts: refused for Instagram-Login ones.
FACEBOOK_LOGIN_ONLY = ("product_template",)

# Meta budgets the Send API per account in classes: the login kind's larger rate for text, links, reactions
# and stickers, 10/s for audio and video ("Messenger Platform rate limits"); images, files, posts and templates,
# which Meta names in neither class, ride in the larger one. Private replies have their own: 750 per hour.
SEND_CLASS = {kind: "media" if kind in ("video", "audio") else "private_reply" if kind == "private_reply"
              else "text" for kind in KINDS}

#: The one message tag Instagram accepts (sent as messaging_type MESSAGE_TAG): human replies within 7 days of the
#: person's message; needs Meta's Human Agent permission. Messenger's other tags are not available on Instagram.
HUMAN_AGENT = "HUMAN_AGENT"
MESSENGER_ONLY_TAGS = ("ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "CUSTOMER_FEEDBACK")

# Limits of the later kinds (GRAPH_API_NOTES.md "Later kinds"; Meta's quick-replies, generic- and button-template
# and buttons references).
MAX_IMAGES = 10
MAX_QUICK_REPLIES = 13
QUICK_REPLY_TITLE_CHARS = 20
PAYLOAD_CHARS = 1000
DISABLED_QUICK_REPLIES = ("user_phone_number", "user_email")  # disabled for Instagram on 2026-10-05
MAX_ELEMENTS = 10
ELEMENT_TEXT_CHARS = 80
MAX_BUTTONS = 3
BUTTON_TITLE_CHARS = 20
BUTTON_TEXT_CHARS = 640
MAX_PRODUCTS = 10

#: An idempotency key: 1-200 printable ASCII characters (the header Idempotency-Key of the HTTP API too).
MAX_IDEMPOTENCY_KEY = 200
IDEMPOTENCY_KEY_PATTERN = "^[ -~]*$"

# The seed documents "love"; Instagram-Login accounts also take any single emoji (since 2025-12).
DEFAULT_REACTION = "love"


#: What an emoji is made of: symbol code points, optionally joined (ZWJ), styled (variation selectors, skin
#: tones) or tagged; ranges of code points, first and last.
EMOJI_JOINERS = ((0x200D, 0x200D), (0x20E3, 0x20E3), (0xFE0E, 0xFE0F), (0x1F3FB, 0x1F3FF), (0xE0020, 0xE007F))
EMOJI_SYMBOLS = ((0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x2190, 0x2BFF), (0x3030, 0x303D), (0x1F000, 0x10FFFF))
MAX_EMOJI_CHARS = 12


def _in(ranges: tuple[tuple[int, int], ...], code: int) -> bool:
    return any(low <= code <= high for low, high in ranges)


def _is_emoji(value: str) -> bool:
    # An emoji is a short run of symbol code points, optionally joined (ZWJ) or styled (variation selectors,
    # skin tones); this accepts the emoji users send without pulling in an emoji database.
    if not 1 <= len(value) <= MAX_EMOJI_CHARS:
        return False
    has_symbol = False
    for char in value:
        code = ord(char)
        if _in(EMOJI_JOINERS, code):
            continue
        if _in(EMOJI_SYMBOLS, code):
            has_symbol = True
            continue
        return False
    return has_symbol


def _char_class(ranges: tuple[tuple[int, int], ...], *, minus: tuple[tuple[int, int], ...] = ()) -> str:
    """A regular-expression class of ``ranges`` less ``minus``, its characters written as themselves."""
    spans: list[tuple[int, int]] = []
    for low, high in ranges:
        for cut_low, cut_high in sorted(minus):
            if cut_low > high or cut_high < low:
                continue
            if low < cut_low:
                spans.append((low, cut_low - 1))
            low = cut_high + 1
        if low <= high:
            spans.append((low, high))
    return "[" + "".join(chr(low) if low == high else f"{chr(low)}-{chr(high)}" for low, high in spans) + "]"


#: The reactions ``_is_emoji`` takes, as a pattern: joiners, one symbol, then symbols and joiners (and 'love').
REACTION_PATTERN = (f"^(?:love|{_char_class(EMOJI_JOINERS)}*{_char_class(EMOJI_SYMBOLS, minus=EMOJI_JOINERS)}"
                    f"{_char_class(EMOJI_SYMBOLS + EMOJI_JOINERS)}*)$")


class BaseSchema(Schema):
    """Fields every document shares. Unknown fields are refused, so a typo is never silently dropped."""

    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, metadata={"description": "message kind", "enum": list(KINDS)})
    account = Identifier(load_default="default", what="account name",
                         metadata={"description": "name of the sending account (a worker-side setting)"})
    idempotency_key = Str(load_default=None, allow_none=True, max_input=MAX_IDEMPOTENCY_KEY,
                          metadata={"description": "same key + account within the window = same job",
                                    "minLength": 1, "pattern": IDEMPOTENCY_KEY_PATTERN})
    send_at = SendAt(metadata={"description": "when to send: ISO 8601 with a time zone, or Unix seconds; at most "
                               "a year ahead; a time past means now. Status `scheduled` until then",
                               "example": "2026-12-01T09:00:00Z"})
    priority = fields.String(
        error_messages={"invalid": "must be normal or bulk"},
        metadata={"description": "`normal` (the default: replies) or `bulk` (campaigns): an account's normal "
                                 "messages never wait behind its bulk ones", "enum": list(PRIORITIES)})

    @validates("priority")
    def _priority_is_known(self, value: str, **kwargs: Any) -> None:
        if value not in PRIORITIES:
            raise ValidationError(f"must be normal or bulk (got {value!r})")

    @validates_schema
    def _key_is_printable(self, data: dict[str, Any], **kwargs: Any) -> None:
        key = data.get("idempotency_key")
        if key is not None and (not key or not key.isascii() or not key.isprintable()):
            raise ValidationError(f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters", "idempotency_key")


class MessageSchema(BaseSchema):
    """A document addressed to a person by IGSID: every kind but private replies."""

    recipient = Identifier(required=True, what="Instagram-scoped ID (IGSID)",
                           metadata={"description": "the recipient's Instagram-scoped ID"})
    last_user_message_at = PastMoment(metadata={
        "description": "when the person last wrote to the account (ISO 8601 with a time zone, or Unix seconds), for "
                       "the 24-hour window when igsend's webhooks do not know it", "example": "2026-12-03T08:10:00Z"})
    ordered = StrictBoolean(metadata={"description": "POST it only after the account's earlier ordered messages to "
                                                    "this recipient are delivered, dead or cancelled"})


def _message_id(description: str, **kwargs: Any) -> Identifier:
    return Identifier(what="message id", pattern=r"[A-Za-z0-9_.=+/\-]+", max_length=512,
                      metadata={"description": description}, **kwargs)


class ContentSchema(MessageSchema):
    """A document that sends a message (not a sender action): it may carry a tag and quote a message."""

    tag = Str(max_input=64, metadata={
        "description": "HUMAN_AGENT: a person's reply within 7 days of the user's message (sent as messaging_type "
                       "MESSAGE_TAG; needs Meta's Human Agent permission)", "enum": [HUMAN_AGENT]})
    reply_to = _message_id("id of a message in the conversation this one replies to (sent as reply_to.mid)")

    @validates("tag")
    def _instagram_tag(self, value: str, **kwargs: Any) -> None:
        if value in MESSENGER_ONLY_TAGS:
            raise ValidationError(f"must be {HUMAN_AGENT}: Meta does not offer the {value} tag on Instagram")
        if value != HUMAN_AGENT:
            raise ValidationError(f"must be {HUMAN_AGENT}, the only message tag Instagram accepts (got {value[:40]!r})")


SOURCES = ("url", "attachment_id", "upload")
#: The OpenAPI document's form of a schema's own rules (its ``@validates_schema`` checks), which apispec cannot
#: read from the code: producers.api.openapi adds a schema's ``OPENAPI_RULES`` to its component.
ONE_SOURCE = {"oneOf": [{"required": [source]} for source in SOURCES]}


def _one_source(data: dict[str, Any]) -> None:
    """A media item is sent by ``url``, by an ``attachment_id`` Meta gave before, or as a local file a producer
    staged (``upload``): exactly one of them."""
    given = [source for source in SOURCES if source in data]
    if not given:
        raise ValidationError("one of url or attachment_id is required", "url")
    if len(given) > 1:
        raise ValidationError(f"give {' or '.join(given)}, not both", given[-1])


def _attachment_id(**kwargs: Any) -> Identifier:
    return Identifier(what="attachment id", pattern=r"[0-9A-Za-z_\-]+", metadata={
        "description": "id of an attachment uploaded to Meta beforehand (message_attachments), instead of url"},
        **kwargs)


def _upload() -> Identifier:
    """A local file staged in Redis by a producer (``send_attachment`` with a path or bytes): its sha256."""
    return Identifier(what="sha256 of a staged file", pattern=r"[0-9a-f]{64}", metadata={
        "description": "sha256 (hex) of a local file a producer staged for upload (set by the Python senders and "
                       "the CLI; Facebook Login accounts)"})


def staged(message: dict[str, Any]) -> list[str]:
    """The content hashes of the files a message waits to have uploaded."""
    items = message.get("images") or [message]
    return [item["upload"] for item in items if "upload" in item]


class TextSchema(ContentSchema):
    text = Utf8Text(required=True, max_bytes=TEXT_MAX_BYTES, metadata={"description": "UTF-8, at most 1000 bytes"})


class LinkSchema(ContentSchema):
    url = HttpUrl(required=True, max_bytes=TEXT_MAX_BYTES,
                  metadata={"description": "an http(s) URL sent as the message text"})


class MediaSchema(ContentSchema):
    OPENAPI_RULES = ONE_SOURCE

    attachment_id = _attachment_id()
    upload = _upload()

    @validates_schema
    def _url_or_attachment_id(self, data: dict[str, Any], **kwargs: Any) -> None:
        _one_source(data)


def _media_schema(kind: str, formats: tuple[str, ...], label: str) -> type[MediaSchema]:
    url = HttpUrl(extensions=formats, media=label,
                  metadata={"description": f"public http(s) URL of the {label} ({', '.join(formats)})"})
    return type(f"{kind.capitalize()}Schema", (MediaSchema,), {"url": url})


ImageSchema = _media_schema("image", IMAGE_FORMATS, "image")
GifSchema = _media_schema("gif", GIF_FORMATS, "gif")
VideoSchema = _media_schema("video", VIDEO_FORMATS, "video")
AudioSchema = _media_schema("audio", AUDIO_FORMATS, "audio")
FileSchema = _media_schema("file", FILE_FORMATS, "file")


class PostSchema(ContentSchema):
    post_id = Identifier(required=True, what="post id", metadata={"description": "id of a post the account owns"})


class StickerSchema(ContentSchema):
    pass


class UnreactSchema(MessageSchema):
    message_id = _message_id("id of the message to (un)react to", required=True)


class ReactSchema(UnreactSchema):
    reaction = Str(load_default=DEFAULT_REACTION, max_input=32,
                   metadata={"description": "'love' (documented) or a single emoji (Instagram Login)",
                             "maxLength": MAX_EMOJI_CHARS, "pattern": REACTION_PATTERN})

    @validates_schema
    def _known_reaction(self, data: dict[str, Any], **kwargs: Any) -> None:
        reaction = data.get("reaction")
        if reaction is not None and reaction != DEFAULT_REACTION and not _is_emoji(reaction):
            raise ValidationError(f"must be 'love' or a single emoji (got {reaction[:20]!r})", "reaction")


class ItemSchema(Schema):
    """A part of a message (an image, a quick reply, a button, ...): unknown fields refused, as for documents."""

    class Meta:
        unknown = RAISE

    error_messages = {"type": "must be an object"}


class ImageItemSchema(ItemSchema):
    OPENAPI_RULES = ONE_SOURCE

    url = HttpUrl(extensions=IMAGE_FORMATS, media="image",
                  metadata={"description": f"public http(s) URL of the image ({', '.join(IMAGE_FORMATS)})"})
    attachment_id = _attachment_id()
    upload = _upload()

    @validates_schema
    def _url_or_attachment_id(self, data: dict[str, Any], **kwargs: Any) -> None:
        _one_source(data)


def _items(schema: type[Schema], low: int, high: int, what: str, description: str) -> fields.List[Any]:
    return fields.List(fields.Nested(schema), required=True, error_messages={"invalid": "must be a list"},
                       validate=count_between(low, high, what), metadata={"description": description})


class ImagesSchema(ContentSchema):
    images = _items(ImageItemSchema, 1, MAX_IMAGES, "images",
                    f"1-{MAX_IMAGES} images, each by url or attachment_id (sent as message.attachments)")


class QuickReplySchema(ItemSchema):
    content_type = Str(required=True, max_input=64, metadata={"enum": ["text"], "description": "text (the only "
                       "type Instagram still offers)"})
    title = Chars(required=True, max_chars=QUICK_REPLY_TITLE_CHARS, why="Meta would cut it short",
                  metadata={"description": f"the button's label, at most {QUICK_REPLY_TITLE_CHARS} characters"})
    payload = Chars(required=True, max_chars=PAYLOAD_CHARS, allow_newlines=True, metadata={
        "description": f"sent back to your webhook when tapped, at most {PAYLOAD_CHARS} characters"})

    @validates("content_type")
    def _text_only(self, value: str, **kwargs: Any) -> None:
        if value in DISABLED_QUICK_REPLIES:
            raise ValidationError(f"must be text: Meta disabled {value} quick replies for Instagram on 2026-10-05")
        if value != "text":
            raise ValidationError(f"must be text (got {value[:40]!r})")


class QuickRepliesSchema(ContentSchema):
    text = Utf8Text(required=True, max_bytes=TEXT_MAX_BYTES, metadata={"description": "UTF-8, at most 1000 bytes"})
    quick_replies = _items(QuickReplySchema, 1, MAX_QUICK_REPLIES, "quick replies",
                           f"1-{MAX_QUICK_REPLIES} options shown under the text")


class ButtonSchema(ItemSchema):
    """A ``web_url`` button opens ``url``; a ``postback`` button sends ``payload`` to your webhook."""

    OPENAPI_RULES = {"oneOf": [
        {"properties": {"type": {"enum": [kind]}}, "required": [needed], "not": {"required": [refused]}}
        for kind, needed, refused in (("web_url", "url", "payload"), ("postback", "payload", "url"))]}

    type = Str(required=True, max_input=64, metadata={"enum": ["web_url", "postback"]})
    title = Chars(required=True, max_chars=BUTTON_TITLE_CHARS, metadata={
        "description": f"the button's label, at most {BUTTON_TITLE_CHARS} characters"})
    url = HttpUrl(metadata={"description": "web_url buttons: the page to open"})
    payload = Chars(max_chars=PAYLOAD_CHARS, allow_newlines=True, metadata={
        "description": f"postback buttons: sent to your webhook, at most {PAYLOAD_CHARS} characters"})

    @validates_schema
    def _fields_of_its_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        kind = data.get("type")
        if kind not in ("web_url", "postback"):
            raise ValidationError(f"must be web_url or postback (got {str(kind)[:40]!r})", "type")
        needed, refused = ("url", "payload") if kind == "web_url" else ("payload", "url")
        if needed not in data:
            raise ValidationError(f"is required for a {kind} button", needed)
        if refused in data:
            raise ValidationError(f"is not a field of a {kind} button", refused)


class DefaultActionSchema(ItemSchema):
    """What tapping the element opens: a URL button's properties without a title."""

    type = Str(required=True, max_input=64, metadata={"enum": ["web_url"]})
    url = HttpUrl(required=True)

    @validates("type")
    def _web_url(self, value: str, **kwargs: Any) -> None:
        if value != "web_url":
            raise ValidationError(f"must be web_url (got {value[:40]!r})")


#: What an element needs besides its title: one of these at least.
ELEMENT_CONTENT = ("subtitle", "image_url", "default_action", "buttons")


class ElementSchema(ItemSchema):
    OPENAPI_RULES = {"anyOf": [{"required": [name]} for name in ELEMENT_CONTENT]}

    title = Chars(required=True, max_chars=ELEMENT_TEXT_CHARS)
    subtitle = Chars(max_chars=ELEMENT_TEXT_CHARS)
    image_url = HttpUrl(extensions=IMAGE_FORMATS, media="image")
    default_action = fields.Nested(DefaultActionSchema)
    buttons = fields.List(fields.Nested(ButtonSchema), error_messages={"invalid": "must be a list"},
                          validate=count_between(1, MAX_BUTTONS, "buttons"))

    @validates_schema
    def _more_than_a_title(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not set(ELEMENT_CONTENT) & data.keys():
            raise ValidationError("needs at least one of subtitle, image_url, default_action or buttons besides "
                                  "its title")


class GenericTemplateSchema(ContentSchema):
    elements = _items(ElementSchema, 1, MAX_ELEMENTS, "elements",
                      f"1-{MAX_ELEMENTS} cards shown side by side (not on desktop or web)")


class ButtonTemplateSchema(ContentSchema):
    text = Chars(required=True, max_chars=BUTTON_TEXT_CHARS, allow_newlines=True,
                 metadata={"description": f"UTF-8, at most {BUTTON_TEXT_CHARS} characters"})
    buttons = _items(ButtonSchema, 1, MAX_BUTTONS, "buttons", f"1-{MAX_BUTTONS} buttons under the text")


class ProductTemplateSchema(ContentSchema):
    product_ids = fields.List(Identifier(what="product id"), required=True,
                              error_messages={"invalid": "must be a list"},
                              validate=count_between(1, MAX_PRODUCTS, "product ids"),
                              metadata={"description": f"1-{MAX_PRODUCTS} catalog product ids (Facebook Login only)"})


class SenderActionSchema(MessageSchema):
    """typing_on, typing_off, mark_seen: a request of its own with only the recipient and the action."""


class PrivateReplySchema(BaseSchema):
    """The one private reply Meta allows to a comment, within 7 days of it: the comment id is its idempotency key."""

    comment_id = Identifier(required=True, what="comment id", metadata={"description": "the comment to answer"})
    text = Utf8Text(required=True, max_bytes=TEXT_MAX_BYTES, metadata={"description": "UTF-8, at most 1000 bytes"})


SCHEMAS: dict[str, type[BaseSchema]] = {
    "text": TextSchema, "link": LinkSchema, "image": ImageSchema, "gif": GifSchema, "video": VideoSchema,
    "audio": AudioSchema, "post": PostSchema, "sticker": StickerSchema, "react": ReactSchema,
    "unreact": UnreactSchema, "images": ImagesSchema, "file": FileSchema, "quick_replies": QuickRepliesSchema,
    "generic_template": GenericTemplateSchema, "button_template": ButtonTemplateSchema,
    "product_template": ProductTemplateSchema, "typing_on": SenderActionSchema, "typing_off": SenderActionSchema,
    "mark_seen": SenderActionSchema, "private_reply": PrivateReplySchema,
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


def _rename_unknown(messages: dict[Any, Any], depth: int = 0) -> dict[Any, Any]:
    """marshmallow's "Unknown field." in igsend's words, at any depth (a quick reply's, a button's)."""
    unknown = ["is not a field of this kind"] if depth == 0 else ["is not a field here"]
    return {field: unknown if msgs == ["Unknown field."]
            else _rename_unknown(msgs, depth + 1) if isinstance(msgs, dict) else msgs
            for field, msgs in messages.items()}


def _attachment(media_type: str, item: dict[str, Any]) -> dict[str, Any]:
    if "upload" in item:  # the worker uploads staged files first and sends them by attachment_id
        raise ValueError("a staged file must be uploaded before its message is sent")
    source = {"url": item["url"]} if "url" in item else {"attachment_id": item["attachment_id"]}
    return {"type": media_type, "payload": source}


def _template(payload: dict[str, Any]) -> dict[str, Any]:
    return {"attachment": {"type": "template", "payload": payload}}


def _content(message: dict[str, Any]) -> dict[str, Any]:
    """The ``message`` object of a kind that sends one."""
    kind = message["kind"]
    if kind in ("text", "private_reply"):
        return {"text": message["text"]}
    if kind == "link":
        return {"text": message["url"]}
    if kind in MEDIA_KINDS:
        return {"attachment": _attachment("image" if kind == "gif" else kind, message)}  # Meta sends GIFs as images
    if kind == "images":  # an array; the single-image samples write one object (GRAPH_API_NOTES.md)
        return {"attachments": [_attachment("image", item) for item in message["images"]]}
    if kind == "post":
        return {"attachment": {"type": "MEDIA_SHARE", "payload": {"id": message["post_id"]}}}
    if kind == "sticker":
        return {"attachment": {"type": "like_heart"}}
    if kind == "quick_replies":
        return {"text": message["text"], "quick_replies": message["quick_replies"]}
    if kind == "generic_template":
        return _template({"template_type": "generic", "elements": message["elements"]})
    if kind == "button_template":
        return _template({"template_type": "button", "text": message["text"], "buttons": message["buttons"]})
    if kind == "product_template":
        return _template({"template_type": "product", "elements": [{"id": id_} for id_ in message["product_ids"]]})
    raise ValueError(f"no message content for kind {kind!r}")


def graph_body(message: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /{version}/{account}/messages`` for a validated message."""
    kind = message["kind"]
    if kind == "private_reply":  # Instagram Platform, "Send a Private Reply to a Commenter"
        return {"recipient": {"comment_id": message["comment_id"]}, "message": _content(message)}
    body: dict[str, Any] = {"recipient": {"id": message["recipient"]}}
    if kind in ("react", "unreact"):
        body["sender_action"] = kind
        body["payload"] = {"message_id": message["message_id"]}
        if kind == "react":
            body["payload"]["reaction"] = message.get("reaction", DEFAULT_REACTION)
        return body
    if kind in SENDER_ACTIONS:  # only recipient and sender_action, in a request of its own
        body["sender_action"] = kind
        return body
    body["message"] = _content(message)
    if "tag" in message:
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = message["tag"]
    if "reply_to" in message:
        body["reply_to"] = {"mid": message["reply_to"]}
    return body
