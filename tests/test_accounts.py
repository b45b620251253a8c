"""The account registry (env + TOML file) and the token redaction in logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.accounts import BUDGETS, DEFAULT_API_VERSION, AccountError, default_rate, load_accounts
from workers.logs import RedactTokens, redact

IG_TOKEN = "IGQtesttoken" + "x" * 40
PAGE_TOKEN = "EAAshoptoken" + "y" * 40
PLAIN_TOKEN = "plain-secret-token-1234567890"  # not token-shaped: only a configured secret catches it
APP_SECRET = "app-secret-0123456789"


# --- default account from the environment -------------------------------------------------------------------


def test_default_account_from_env_defaults() -> None:
    accounts = load_accounts({"IGSEND_ACCESS_TOKEN": IG_TOKEN})
    assert list(accounts) == ["default"]
    account = accounts["default"]
    assert account.name == "default"
    assert account.id == "me"
    assert account.login == "instagram"
    assert account.graph_url == "https://graph.instagram.com"
    assert account.api_version == DEFAULT_API_VERSION
    assert account.token == IG_TOKEN
    assert account.app_secret is None
    assert account.appsecret_proof() is None
    # Meta's Instagram-Login budget: 100/s for text-class sends, 10/s for audio and video
    assert (account.text_per_second, account.media_per_second) == (100.0, 10.0)
    assert account.messages_url == f"https://graph.instagram.com/{DEFAULT_API_VERSION}/me/messages"


def test_default_account_facebook_login() -> None:
    account = load_accounts({"IGSEND_ACCESS_TOKEN": PAGE_TOKEN, "IGSEND_LOGIN": "facebook",
                             "IGSEND_ACCOUNT_ID": "104000000000001", "IGSEND_API_VERSION": "v26.0"})["default"]
    assert account.login == "facebook"
    assert account.graph_url == "https://graph.facebook.com"
    assert account.messages_url == "https://graph.facebook.com/v26.0/104000000000001/messages"
    assert (account.text_per_second, account.media_per_second) == (300.0, 10.0)  # Facebook Login: 300/s


def test_default_account_overrides() -> None:
    account = load_accounts({
        "IGSEND_ACCESS_TOKEN": IG_TOKEN, "IGSEND_ACCOUNT_ID": "17841400000000001", "IGSEND_LOGIN": "instagram",
        "IGSEND_GRAPH_URL": "http://127.0.0.1:8765", "IGSEND_API_VERSION": "v24.0", "IGSEND_APP_SECRET": APP_SECRET,
        "IGSEND_TEXT_RATE": "50", "IGSEND_MEDIA_RATE": "2.5",
    })["default"]
    assert account.messages_url == "http://127.0.0.1:8765/v24.0/17841400000000001/messages"
    assert account.app_secret == APP_SECRET
    assert account.appsecret_proof()
    assert (account.text_per_second, account.media_per_second) == (50.0, 2.5)
    assert account.rate("media") == 2.5
    assert account.rate("text") == 50.0


def test_empty_values_fall_back_to_defaults() -> None:
    account = load_accounts({"IGSEND_ACCESS_TOKEN": IG_TOKEN, "IGSEND_ACCOUNT_ID": "", "IGSEND_LOGIN": "",
                             "IGSEND_GRAPH_URL": "", "IGSEND_API_VERSION": "", "IGSEND_APP_SECRET": ""})["default"]
    assert (account.id, account.login, account.api_version) == ("me", "instagram", DEFAULT_API_VERSION)
    assert account.graph_url == "https://graph.instagram.com"
    assert account.app_secret is None


@pytest.mark.parametrize("env", [{}, {"IGSEND_ACCESS_TOKEN": ""},
                                 {"IGSEND_ACCOUNT_ID": "123", "IGSEND_LOGIN": "facebook"}])
def test_no_token_no_default_account(env: dict[str, str]) -> None:
    assert load_accounts(env) == {}


@pytest.mark.parametrize("login", ["Instagram", "messenger", "fb", " instagram"])
def test_invalid_login_in_env(login: str) -> None:
    with pytest.raises(AccountError) as info:
        load_accounts({"IGSEND_ACCESS_TOKEN": IG_TOKEN, "IGSEND_LOGIN": login})
    assert "IGSEND_LOGIN" in str(info.value)
    assert IG_TOKEN not in str(info.value)


def test_load_accounts_reads_os_environ_when_no_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IGSEND_ACCOUNTS_FILE", "IGSEND_LOGIN", "IGSEND_ACCOUNT_ID", "IGSEND_GRAPH_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IGSEND_ACCESS_TOKEN", IG_TOKEN)
    assert load_accounts()["default"].token == IG_TOKEN


# --- TOML accounts file ---------------------------------------------------------------------------------------


@pytest.fixture
def write(tmp_path: Path):
    def _write(text: str | bytes) -> str:
        path = tmp_path / "accounts.toml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return str(path)
    return _write


ACCOUNTS_TOML = f"""
[accounts.shop]
id = "104000000000001"
login = "facebook"
token_env = "SHOP_TOKEN"
app_secret = "{APP_SECRET}"
[accounts.shop.limits]
text_per_second = 100
media_per_second = 5

[accounts.studio]
id = 17841400000000002
token = "{IG_TOKEN}"
api_version = "v26.0"

[accounts.sandboxed]
login = "instagram"
token = "{PLAIN_TOKEN}"
graph_url = "http://127.0.0.1:9000"

"""


def test_accounts_file(write) -> None:
    path = write(ACCOUNTS_TOML)
    accounts = load_accounts({"IGSEND_ACCOUNTS_FILE": path, "SHOP_TOKEN": PAGE_TOKEN, "IGSEND_API_VERSION": "v24.0"})
    assert set(accounts) == {"shop", "studio", "sandboxed"}

    shop = accounts["shop"]
    assert (shop.name, shop.id, shop.login, shop.token) == ("shop", "104000000000001", "facebook", PAGE_TOKEN)
    assert shop.messages_url == "https://graph.facebook.com/v24.0/104000000000001/messages"
    assert (shop.text_per_second, shop.media_per_second) == (100.0, 5.0)
    assert shop.app_secret == APP_SECRET

    studio = accounts["studio"]
    assert studio.id == "17841400000000002"  # an integer id is kept as a string
    assert studio.login == "instagram"
    assert studio.token == IG_TOKEN
    assert studio.messages_url == "https://graph.instagram.com/v26.0/17841400000000002/messages"
    assert (studio.text_per_second, studio.media_per_second) == (100.0, 10.0)
    assert studio.app_secret is None

    sandboxed = accounts["sandboxed"]
    assert sandboxed.id == "me"
    assert sandboxed.messages_url == "http://127.0.0.1:9000/v24.0/me/messages"


def test_accounts_file_next_to_default_account(write) -> None:
    path = write(ACCOUNTS_TOML)
    accounts = load_accounts({"IGSEND_ACCOUNTS_FILE": path, "IGSEND_ACCESS_TOKEN": IG_TOKEN, "SHOP_TOKEN": PAGE_TOKEN,
                              "IGSEND_APP_SECRET": "global-secret-123", "IGSEND_GRAPH_URL": "http://sandbox:8080"})
    assert set(accounts) == {"default", "shop", "studio", "sandboxed"}
    assert accounts["studio"].app_secret == "global-secret-123"  # the env's app secret is the fallback
    assert accounts["studio"].graph_url == "http://sandbox:8080"  # IGSEND_GRAPH_URL applies to file accounts
    assert accounts["sandboxed"].graph_url == "http://127.0.0.1:9000"  # ... unless the account names one


def test_token_beats_token_env(write) -> None:
    path = write(f'[accounts.a]\ntoken = "{IG_TOKEN}"\ntoken_env = "OTHER"\n')
    assert load_accounts({"IGSEND_ACCOUNTS_FILE": path, "OTHER": PAGE_TOKEN})["a"].token == IG_TOKEN


def test_file_without_accounts_table(write) -> None:
    assert load_accounts({"IGSEND_ACCOUNTS_FILE": write("# nothing here\n")}) == {}


@pytest.mark.parametrize("login", ["Facebook", "page", ""])
def test_invalid_login_in_file(write, login: str) -> None:
    path = write(f'[accounts.bad]\nlogin = "{login}"\ntoken = "{PAGE_TOKEN}"\n')
    with pytest.raises(AccountError) as info:
        load_accounts({"IGSEND_ACCOUNTS_FILE": path})
    assert "accounts.bad" in str(info.value)
    assert PAGE_TOKEN not in str(info.value)


@pytest.mark.parametrize("setup", ["missing", "directory"])
def test_unreadable_accounts_file(tmp_path: Path, setup: str) -> None:
    path = tmp_path / "nope.toml"
    if setup == "directory":
        path.mkdir()
    with pytest.raises(AccountError) as info:
        load_accounts({"IGSEND_ACCOUNTS_FILE": str(path), "IGSEND_ACCESS_TOKEN": IG_TOKEN})
    assert "IGSEND_ACCOUNTS_FILE" in str(info.value)
    assert IG_TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


INVALID_TOML = [
    f'[accounts.a]\ntoken = "{IG_TOKEN}\n',  # unterminated string
    f"[accounts.a]\ntoken = {PAGE_TOKEN}\n",  # unquoted
    f'[accounts.a]\ntoken = "{IG_TOKEN}"\ntoken = "{PAGE_TOKEN}"\n',  # duplicate key
    f'[accounts.a]\ntoken = "{IG_TOKEN}\\q"\n',  # bad escape
    f'[accounts.a]\ntoken = "{IG_TOKEN}" "{PAGE_TOKEN}"\n',  # two values
    f'[accounts.a\ntoken = "{IG_TOKEN}"\n',  # broken table header
]


@pytest.mark.parametrize("text", INVALID_TOML)
def test_invalid_toml_error_never_contains_a_token(write, text: str) -> None:
    path = write(text)
    with pytest.raises(AccountError) as info:
        load_accounts({"IGSEND_ACCOUNTS_FILE": path})
    message = str(info.value)
    assert "not valid TOML" in message
    for secret in (IG_TOKEN, PAGE_TOKEN, "IGQtesttoken", "EAAshoptoken"):
        assert secret not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_non_utf8_accounts_file_is_an_account_error(write) -> None:
    path = write(b'# caf\xe9 account (Latin-1)\n[accounts.a]\ntoken = "' + PAGE_TOKEN.encode() + b'"\n')
    with pytest.raises(AccountError):
        load_accounts({"IGSEND_ACCOUNTS_FILE": path})


@pytest.mark.parametrize("text", [
    f'[accounts]\nshop = "{PAGE_TOKEN}"\n',
    'accounts = ["shop"]\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\nlimits = 5\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\n[accounts.a.limits]\ntext_per_second = "fast"\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\n[accounts.a.limits]\ntext_per_second = 0\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\n[accounts.a.limits]\ntext_per_second = -5\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\n[accounts.a.limits]\ntext_per_second = nan\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\n[accounts.a.limits]\ntext_per_sec = 5\n',
    f'[accounts.a]\ntokn = "{PAGE_TOKEN}"\n',
    '[accounts.a]\nid = "1"\n',
    '[accounts.a]\ntoken = ""\n',
    '[accounts.a]\ntoken_env = "NOT_SET_ANYWHERE"\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\napp_secret_env = "NOT_SET_ANYWHERE"\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\ngraph_url = "graph.facebook.com"\n',
    f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\n[accounts.a]\nid = "2"\n',
], ids=["entry-not-a-table", "accounts-a-list", "limits-not-a-table", "limit-not-a-number", "limit-zero",
        "limit-negative", "limit-nan", "unknown-limit", "unknown-field", "no-token", "empty-token", "token-env-unset",
        "app-secret-env-unset", "graph-url-not-a-url", "duplicate-account"])
def test_malformed_accounts_file_is_an_account_error(write, text: str) -> None:
    path = write(text)
    with pytest.raises(AccountError) as info:
        load_accounts({"IGSEND_ACCOUNTS_FILE": path})
    message = str(info.value)
    assert path in message or "IGSEND_ACCOUNTS_FILE" in message  # names the file ...
    assert PAGE_TOKEN not in message  # ... never the token
    assert "\n" not in message  # one line


def test_file_account_may_not_take_the_default_name(write) -> None:
    path = write(f'[accounts.default]\ntoken = "{PAGE_TOKEN}"\n')
    with pytest.raises(AccountError, match="accounts.default"):
        load_accounts({"IGSEND_ACCOUNTS_FILE": path, "IGSEND_ACCESS_TOKEN": IG_TOKEN})


@pytest.mark.parametrize("bad", [IG_TOKEN + "\u200b", " " + IG_TOKEN, IG_TOKEN + "\n", "IGQ\u00e9token" + "x" * 30,
                                 "IGQ token"])
def test_token_a_header_cannot_carry_is_refused_without_showing_it(write, bad: str) -> None:
    for env in ({"IGSEND_ACCESS_TOKEN": bad},
                {"IGSEND_ACCOUNTS_FILE": write('[accounts.shop]\ntoken_env = "SHOP"\n'), "SHOP": bad}):
        with pytest.raises(AccountError) as info:
            load_accounts(env)
        assert bad.strip() not in str(info.value) and "U+" in str(info.value)


def test_app_id_and_per_account_app_secret(write) -> None:
    path = write(f'[accounts.a]\ntoken = "{PAGE_TOKEN}"\nlogin = "facebook"\napp_id = "shop-app"\n'
                 f'app_secret_env = "A_SECRET"\n[accounts.b]\ntoken = "{IG_TOKEN}"\n')
    accounts = load_accounts({"IGSEND_ACCOUNTS_FILE": path, "A_SECRET": "per-account-secret",
                              "IGSEND_APP_SECRET": "global-secret-123"})
    assert (accounts["a"].app_id, accounts["a"].app_secret) == ("shop-app", "per-account-secret")
    assert (accounts["b"].app_id, accounts["b"].app_secret) == ("default", "global-secret-123")
    assert accounts["a"].public() == {"name": "a", "id": "me", "login": "facebook", "app_id": "shop-app",
                                      "budgets": {"text": 300.0, "media": 10.0,
                                                  "private_reply": 750 / 3600, "conversations": 2.0},
                                      "ordered": False}


def test_budget_table_follows_the_login_kind() -> None:
    assert default_rate("text", "instagram") == 100.0 and default_rate("text", "facebook") == 300.0
    assert default_rate("media", "instagram") == default_rate("media", "facebook") == 10.0
    assert set(BUDGETS) >= {"text", "media"}


# --- the token never shows -----------------------------------------------------------------------------------


def test_repr_never_contains_the_token(write) -> None:
    path = write(ACCOUNTS_TOML)
    accounts = load_accounts({"IGSEND_ACCOUNTS_FILE": path, "SHOP_TOKEN": PAGE_TOKEN,
                              "IGSEND_ACCESS_TOKEN": IG_TOKEN, "IGSEND_APP_SECRET": APP_SECRET})
    assert len(accounts) == 4
    for account in accounts.values():
        for text in (repr(account), str(account), f"{account}", repr(accounts)):
            assert account.token not in text
            assert APP_SECRET not in text
        assert account.name in repr(account)


# --- logs.redact and RedactTokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Bearer abc.def-123", "Authorization: Bearer [redacted]"),
    ("authorization: bearer abc123", "authorization: bearer [redacted]"),
    ("GET /v25.0/me/messages?access_token=abc123&x=1", "GET /v25.0/me/messages?access_token=[redacted]&x=1"),
    ("url=https://graph.facebook.com/me?ACCESS_TOKEN=zz%2Fyy", "url=https://graph.facebook.com/me?ACCESS_TOKEN=[redacted]"),
    (f"token {PAGE_TOKEN} expired", "token [redacted] expired"),
    (f"token {IG_TOKEN}.", "token [redacted]."),
    (f'{{"token": "{"IGAA" + "z" * 30}"}}', '{"token": "[redacted]"}'),
    ("EAA short stays", "EAA short stays"),
    ("nothing secret here", "nothing secret here"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_header_with_token_shaped_value() -> None:
    cleaned = redact(f"headers={{'Authorization': 'Bearer {PAGE_TOKEN}'}}")
    assert PAGE_TOKEN not in cleaned
    assert "Bearer [redacted]" in cleaned


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactTokens([PLAIN_TOKEN, "short"]))
    logger = logging.getLogger("igsend.tests.redaction")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers = []


def test_filter_blanks_a_configured_secret_in_the_message(log) -> None:
    logger, stream = log
    logger.info(f"sending with {PLAIN_TOKEN} now")
    assert stream.getvalue() == "INFO sending with [redacted] now\n"


def test_filter_blanks_secrets_in_args(log) -> None:
    logger, stream = log
    logger.warning("account %s used %s and %s (%d%%)", "shop", PLAIN_TOKEN, f"Bearer {PAGE_TOKEN}", 50)
    output = stream.getvalue()
    assert PLAIN_TOKEN not in output
    assert PAGE_TOKEN not in output
    assert output == "WARNING account shop used [redacted] and Bearer [redacted] (50%)\n"


def test_filter_blanks_token_shaped_text_without_configuration(log) -> None:
    logger, stream = log
    logger.info("url=%s", f"https://graph.instagram.com/v25.0/me/messages?access_token={IG_TOKEN}")
    assert IG_TOKEN not in stream.getvalue()
    assert "access_token=[redacted]" in stream.getvalue()


def test_filter_blanks_exception_text(log) -> None:
    logger, stream = log
    try:
        try:
            raise ValueError(f"bad token {PLAIN_TOKEN}")
        except ValueError as inner:
            raise RuntimeError(f"send failed for {PAGE_TOKEN}") from inner
    except RuntimeError:
        logger.exception("POST failed")
    output = stream.getvalue()
    assert output.startswith("ERROR POST failed\nTraceback")
    assert PLAIN_TOKEN not in output
    assert PAGE_TOKEN not in output
    assert "ValueError: bad token [redacted]" in output
    assert "RuntimeError: send failed for [redacted]" in output


def test_filter_leaves_clean_records_alone(log) -> None:
    logger, stream = log
    logger.info("sent %s to %s", "m1", "1254477777772919")
    assert stream.getvalue() == "INFO sent m1 to 1254477777772919\n"


def test_filter_ignores_secrets_too_short_to_be_tokens(log) -> None:
    logger, stream = log
    logger.info("a short word")
    assert stream.getvalue() == "INFO a short word\n"


def test_filter_on_a_record_directly() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", (PLAIN_TOKEN,), None)
    assert RedactTokens([PLAIN_TOKEN]).filter(record) is True
    assert record.getMessage() == "token=[redacted]"
    assert record.args is None


def test_images_gifs_and_posts_ride_in_the_text_class_audio_and_video_in_media() -> None:
    # Meta names images, GIFs and posts in neither class: igsend decides text (docs/rate-limits.md).
    from schemas import KINDS, SEND_CLASS

    assert {kind for kind in KINDS if SEND_CLASS[kind] == "media"} == {"audio", "video"}
    assert all(SEND_CLASS[kind] == "text" for kind in ("image", "gif", "post", "text", "link", "sticker", "react"))
    assert set(SEND_CLASS.values()) <= set(BUDGETS)  # every class has a budget per login kind
