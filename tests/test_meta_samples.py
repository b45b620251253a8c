"""Meta's own Postman samples (tests/data/meta/) against the sandbox, and igsend's worker bodies against them.

Every request in the collection's "Send API" folder is sent as Meta wrote it — method, headers, inherited
bearer auth, body mode — with only the placeholders filled, and must get Meta's documented answer. Then
``schemas.graph_body`` for every kind must have the shape of Meta's sample for that kind.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import schemas
from tests.test_sandbox import Server, start, stop
from workers.accounts import DEFAULT_API_VERSION

COLLECTION = Path(__file__).parent / "data" / "meta" / "instagram-platform-api.postman_collection.json"
TOKEN = "IGQWRsamples" + "c" * 30  # the collection targets graph.instagram.com: an Instagram-Login token
ACCOUNT = "17841400000000044"
RECIPIENT = "1254459154682919"
VERSION = DEFAULT_API_VERSION

# Postman variables the requests use (the collection spells the version both api_version and api-version)
# and Meta's literal placeholders, which a reader of the samples replaces by hand.
VARIABLES = {"api_version": VERSION, "api-version": VERSION, "ig_account_id": ACCOUNT,
             "instagram_scoped_id": RECIPIENT, "access_token": TOKEN}
PLACEHOLDERS = {"MEDIA_URL": "https://cdn.example.com/media/picture.png",
                "ACTUAL_AUDIO_OR_VIDEO_FILE_URL": "https://cdn.example.com/media/voice.m4a",
                "MESSAGE_ID": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEsample", "POST_ID": "17900000000000000"}
# What Postman adds for a raw body of a given language when the request sets no Content-Type itself.
RAW_CONTENT_TYPES = {"json": "application/json", "text": "text/plain", "xml": "application/xml"}

pytestmark = pytest.mark.timeout(60)


def collection() -> dict[str, Any]:
    return json.loads(COLLECTION.read_text(encoding="utf-8"))


def send_api_samples() -> dict[str, dict[str, Any]]:
    [folder] = [item for item in collection()["item"] if item["name"] == "Send API"]
    return {item["name"]: item for item in folder["item"]}


def fill(text: str, *, placeholders: bool = True) -> str:
    text = re.sub(r"\{\{([\w-]+)\}\}", lambda m: VARIABLES.get(m.group(1), m.group(0)), text)
    if placeholders:
        for name, value in PLACEHOLDERS.items():
            text = re.sub(rf"\b{name}\b", value, text)
    assert "{{" not in text, f"a Postman variable the test does not know: {text!r}"
    return text


def as_sent(item: dict[str, Any], base_url: str, *, placeholders: bool = True) -> dict[str, Any]:
    """``requests.request`` arguments for a Postman request, sent the way Postman would send it."""
    request = item["request"]
    url = urlsplit(fill(request["url"]["raw"], placeholders=placeholders))
    headers = {h["key"]: fill(h["value"]) for h in request.get("header", []) if not h.get("disabled")}
    auth = request.get("auth") or collection().get("auth") or {"type": "noauth"}  # items inherit it
    if auth["type"] == "bearer":
        [token] = [fill(entry["value"]) for entry in auth["bearer"] if entry["key"] == "token"]
        headers["Authorization"] = f"Bearer {token}"
    else:
        assert auth["type"] == "noauth", f"auth type {auth['type']} is not handled"
    sent: dict[str, Any] = {"method": request["method"], "url": base_url + url.path, "headers": headers,
                            "params": [(q["key"], fill(q["value"])) for q in request["url"].get("query", [])
                                       if not q.get("disabled")] or None}
    body = request.get("body") or {"mode": "none"}
    if body["mode"] == "raw":
        sent["data"] = fill(body["raw"], placeholders=placeholders).encode("utf-8")
        language = body.get("options", {}).get("raw", {}).get("language", "text")
        if not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = RAW_CONTENT_TYPES[language]
    elif body["mode"] == "urlencoded":
        sent["data"] = [(f["key"], fill(f["value"])) for f in body["urlencoded"] if not f.get("disabled")]
    elif body["mode"] == "formdata":
        sent["files"] = [(f["key"], (None, fill(f["value"]))) for f in body["formdata"] if not f.get("disabled")]
    else:
        assert body["mode"] == "none", f"body mode {body['mode']} is not handled"
    return sent


def documented_answer(item: dict[str, Any]) -> dict[str, Any]:
    """The example answer in the request's description: the last JSON object in it with a recipient_id (the
    descriptions' Markdown fences are not always closed, so objects are found by decoding, not by fences)."""
    text, decoder, answers = item["request"]["description"], json.JSONDecoder(), []
    for offset in (m.start() for m in re.finditer(r"\{", text)):
        try:
            found, _ = decoder.raw_decode(text, offset)
        except ValueError:
            continue
        if isinstance(found, dict) and "recipient_id" in found:
            answers.append(found)
    assert answers, f"no documented answer for {item['name']}"
    return answers[-1]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Server]:
    server = start("--token", TOKEN)
    yield server
    stop(server)


# --- Meta's samples against the sandbox ---------------------------------------------------------------------

def test_the_collection_has_the_send_api_samples() -> None:
    assert set(send_api_samples()) == {"Text Message", "Media Message (Photo)", "Media Message (GIF)",
                                       "Media Message (Audio or Video)", "Send a Sticker",
                                       "React or Unreact to a message", "Published Post"}


@pytest.mark.parametrize("name", list(send_api_samples()))
def test_each_meta_sample_gets_metas_documented_answer(sandbox: Server, name: str) -> None:
    requests.delete(f"{sandbox.url}/_sandbox/messages", timeout=5).raise_for_status()
    item = send_api_samples()[name]
    answer = requests.request(**as_sent(item, sandbox.url), timeout=5)
    assert answer.status_code == 200, answer.text
    documented = documented_answer(item)
    assert set(answer.json()) == set(documented)
    assert answer.json()["recipient_id"] == RECIPIENT
    if "message_id" in documented:
        assert isinstance(answer.json()["message_id"], str) and answer.json()["message_id"]
    [seen] = sandbox.messages()
    assert seen["body"] == json.loads(fill(item["request"]["body"]["raw"]))  # taken as Meta wrote it
    assert (seen["login"], seen["token_placement"], seen["version"]) == ("instagram", "header", VERSION)


def test_metas_unfilled_media_placeholder_is_refused_as_meta_would(sandbox: Server) -> None:
    item = send_api_samples()["Media Message (Photo)"]
    answer = requests.request(**as_sent(item, sandbox.url, placeholders=False), timeout=5)
    error = answer.json()["error"]
    assert answer.status_code == 400 and (error["code"], error["error_subcode"]) == (100, 2018047)
    assert error["type"] == "IGApiException" and error["fbtrace_id"]


# --- igsend's worker bodies against Meta's samples ----------------------------------------------------------

# One valid message document per kind, and the sample Meta shows for that kind.
DOCUMENTS: dict[str, tuple[dict[str, Any], str]] = {
    "text": ({"text": "Hello World!"}, "Text Message"),
    "link": ({"url": "https://example.com/offer?a=1"}, "Text Message"),
    "image": ({"url": "https://cdn.example.com/a.png"}, "Media Message (Photo)"),
    "gif": ({"url": "https://cdn.example.com/a.gif"}, "Media Message (GIF)"),
    "video": ({"url": "https://cdn.example.com/a.mp4"}, "Media Message (Audio or Video)"),
    "audio": ({"url": "https://cdn.example.com/a.m4a"}, "Media Message (Audio or Video)"),
    "post": ({"post_id": "17900000000000000"}, "Published Post"),
    "sticker": ({}, "Send a Sticker"),
    "react": ({"message_id": "MID", "reaction": "love"}, "React or Unreact to a message"),
    "unreact": ({"message_id": "MID"}, "React or Unreact to a message"),
}
# Values that are part of the shape: which attachment, which action.
LITERAL_KEYS = {"type", "sender_action"}


def shape(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if key in LITERAL_KEYS:
        return value
    return type(value).__name__


def metas_sample(kind: str) -> dict[str, Any]:
    sample = json.loads(fill(send_api_samples()[DOCUMENTS[kind][1]]["request"]["body"]["raw"]))
    if kind == "video":  # one sample for both: "Audio or Video", written with type audio
        sample["message"]["attachment"]["type"] = "video"
    if kind == "unreact":  # the same sample with sender_action unreact and no reaction (the seed's unreact)
        sample = copy.deepcopy(sample)
        sample["sender_action"] = "unreact"
        del sample["payload"]["reaction"]
    return sample


def test_every_seed_kind_has_a_meta_sample() -> None:
    # Meta's collection samples the seed's kinds only; the later ones are checked against the sandbox's reading
    # of Meta's pages (tests/test_later_kinds.py)
    assert set(DOCUMENTS) == set(schemas.SEED_KINDS)


@pytest.mark.parametrize("kind", schemas.SEED_KINDS)
def test_igsends_body_has_the_shape_of_metas_sample(sandbox: Server, kind: str) -> None:
    document = {"kind": kind, "recipient": RECIPIENT, **DOCUMENTS[kind][0]}
    body = schemas.graph_body(schemas.load_message(document))
    assert shape(body) == shape(metas_sample(kind))
    # and the sandbox takes it from an Instagram-Login account, as the worker sends it (JSON, bearer)
    answer = requests.post(f"{sandbox.url}/{VERSION}/{ACCOUNT}/messages", json=body, timeout=5,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
