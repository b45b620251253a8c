"""The sandbox as a program: ``python -m sandbox`` and ``igsend.local.processes.start_sandbox`` start it, its
flags and IGSEND_SANDBOX_TOKENS reach its settings, a bad flag is refused, SIGTERM stops it cleanly.

What it answers (wire formats, validation, limits, faults, introspection) is tested in-process in
test_sandbox."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.test_sandbox import ROOT, VERSION, start, stop

TOKEN = "tok-1"
ENV_TOKEN = "tok-from-env-7f3a"
PLAIN_TOKEN = "plain-token-1"  # neither IG nor EAA: the default login kind

pytestmark = pytest.mark.timeout(60)


def send(url: str, token: str, account: str, **kwargs: object) -> requests.Response:
    return requests.post(f"{url}/{VERSION}/{account}/messages",
                         json={"recipient": {"id": "r"}, "message": {"text": "x"}},
                         headers={"Authorization": f"Bearer {token}"}, timeout=5, **kwargs)


def test_it_announces_its_url_takes_tokens_from_flags_and_the_environment_and_stops_on_sigterm() -> None:
    server = start("--token", TOKEN, "--latency-ms", "5", "--error-rate", "0.25", "--media-rate-limit", "3",
                   "--default-login", "facebook", "--app-secret", "s3cret", "--seed", "9", env_tokens=ENV_TOKEN)
    try:
        config = server.get("/_sandbox/config")
        assert config["tokens"] == 2  # one --token, one from IGSEND_SANDBOX_TOKENS
        assert (config["latency_ms"], config["error_rate"], config["media_rate_limit"]) == (5, 0.25, 3)
        assert (config["rate_limit"], config["default_login"], config["seed"]) == (None, "facebook", 9)
        assert config["app_secret"] is True and "s3cret" not in str(config)
        proof = hmac.new(b"s3cret", ENV_TOKEN.encode(), hashlib.sha256).hexdigest()
        answer = send(server.url, ENV_TOKEN, "me", params={"appsecret_proof": proof})
        # the environment's token is accepted (a code-2 error is the 25 % error rate, after authentication)
        assert answer.status_code == 200 or answer.json()["error"]["code"] == 2, answer.text
    finally:
        output = stop(server)
    assert f"sandbox listening on {server.url}" in output
    assert server.process.returncode == 0  # SIGTERM is a clean stop


def test_cli_login_and_rate_limit_flags() -> None:
    server = start("--token", PLAIN_TOKEN, "--login", "42=facebook", "--rate-limit", "50")
    try:
        config = server.get("/_sandbox/config")
        assert config["logins"] == {"42": "facebook"} and config["rate_limit"] == 50
        assert config["media_rate_limit"] is None
        send(server.url, PLAIN_TOKEN, "42")
        send(server.url, PLAIN_TOKEN, "43")
        by_account = server.get("/_sandbox/stats")["by_account"]
        assert (by_account["42"]["login"], by_account["43"]["login"]) == ("facebook", "instagram")
        assert by_account["42"]["budgets"] == by_account["43"]["budgets"] == {"text": 50, "media": 10}
    finally:
        stop(server)


@pytest.mark.parametrize("flags,words", [
    (["--login", "42=myspace"], "ACCOUNT=instagram"),
    (["--error-rate", "2"], "error_rate"),
    (["--rate-limit", "0"], "rate_limit > 0"),
])
def test_bad_flags_are_refused_with_a_usage_error(flags: list[str], words: str) -> None:
    broken = subprocess.run([sys.executable, "-m", "sandbox", *flags], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert broken.returncode == 2 and words in broken.stderr


def test_start_sandbox_passes_extra_flags_such_as_the_app_secret(tmp_path: Path) -> None:
    from igsend.local.processes import start_sandbox

    service = start_sandbox(tokens=[TOKEN], log_path=tmp_path / "sb.log", extra=["--app-secret", "s3cret"])
    try:
        proof = hmac.new(b"s3cret", TOKEN.encode(), hashlib.sha256).hexdigest()
        assert send(service.url, TOKEN, "me").json()["error"]["code"] == 100
        assert send(service.url, TOKEN, "me", params={"appsecret_proof": proof}).ok
    finally:
        service.stop()
