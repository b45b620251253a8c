"""Token files and refreshed tokens: the accounts file's rules (token_file, refresh), and the sandbox's token endpoints
(sandbox.tokens: refresh_access_token, debug_token, /_sandbox/tokens) against a sandbox of this module's own (its
token rules are changed here)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.tokens import digest
from workers.accounts import AccountError, load_accounts

pytestmark = pytest.mark.timeout(180)

DAY = 86400
# Instagram-Login tokens start IG, Page tokens EAA: the sandbox tells the login kind by the prefix
STUDIO_TOKEN = "IGQstudio" + "s" * 40  # refresh = true, old enough: refreshed at the worker's start
FRESH_TOKEN = "IGQfresh" + "f" * 40  # refresh = true, but the sandbox says it is too young: the refresh fails
ROTATE_TOKEN = "IGQrotate" + "r" * 40  # token_file without refresh: expires, then replaced by hand
ROTATE_NEW = "IGQrotnew" + "n" * 40
PAGE_TOKEN = "EAApage" + "p" * 40  # Facebook Login, never expires
SOON_TOKEN = "EAAsoon" + "q" * 40  # Facebook Login, expires in 3 days
CONFIGURED = [STUDIO_TOKEN, FRESH_TOKEN, ROTATE_TOKEN, PAGE_TOKEN, SOON_TOKEN]
# --- the accounts file --------------------------------------------------------------------------------------------

def accounts(tmp_path: Path, body: str, **files: str) -> dict[str, Any]:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "accounts.toml"
    path.write_text(body)
    return load_accounts({"IGSEND_ACCOUNTS_FILE": str(path)})


def refused(tmp_path: Path, body: str, **files: str) -> str:
    with pytest.raises(AccountError) as info:
        accounts(tmp_path, body, **files)
    return str(info.value)


def test_token_file_is_read_relative_to_the_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "a.token").write_text(f"  {STUDIO_TOKEN}\n")
    account = accounts(tmp_path, '[accounts.a]\ntoken_file = "tokens/a.token"\nrefresh = true\n')["a"]
    assert account.token == STUDIO_TOKEN
    assert account.token_file == str(tmp_path / "tokens" / "a.token")
    assert account.refresh is True
    assert STUDIO_TOKEN not in repr(account)


@pytest.mark.parametrize(("body", "files", "expected"), [
    ('[accounts.a]\ntoken = "IGQx12345678"\nrefresh = true\n', {},
     'accounts.a.refresh: refresh = true needs token_file = "PATH"'),
    ('[accounts.a]\nlogin = "facebook"\ntoken_file = "t"\nrefresh = true\n', {"t": PAGE_TOKEN},
     "accounts.a.refresh: refresh = true is for Instagram-Login tokens"),
    ('[accounts.a]\ntoken_file = "t"\ntoken_env = "X"\n', {"t": STUDIO_TOKEN},
     "accounts.a.token_file: set one of token, token_env or token_file (also set: token_env)"),
    ('[accounts.a]\ntoken_file = "missing"\n', {}, "accounts.a.token_file: cannot read"),
    ('[accounts.a]\ntoken_file = "t"\n', {"t": "\n  \n"}, "accounts.a.token_file: "),
    ('[accounts.a]\ntoken_file = "t"\n', {"t": "IGQone two"}, "the token holds a character tokens never hold"),
    ('[accounts.a]\ntoken_file = "t"\nrefresh = "yes"\n', {"t": STUDIO_TOKEN},
     "accounts.a.refresh: must be true or false"),
    ('[accounts.a]\ntoken_file = 3\n', {}, "accounts.a.token_file: must be the path of a file"),
])
def test_token_file_and_refresh_mistakes_name_the_file_account_and_field(
        tmp_path: Path, body: str, files: dict[str, str], expected: str) -> None:
    message = refused(tmp_path, body, **files)
    assert message.startswith(f"{tmp_path / 'accounts.toml'}: "), message
    assert expected in message
    assert "IGQone" not in message and STUDIO_TOKEN not in message


def test_an_empty_token_file_is_named(tmp_path: Path) -> None:
    message = refused(tmp_path, '[accounts.a]\ntoken_file = "t"\n', t="\n")
    assert message.endswith(f"accounts.a.token_file: {tmp_path / 't'} is empty")


def test_refresh_needs_a_folder_the_worker_may_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.accounts.os.access", lambda path, mode: False)  # tests may run as root
    message = refused(tmp_path, '[accounts.a]\ntoken_file = "t"\nrefresh = true\n', t=STUDIO_TOKEN)
    assert "accounts.a.refresh: refresh = true writes the new token next to" in message
    assert f"cannot write to {tmp_path}" in message


# --- the sandbox's token endpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def token_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from igsend.local.processes import start_sandbox

    service = start_sandbox(tokens=CONFIGURED, log_path=tmp_path_factory.mktemp("logs") / "sandbox.log")
    yield service.url
    service.stop()


def sandbox_token(url: str, **fields: Any) -> dict[str, Any]:
    answer = requests.post(f"{url}/_sandbox/tokens", json=fields, timeout=5)
    answer.raise_for_status()
    return answer.json()["token"]


def test_sandbox_refreshes_old_enough_instagram_tokens_only(token_sandbox: str) -> None:
    url = token_sandbox
    young = "IGQyoung" + "y" * 40
    sandbox_token(url, token=young, issued_at=time.time())
    refused_young = requests.get(f"{url}/refresh_access_token", params={
        "grant_type": "ig_refresh_token", "access_token": young}, timeout=5)
    assert refused_young.status_code == 400 and refused_young.json()["error"]["code"] == 100
    assert "at least 24 hours old" in refused_young.json()["error"]["message"]
    page = requests.get(f"{url}/refresh_access_token", params={
        "grant_type": "ig_refresh_token", "access_token": PAGE_TOKEN}, timeout=5)
    assert page.status_code == 400 and "Instagram Login" in page.json()["error"]["message"]
    unknown = requests.get(f"{url}/refresh_access_token", params={
        "grant_type": "ig_refresh_token", "access_token": "IGQnobody" + "z" * 30}, timeout=5)
    assert unknown.json()["error"]["code"] == 190
    requests.post(f"{url}/_sandbox/config", json={"refresh_min_age": 0}, timeout=5).raise_for_status()
    try:
        fresh = requests.get(f"{url}/refresh_access_token", params={
            "grant_type": "ig_refresh_token", "access_token": young}, timeout=5).json()
    finally:
        requests.post(f"{url}/_sandbox/config", json={"refresh_min_age": DAY}, timeout=5).raise_for_status()
    assert fresh["token_type"] == "bearer" and fresh["expires_in"] == 60 * DAY
    new = fresh["access_token"]
    assert new.startswith("IG")
    # the new token is accepted from now on, and the old one until its own expiry
    for token in (new, young):
        sent = requests.post(f"{url}/v25.0/me/messages", json={"recipient": {"id": "1"}, "message": {"text": "x"}},
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert sent.status_code == 200, sent.text
    listed = requests.get(f"{url}/_sandbox/tokens", timeout=5).json()
    shown = {entry["digest"]: entry for entry in listed["tokens"]}
    assert shown[digest(new)]["refreshed_from"] == digest(young)
    assert new not in json.dumps(listed) and young not in json.dumps(listed)
    # an expired token answers 190/463 everywhere
    sandbox_token(url, token=young, expires_at=time.time() - 1)
    expired = requests.post(f"{url}/v25.0/me/messages", json={"recipient": {"id": "1"}, "message": {"text": "x"}},
                            headers={"Authorization": f"Bearer {young}"}, timeout=5).json()["error"]
    assert (expired["code"], expired["error_subcode"]) == (190, 463)


def test_sandbox_debug_token(token_sandbox: str) -> None:
    url = token_sandbox
    headers = {"Authorization": f"Bearer {PAGE_TOKEN}"}
    data = requests.get(f"{url}/v25.0/debug_token", params={"input_token": PAGE_TOKEN}, headers=headers,
                        timeout=5).json()["data"]
    assert (data["is_valid"], data["expires_at"], data["type"]) == (True, 0, "PAGE")
    assert data["data_access_expires_at"] > time.time() + 80 * DAY
    ig = requests.get(f"{url}/debug_token", params={"input_token": STUDIO_TOKEN}, headers=headers,
                      timeout=5).json()["data"]
    assert ig["type"] == "USER" and ig["expires_at"] == pytest.approx(ig["issued_at"] + 60 * DAY, abs=2)
    bad = requests.get(f"{url}/v25.0/debug_token", params={"input_token": "EAAnobody" + "z" * 30}, headers=headers,
                       timeout=5)
    assert bad.status_code == 200 and bad.json()["data"]["is_valid"] is False
    assert bad.json()["data"]["error"]["code"] == 190
    caller_unknown = requests.get(f"{url}/v25.0/debug_token", params={"input_token": PAGE_TOKEN},
                                  headers={"Authorization": "Bearer EAAnobody" + "z" * 30}, timeout=5)
    assert caller_unknown.status_code == 400 and caller_unknown.json()["error"]["type"] == "OAuthException"
