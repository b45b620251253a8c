"""Field types whose errors name the rule and the measured value, for every message kind."""

from __future__ import annotations

import math
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields

MAX_URL_LENGTH = 2000
MAX_STRING_INPUT = 4096  # anything longer than any field allows is refused before looking inside it

_ALLOWED_CONTROLS = {"\n", "\r", "\t"}
#: The control characters (Unicode category Cc) as regular-expression class ranges, for the OpenAPI document's
#: patterns: every one, and every one but the newlines and tab that message texts may hold.
CONTROLS = r"\x00-\x1f\x7f-\x9f"
CONTROLS_BUT_NEWLINES = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
#: The OpenAPI extension naming a limit in UTF-8 bytes, which JSON Schema's ``maxLength`` (characters) cannot state.
MAX_UTF8_BYTES = "x-maxUtf8Bytes"


def not_blank(allow_newlines: bool) -> str:
    """A pattern for text without control characters (but newlines and tab, if allowed) and with at least one
    character that is not whitespace."""
    allowed = CONTROLS_BUT_NEWLINES if allow_newlines else CONTROLS
    return rf"^[^{allowed}]*[^\s{CONTROLS}][^{allowed}]*$"


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Str(fields.String):
    """A string that refuses non-strings, lone surrogates and control characters with a precise message.

    ``max_input`` bounds how much is inspected, so a 10 MB value costs a length check and nothing more.
    """

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
    }
    #: Whether the field has a rule the OpenAPI document cannot state (named in an ``x-`` extension instead).
    beyond_json_schema = False

    def __init__(self, *, max_input: int = MAX_STRING_INPUT, allow_newlines: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_input = max_input
        self.allow_newlines = allow_newlines

    def json_schema(self) -> dict[str, Any]:
        """The rules of this field JSON Schema can state, for the OpenAPI document (``producers.api.openapi``)."""
        allowed = CONTROLS_BUT_NEWLINES if self.allow_newlines else CONTROLS
        return {"maxLength": self.max_input, "pattern": rf"^[^{allowed}]*$"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(f"must be a string (got {_describe(value)})")
        if len(value) > self.max_input:
            raise ValidationError(f"is far too long ({len(value)} characters)")
        for index, char in enumerate(value):
            code = ord(char)
            if 0xD800 <= code <= 0xDFFF:
                raise ValidationError(f"must be valid UTF-8 (lone surrogate U+{code:04X} at {index})")
            if unicodedata.category(char) == "Cc" and not (self.allow_newlines and char in _ALLOWED_CONTROLS):
                raise ValidationError(f"must not contain control characters (U+{code:04X} at {index})")
        return value


class StrictBoolean(fields.Boolean):
    """JSON's true or false, nothing else: marshmallow's Boolean with ``truthy={True}`` still takes 1 and 0 (and
    1.0), which compare and hash equal to True and False."""

    default_error_messages = {"invalid": "must be true or false"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Identifier(Str):
    """An opaque Graph id (IGSID, post id, account name): a bounded run of safe characters."""

    def __init__(self, *, what: str, pattern: str = r"[A-Za-z0-9_.\-]+", max_length: int = 64, **kwargs: Any):
        super().__init__(**kwargs)
        self.what = what
        self.max_length = max_length
        self.regex = re.compile(pattern)

    def json_schema(self) -> dict[str, Any]:
        return {"minLength": 1, "maxLength": self.max_length, "pattern": f"^(?:{self.regex.pattern})$"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        if not value:
            raise ValidationError(f"must be a non-empty {self.what}")
        if len(value) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters (got {len(value)})")
        if not self.regex.fullmatch(value):
            raise ValidationError(f"must contain only letters, digits, '_', '.' or '-' (got {value!r})")
        return cast(str, value)


class Utf8Text(Str):
    """Message text: not blank, at most ``max_bytes`` once encoded as UTF-8 (Meta counts bytes)."""

    beyond_json_schema = True

    def __init__(self, *, max_bytes: int, **kwargs: Any):
        super().__init__(allow_newlines=True, max_input=max_bytes * 4 + 1, **kwargs)
        self.max_bytes = max_bytes

    def json_schema(self) -> dict[str, Any]:
        # a character is 1-4 bytes: at most max_bytes characters, and the byte count in an extension
        return {"minLength": 1, "maxLength": self.max_bytes, MAX_UTF8_BYTES: self.max_bytes,
                "pattern": not_blank(True)}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str) and len(value) > self.max_input:
            raise ValidationError(f"must be at most {self.max_bytes} UTF-8 bytes (got more than {self.max_input})")
        value = super()._deserialize(value, attr, data, **kwargs)
        if not value.strip():
            raise ValidationError("must not be empty")
        size = len(value.encode("utf-8"))
        if size > self.max_bytes:
            raise ValidationError(f"must be at most {self.max_bytes} UTF-8 bytes (got {size})")
        return cast(str, value)


class Chars(Str):
    """Text counted in characters (code points), as Meta counts titles and template texts: not blank, at most
    ``max_chars``, with ``why`` added to the error (e.g. what Meta would do with a longer one)."""

    def __init__(self, *, max_chars: int, why: str = "", allow_newlines: bool = False, **kwargs: Any):
        super().__init__(allow_newlines=allow_newlines, max_input=max(max_chars * 4, 64), **kwargs)
        self.max_chars = max_chars
        self.why = why

    def json_schema(self) -> dict[str, Any]:
        return {"minLength": 1, "maxLength": self.max_chars, "pattern": not_blank(self.allow_newlines)}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        if not value.strip():
            raise ValidationError("must not be empty")
        if len(value) > self.max_chars:
            why = f": {self.why}" if self.why else ""
            raise ValidationError(f"must be at most {self.max_chars} characters (got {len(value)}){why}")
        return cast(str, value)


class CountBetween:
    """A validator for a list's length whose error says how many there were. Its ``min``, ``max`` and ``equal``
    are those of marshmallow's ``Length``, which apispec reads to write ``minItems`` and ``maxItems``."""

    equal = None

    def __init__(self, low: int, high: int, what: str):
        self.min, self.max, self.what = low, high, what

    def __call__(self, items: list[Any]) -> None:
        if not self.min <= len(items) <= self.max:
            raise ValidationError(f"must hold {self.min} to {self.max} {self.what} (got {len(items)})")


def count_between(low: int, high: int, what: str) -> CountBetween:
    return CountBetween(low, high, what)


#: How far ahead a message may be scheduled.
MAX_SCHEDULE_SECONDS = 366 * 24 * 3600
#: The OpenAPI extension naming how far past the time of the request a moment may be, in seconds.
MAX_SECONDS_AHEAD = "x-maxSecondsAhead"
#: The ISO 8601 forms with a time zone the document states (the field also takes the other forms
#: ``datetime.fromisoformat`` reads): a date, T or a space, hours and minutes, seconds and a fraction optional.
ISO_MOMENT = (r"^(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
              r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
              r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$")


class SendAt(fields.Field[float]):
    """When to send: ISO 8601 with a time zone, or Unix seconds; loaded as Unix seconds. A time without a zone is
    refused (whose 9:00?), as is one more than a year ahead; a time in the past means now."""

    default_error_messages = {"null": "must not be null"}
    #: How far ahead of now a time may be, and what to say past it.
    max_ahead: float = MAX_SCHEDULE_SECONDS
    too_far = "must be at most a year ahead"
    #: What the OpenAPI document cannot state: the calendar (no 31 February) and the time relative to now.
    beyond_json_schema = True

    def json_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "pattern": ISO_MOMENT}, {"type": "number", "minimum": 0,
                                                                      "exclusiveMinimum": True}],
                MAX_SECONDS_AHEAD: self.max_ahead}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError(f"must be ISO 8601 with a time zone, or Unix seconds (got {_describe(value)})")
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value.strip()) if len(value) <= 64 else None
            except ValueError:
                when = None
            if when is None:
                raise ValidationError(f"must be ISO 8601 with a time zone, e.g. 2026-12-01T09:00:00Z (got "
                                      f"{value[:40]!r})")
            if when.tzinfo is None or when.utcoffset() is None:
                raise ValidationError(f"must include a time zone, e.g. {value[:19]}Z or {value[:19]}+01:00 "
                                      f"(got {value[:40]!r})")
            seconds = when.timestamp()
        else:
            seconds = float(value)
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValidationError(f"must be a positive number of Unix seconds (got {value!r})")
        if seconds > time.time() + self.max_ahead:
            shown = datetime.fromtimestamp(min(seconds, 253402300799), UTC).isoformat()
            raise ValidationError(f"{self.too_far} (got {shown})")
        return seconds


class PastMoment(SendAt):
    """A moment that has happened (e.g. when a person last wrote): like ``send_at``, but not in the future (a
    minute's clock skew allowed)."""

    max_ahead = 60.0
    too_far = "must not be in the future"


def _any_case(word: str) -> str:
    return "".join(f"[{char.upper()}{char.lower()}]" if char.isalpha() else re.escape(char) for char in word)


def url_pattern(extensions: tuple[str, ...] = ()) -> str:
    """The URLs :class:`HttpUrl` takes, as one regular expression: http(s), a host name with a dot (not
    localhost), an optional port, then anything but whitespace and control characters; with ``extensions``, a last
    path segment with a dot ends with one of them."""
    rest = rf"[^\s{CONTROLS}]"
    host = r"(?![A-Za-z0-9.\-]*\." + _any_case("localhost") + r"(?:[:/?#]|$))[A-Za-z0-9.\-]*\.[A-Za-z0-9.\-]*"
    port = r"(?::0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])?)?"
    if extensions:
        segment = rf"(?:[^\s{CONTROLS}?#/.]*|[^\s{CONTROLS}?#/]*\.(?:{'|'.join(map(_any_case, extensions))}))"
        path = rf"(?:/(?:[^\s{CONTROLS}?#/]*/)*{segment})?"
    else:
        path = rf"(?:/[^\s{CONTROLS}?#]*)?"
    return rf"^{_any_case('http')}[Ss]?://{host}{port}{path}(?:[?#]{rest}*)?$"


class HttpUrl(Str):
    """An absolute http(s) URL with a host, no credentials, and (optionally) a file extension from a list; with
    ``max_bytes``, at most that many bytes of UTF-8 (a link sent as a message's text)."""

    def __init__(self, *, extensions: tuple[str, ...] = (), media: str = "", max_bytes: int | None = None,
                 **kwargs: Any):
        super().__init__(max_input=MAX_URL_LENGTH, **kwargs)
        self.extensions = extensions
        self.media = media
        self.max_bytes = max_bytes
        self.regex = re.compile(url_pattern(extensions))
        self.beyond_json_schema = max_bytes is not None

    def json_schema(self) -> dict[str, Any]:
        rules: dict[str, Any] = {"maxLength": MAX_URL_LENGTH, "pattern": self.regex.pattern}
        if self.max_bytes is not None:
            rules.update(maxLength=min(MAX_URL_LENGTH, self.max_bytes), **{MAX_UTF8_BYTES: self.max_bytes})
        return rules

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str) and len(value) > MAX_URL_LENGTH:
            raise ValidationError(f"must be at most {MAX_URL_LENGTH} characters (got {len(value)})")
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ValidationError(f"must be a valid http(s) URL ({exc})") from None
        if not parts.scheme:
            raise ValidationError(f"must be an http(s) URL such as https://example.com/page (got {value[:80]!r}, "
                                  "which is not a URL)")
        if parts.scheme not in ("http", "https"):
            raise ValidationError(f"must be an http or https URL (got scheme {parts.scheme!r})")
        if host and (host == "localhost" or host.endswith(".localhost")):
            raise ValidationError(f"must be a public address Meta can fetch, not this machine (got {value[:80]!r})")
        if not host or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host) or "." not in host.strip("[]"):
            raise ValidationError(f"must be a valid http(s) URL with a host name (got {value[:80]!r})")
        if parts.username is not None or parts.password is not None:
            raise ValidationError("must not contain credentials (user:password@)")
        if any(ch.isspace() for ch in value):
            raise ValidationError("must not contain spaces")
        if self.extensions:
            last = parts.path.rsplit("/", 1)[-1]
            if "." in last:
                ext = last.rsplit(".", 1)[-1].lower()
                if ext not in self.extensions:
                    allowed = ", ".join(self.extensions)
                    raise ValidationError(f"{self.media} must be one of {allowed} (got .{ext})")
        if not self.regex.fullmatch(value):  # what the checks above let through and the document does not state
            raise ValidationError(f"must be an http(s) URL with a host name (got {value[:80]!r})")
        if self.max_bytes is not None and len(value.encode("utf-8")) > self.max_bytes:
            raise ValidationError(f"must be at most {self.max_bytes} UTF-8 bytes (got {len(value.encode('utf-8'))})")
        return cast(str, value)
