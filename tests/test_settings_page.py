"""The settings page (docs/settings.md) against the code: every ``IGSEND_*`` name the code reads is documented, every
documented name is read, and each default the page gives is the one the code uses."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from igsend.core.settings import Settings
from workers.accounts import LOGIN_HOSTS, load_accounts
from workers.run import DEFAULT_CONCURRENCY

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "settings.md"
PACKAGES = ("igsend", "producers", "workers", "schemas", "sandbox")


def documented() -> dict[str, str]:
    """Each name in the first column of the page's settings table, with its part of the default column: a row
    ``| `A` / `B` | meaning | `1` / `2` |`` documents A with default `1` and B with `2`."""
    table = PAGE.read_text(encoding="utf-8").split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    for line in table.splitlines():
        if not line.startswith("| `IGSEND_"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        names = re.findall(r"`(IGSEND_[A-Z0-9_]+)`", cells[0])
        parts = cells[-1].split(" / ")
        for index, name in enumerate(names):
            defaults[name] = parts[index] if len(parts) == len(names) else cells[-1]
    return defaults


def first_value(cell: str) -> str:
    """The default a cell states: its first `code` span, or its first word (``none``, ``off``, ...)."""
    code = re.search(r"`([^`]*)`", cell)
    return code.group(1) if code else cell.split()[0].rstrip(";,")


def read_by_code() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"\bIGSEND_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    return {name for name in names if not name.endswith("_")}


def test_every_setting_the_code_reads_is_on_the_page_and_back() -> None:
    page, code = set(documented()), read_by_code()
    assert len(page) >= 30, sorted(page)
    assert sorted(code - page) == [], "documented nowhere: add a row to docs/settings.md"
    assert sorted(page - code) == [], "on docs/settings.md but read by no code"


def _env_names() -> dict[str, str]:
    """Settings field -> the environment variable ``Settings.from_env`` reads it from."""
    source = inspect.getsource(Settings.from_env)
    # `field=...("IGSEND_X"...`, or a local read from the environment first: `local = env.get("IGSEND_X"...`
    # then `field=local`
    names = dict(re.findall(r"^\s+(\w+)=[^\n]*?\"(IGSEND_[A-Z0-9_]+)\"", source, re.M))
    for local, name in re.findall(r"^\s+(\w+) = env\.get\(\"(IGSEND_[A-Z0-9_]+)\"", source, re.M):
        names.update({field: name for field in re.findall(rf"^\s+(\w+)={local},", source, re.M)})
    # chosen in igsend.core.redis_choice, which reads IGSEND_REDIS_URL first
    assert "choose_redis_url(env, data_dir)" in source
    names["redis_url"] = "IGSEND_REDIS_URL"
    return names


def _as_page_shows(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Settings) if f.name != "redis_source"])
def test_settings_defaults_match(field: str) -> None:
    name = _env_names().get(field)
    assert name, f"Settings.{field}: from_env reads it from no IGSEND_* name"
    page = documented()
    assert name in page, f"{name} is not on docs/settings.md"
    assert first_value(page[name]) == _as_page_shows(getattr(Settings, field)), (name, page[name])


def test_default_account_defaults_match() -> None:
    account = load_accounts({"IGSEND_ACCESS_TOKEN": "any-token"})["default"]
    page = documented()
    assert first_value(page["IGSEND_ACCOUNT_ID"]) == account.id
    assert first_value(page["IGSEND_LOGIN"]) == account.login
    assert first_value(page["IGSEND_API_VERSION"]) == account.api_version
    assert first_value(page["IGSEND_APP_ID"]) == account.app_id
    assert set(re.findall(r"`(https://[^`]+)`", page["IGSEND_GRAPH_URL"])) == set(LOGIN_HOSTS.values())
    assert first_value(page["IGSEND_CONCURRENCY"]) == str(DEFAULT_CONCURRENCY)
