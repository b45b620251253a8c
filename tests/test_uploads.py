"""Local files for the media kinds: checked before queueing, staged in Redis (never in the task message), uploaded
once per account and content by a worker, then sent by attachment id."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from igsend.core.celery_app import queue_keys
from producers import InvalidMessage, media_item, send, send_attachment, send_images
from producers.uploads import check, sniff
from tests.conftest import SHOP_PAGE_ID, queue_depth, received
from tests.test_cli import igsend
from workers.scheduler import Scheduler

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 50 + b"%%EOF\n"


def uploads(sandbox: str) -> dict[str, dict]:
    answer = requests.get(f"{sandbox}/_sandbox/uploads", params={"account": SHOP_PAGE_ID}, timeout=5)
    answer.raise_for_status()
    return answer.json()["uploads"]


@pytest.mark.parametrize("data,found", [(PNG, "png"), (b"\xff\xd8\xff\xe0" + bytes(64), "jpeg"),
                                        (b"GIF89a" + bytes(64), "gif"), (PDF, "pdf"),
                                        (bytes(4) + b"ftypisom" + bytes(64), "mp4"),
                                        (bytes(4) + b"ftypM4A " + bytes(64), "m4a"),
                                        (b"RIFF" + bytes(4) + b"WAVE" + bytes(64), "wav"),
                                        (b"\x1a\x45\xdf\xa3" + bytes(64), "webm"), (b"hello", None)])
def test_files_are_known_by_their_content(data: bytes, found: str | None) -> None:
    sniffed = sniff(data)
    assert (sniffed.format if sniffed else None) == found


@pytest.mark.parametrize("kind,data,message", [
    ("image", PDF, "upload: terms.pdf is a pdf file; a image must be one of gif, jpeg, png"),
    ("file", PNG, "upload: terms.pdf is a png file; a file must be one of pdf"),
    ("image", PNG[:8] + bytes(8_000_000), "upload: terms.pdf is 8.0 MB; a image may be at most 8 MB"),
    ("video", b"not a video at all", "upload: terms.pdf is in no format Meta takes; a video must be one of avi, mov, "
                                     "mp4, ogg, webm"),
    ("file", b"", "upload: terms.pdf is empty"),
    ("text", PDF, "upload: a text message carries no file (local files go with image, gif, video, audio, file, "
                  "images)"),
])
def test_limits_are_checked_by_content_and_size(kind: str, data: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        check(kind, data, "terms.pdf")
    assert str(caught.value) == message


@pytest.mark.usefixtures("worker", "clean")
def test_a_local_file_sent_twice_is_uploaded_once(tmp_path: Path, sandbox: str, r) -> None:
    picture = tmp_path / "boot.png"
    picture.write_bytes(PNG)
    # two at once (one worker uploads, the other waits for its attachment id), then the same bytes again later
    first = send_attachment("upload-1", "image", picture, account="shop")
    second = send_images("upload-2", [picture, "https://cdn.example.com/b.png"], account="shop")
    assert first.result(timeout=30)["message_id"] and second.result(timeout=30)["message_id"]
    later = send_attachment("upload-3", "image", PNG, account="shop")  # bytes this time
    assert later.result(timeout=30)["message_id"]

    [(attachment_id, upload)] = uploads(sandbox).items()
    assert upload["size"] == len(PNG) and upload["filename"] == "boot.png" and upload["content_type"] == "image/png"
    assert upload["sends"] == 3
    bodies = {m["body"]["recipient"]["id"]: m["body"]["message"] for m in received(sandbox)}
    assert bodies["upload-1"]["attachment"]["payload"] == {"attachment_id": attachment_id}
    assert bodies["upload-2"]["attachments"][0]["payload"] == {"attachment_id": attachment_id}
    assert bodies["upload-3"]["attachment"]["payload"] == {"attachment_id": attachment_id}
    assert list(r.scan_iter("igsend:upload:*")) == []  # the staged bytes are gone once Meta has the file
    # the third message went by id from the start: the producer found the cached attachment id
    assert media_item("image", PNG, account="shop") == {"attachment_id": attachment_id}


def test_the_task_message_carries_a_hash_never_the_bytes(private_db) -> None:
    """On a Redis no worker consumes, the queued message is what any consumer would get: a chunk naming the job
    (igsend.core.chunks), whose record holds the file's hash."""
    big = PDF + b"%" + bytes(range(256)) * 400  # ~100 kB
    item = media_item("file", big, account="shop")
    assert set(item) == {"upload"} and len(item["upload"]) == 64
    send({"kind": "file", "recipient": "upload-hash", **item, "account": "shop"})
    while Scheduler(private_db, ahead=10).dispatch():  # out of its lane onto the Celery queue, as the leader does
        pass
    [raw] = [m for key in queue_keys() for m in private_db.lrange(key, 0, -1)]
    envelope = json.loads(raw)
    body = json.loads(base64.b64decode(envelope["body"]))
    assert body[0] == ["shop", "text", 1] and "data" not in json.dumps(body)
    [job_id] = body[1]["jobs"]
    message = json.loads(private_db.hget(f"igsend:job:{job_id}", "message"))
    assert message["upload"] == item["upload"] and "data" not in json.dumps(message)
    assert len(raw) < 4000 < len(big)
    filename, size = private_db.hmget(f"igsend:upload:shop:{item['upload']}", "filename", "size")
    assert filename == "upload.pdf" and int(size) == len(big)
    assert 0 < private_db.ttl(f"igsend:upload:shop:{item['upload']}") <= 24 * 3600 + 3600


@pytest.mark.usefixtures("worker", "clean")
def test_instagram_login_accounts_are_refused_before_anything_is_staged(tmp_path: Path, r) -> None:
    picture = tmp_path / "boot.png"
    picture.write_bytes(PNG)
    with pytest.raises(InvalidMessage) as caught:
        send_attachment("upload-ig", "image", picture)  # the default account uses Instagram Login
    assert str(caught.value) == ("upload: account 'default' uses Instagram Login, for which Meta documents no upload "
                                 "endpoint: send the file's public http(s) URL instead")
    assert list(r.scan_iter("igsend:upload:*")) == [] and queue_depth(r) == 0


@pytest.mark.usefixtures("worker", "clean")
def test_a_staged_file_that_expired_is_dead_lettered_with_the_reason(r) -> None:
    job = send({"kind": "image", "recipient": "upload-gone", "upload": "ab" * 32, "account": "shop"})
    with pytest.raises(Exception):  # noqa: B017 - MessageDead, checked below by its record
        job.result(timeout=30)
    info = job.info()
    assert info["status"] == "dead"
    assert "no longer in Redis" in info["reason"] and "send it again" in info["reason"]


@pytest.mark.usefixtures("worker", "clean")
def test_the_cli_sends_a_local_file(tmp_path: Path, sandbox: str) -> None:
    (tmp_path / "terms.pdf").write_bytes(PDF)
    sent = igsend("send", "file", "upload-cli", "terms.pdf", "--account", "shop", "--wait", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["status"] == "delivered"
    [upload] = uploads(sandbox).values()
    assert upload["filename"] == "terms.pdf" and upload["type"] == "file"
    wrong = igsend("send", "image", "upload-cli", "terms.pdf", "--account", "shop", cwd=tmp_path)
    assert wrong.returncode == 2 and "upload: terms.pdf is a pdf file; a image must be one of gif, jpeg, png" \
        in wrong.stderr
    missing = igsend("send", "image", "upload-cli", "nowhere.png", "--account", "shop", cwd=tmp_path)
    assert missing.returncode == 2  # no such file: read as a URL, and refused as one
    assert missing.stderr.strip() == ("error: url: must be an http(s) URL such as https://example.com/page (got "
                                      "'nowhere.png', which is not a URL)")
