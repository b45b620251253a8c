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

    def __init__(self, *, max_input: int = MAX_STRING_INPUT, allow_newlines: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_input = max_input
        self.allow_newlines = allow_newlines

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


class Identifier(Str):
    """An opaque Graph id (IGSID, post id, account name): a bounded run of safe characters."""

    def __init__(self, *, what: str, pattern: str = r"[A-Za-z0-9_.\-]+", max_length: int = 64, **kwargs: Any):
        super().__init__(**kwargs)
        self.what = what
        self.max_length = max_length
        self.regex = re.compile(pattern)

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

    def __init__(self, *, max_bytes: int, **kwargs: Any):
        super().__init__(allow_newlines=True, max_input=max_bytes * 4 + 1, **kwargs)
        self.max_bytes = max_bytes

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

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        if not value.strip():
            raise ValidationError("must not be empty")
        if len(value) > self.max_chars:
            why = f": {self.why}" if self.why else ""
            raise ValidationError(f"must be at most {self.max_chars} characters (got {len(value)}){why}")
        return cast(str, value)


def count_between(low: int, high: int, what: str) -> Any:
    """A validator for a list's length whose error says how many there were."""

    def check(items: list[Any]) -> None:
        if not low <= len(items) <= high:
            raise ValidationError(f"must hold {low} to {high} {what} (got {len(items)})")

    return check


#: How far ahead a message may be scheduled.
MAX_SCHEDULE_SECONDS = 366 * 24 * 3600


class SendAt(fields.Field[float]):
    """When to send: ISO 8601 with a time zone, or Unix seconds; loaded as Unix seconds. A time without a zone is
    refused (whose 9:00?), as is one more than a year ahead; a time in the past means now."""

    default_error_messages = {"null": "must not be null"}
    #: How far ahead of now a time may be, and what to say past it.
    max_ahead: float = MAX_SCHEDULE_SECONDS
    too_far = "must be at most a year ahead"

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


class HttpUrl(Str):
    """An absolute http(s) URL with a host, no credentials, and (optionally) a file extension from a list."""

    def __init__(self, *, extensions: tuple[str, ...] = (), media: str = "", **kwargs: Any):
        super().__init__(max_input=MAX_URL_LENGTH, **kwargs)
        self.extensions = extensions
        self.media = media

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
        return cast(str, value)
