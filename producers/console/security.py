"""How the console keeps its pages to operators: the session (which key logged in, never the key itself), the
secret that signs it, CSRF tokens on every form, and the headers every page carries (CSP, no caching)."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from igsend.core.errors import ConfigurationError
from igsend.core.settings import get_settings

SECRET_FILE = "ui-secret"
#: Every page: scripts and styles only from the console's own static files (htmx is vendored there), no inline
#: script or style, no framing, forms post only back to the console.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SESSION_HOURS = 12

csrf = CSRFProtect()


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over TLS: directly, or through a proxy that
    gunicorn trusts (``--forwarded-allow-ips``, default 127.0.0.1, with ``X-Forwarded-Proto: https``)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def ui_secret() -> str:
    """``IGSEND_UI_SECRET``, else a secret generated once into the data directory (``IGSEND_DATA_DIR/ui-secret``,
    mode 0600) and read by every process after it, so sessions survive a restart and work across gunicorn's
    processes. Several API hosts need IGSEND_UI_SECRET (the same on each)."""
    configured = os.environ.get("IGSEND_UI_SECRET", "").strip()
    if configured:
        if len(configured) < 16:
            raise ConfigurationError("IGSEND_UI_SECRET: must be at least 16 characters (it signs the console's "
                                     "session cookies); e.g. `openssl rand -hex 32`")
        return configured
    path = Path(get_settings().data_dir) / SECRET_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of several processes starting at once one writes it, the others read that one
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    for _ in range(50):  # a process that lost the race may read the file before the winner wrote it
        text = path.read_text().strip()
        if text:
            return text
        import time

        time.sleep(0.02)
    raise ConfigurationError(f"IGSEND_UI_SECRET is not set and {path} stays empty: set IGSEND_UI_SECRET")


def protect(app: Flask, exempt: list[object]) -> None:
    """Sessions, CSRF and headers for ``app``'s console; ``exempt``: the blueprints of the JSON API (keys, not
    cookies, authenticate them: a browser cannot be tricked into sending those)."""
    app.config.update(
        SECRET_KEY=ui_secret(), SESSION_COOKIE_NAME="igsend_ui", SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_FIELD_NAME="csrf_token", WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
        # the console is served over http locally (igsend up): the Referer check is for https only anyway, and a
        # strict Referrer-Policy would make it refuse our own forms
        WTF_CSRF_SSL_STRICT=False,
    )
    app.session_interface = _SessionInterface()
    csrf.init_app(app)
    for blueprint in exempt:
        csrf.exempt(blueprint)


def headers(response: Response) -> Response:
    """What every console answer carries."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if not request.path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"  # pages show live state and message metadata
    return response
