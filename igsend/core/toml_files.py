"""Reading igsend's own TOML files (the accounts file, the groups file) with errors naming the setting and file."""

from __future__ import annotations

import tomllib
from typing import Any


def read_toml(path: str, *, setting: str, error: type[Exception]) -> dict[str, Any]:
    """The TOML file ``path`` that ``setting`` names, or ``error`` saying why it cannot be read (no traceback)."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise error(f"{setting}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{setting}: {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:  # also duplicate tables: "Cannot declare ... twice"
        raise error(f"{setting}: {path} is not valid TOML: {exc}") from None
