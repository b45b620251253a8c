"""Local files for the media kinds: checked by their content and size, then staged in Redis for the account's
worker to upload once (the worker caches Meta's attachment id per account and content hash).

Bytes never travel in the task message: they wait under ``igsend:upload:{account}:{sha256}`` (the bytes, their
content type and file name) for at most ``IGSEND_MAX_AGE`` plus an hour, the longest a message may wait before it is
dead-lettered; the worker deletes them once Meta has the file. The message carries only the sha256. Bytes whose
attachment id is cached already are not staged at all: the message goes by that id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from igsend.core import presence, routing
from igsend.core.settings import get_settings
from igsend.core.store import attachment_key, get_redis, upload_key
from schemas import InvalidMessage

MB = 1_000_000
#: Meta's sizes per kind ("Send a Message": image 8 MB; video, audio and files 25 MB).
MAX_BYTES = {"image": 8 * MB, "gif": 8 * MB, "video": 25 * MB, "audio": 25 * MB, "file": 25 * MB}


@dataclass(frozen=True)
class Sniffed:
    format: str  # as the kinds' format lists name it: png, jpeg, gif, mp4, mov, webm, ogg, avi, aac, m4a, wav, pdf
    content_type: str


#: Format by content, as the kinds accept them (schemas: IMAGE_FORMATS, VIDEO_FORMATS, ...).
ACCEPTED = {"image": {"png", "jpeg", "gif"}, "gif": {"gif"}, "video": {"mp4", "mov", "webm", "ogg", "avi"},
            "audio": {"aac", "m4a", "wav", "mp4"}, "file": {"pdf"}}


def sniff(data: bytes) -> Sniffed | None:
    """The file's format from its first bytes (its name can lie; Meta reads the content)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("png", "image/png")
    if data.startswith(b"\xff\xd8\xff"):
        return Sniffed("jpeg", "image/jpeg")
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("gif", "image/gif")
    if data.startswith(b"%PDF-"):
        return Sniffed("pdf", "application/pdf")
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("webm", "video/webm")
    if data.startswith(b"OggS"):
        return Sniffed("ogg", "video/ogg")
    if data[:4] == b"RIFF" and data[8:12] in (b"AVI ", b"WAVE"):
        return Sniffed("avi", "video/x-msvideo") if data[8:12] == b"AVI " else Sniffed("wav", "audio/wav")
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"M4A ", b"M4B "):
            return Sniffed("m4a", "audio/mp4")
        return Sniffed("mov", "video/quicktime") if brand == b"qt  " else Sniffed("mp4", "video/mp4")
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:  # an ADTS frame header
        return Sniffed("aac", "audio/aac")
    return None


def _refuse(rule: str) -> InvalidMessage:
    return InvalidMessage({"upload": [rule]})


def check(kind: str, data: bytes, name: str) -> Sniffed:
    """Raise InvalidMessage (field ``upload``) unless ``data`` is a file of a format and size ``kind`` takes."""
    if kind not in MAX_BYTES:
        raise _refuse(f"a {kind} message carries no file (local files go with image, gif, video, audio, file, "
                      "images)")
    if not data:
        raise _refuse(f"{name} is empty")
    found = sniff(data)
    accepted = ", ".join(sorted(ACCEPTED[kind]))
    if found is None or found.format not in ACCEPTED[kind]:
        what = f"a {found.format} file" if found else "in no format Meta takes"
        raise _refuse(f"{name} is {what}; a {kind} must be one of {accepted}")
    if len(data) > MAX_BYTES[kind]:
        raise _refuse(f"{name} is {len(data) / MB:.1f} MB; a {kind} may be at most {MAX_BYTES[kind] // MB} MB")
    return found


def read_source(source: str | Path | bytes) -> tuple[bytes, str]:
    """The bytes of a local file (a path) or of ``bytes``, and the name errors and the upload use."""
    if isinstance(source, bytes | bytearray):
        return bytes(source), "the bytes"
    path = Path(source)
    try:
        return path.read_bytes(), path.name
    except OSError as exc:
        raise _refuse(f"cannot read {str(source)[:200]}: {exc.strerror}") from None


def stage(kind: str, source: str | Path | bytes, *, account: str) -> dict[str, str]:
    """Check a local file (a path, or bytes) for ``kind`` and make it ready to send from ``account``: the media
    item to put in the document, ``{"attachment_id": ...}`` when Meta has these bytes already, else
    ``{"upload": sha256}`` with the bytes staged in Redis. Raises InvalidMessage (nothing staged) for a file the
    kind does not take, or an account that cannot upload."""
    data, name = read_source(source)
    found = check(kind, data, name)
    with routing.for_account(account):  # staged in the account's group (IGSEND_GROUPS), where its worker reads
        about = presence.current().served().get(account) or presence.current().known.get(account) or {}
        if about.get("login") == "instagram":
            raise _refuse(f"account {account!r} uses Instagram Login, for which Meta documents no upload "
                          "endpoint: send the file's public http(s) URL instead")
        digest = hashlib.sha256(data).hexdigest()
        client = get_redis()
        known = client.get(attachment_key(account, digest))
        if known:
            return {"attachment_id": known.decode() if isinstance(known, bytes) else str(known)}
        filename = name if name != "the bytes" else f"upload.{found.format}"
        ttl = int(get_settings().max_age) + 3600
        pipe = client.pipeline(transaction=True)
        pipe.hset(upload_key(account, digest), mapping={"data": data, "content_type": found.content_type,
                                                        "filename": filename, "size": len(data)})
        pipe.expire(upload_key(account, digest), ttl)
        pipe.execute()
        return {"upload": digest}
