"""Redis addresses (``IGSEND_REDIS_URL``) read as text: the parts of a ``sentinel://`` address, and any address
without its password, for a person or a log. Nothing here connects."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

SENTINEL_SCHEME = "sentinel://"


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], int, str | None, str | None]:
    """Split ``sentinel://h1:26379;sentinel://h2:26379/0`` (Celery's form) into the sentinels' (host, port)
    pairs, the db, and the primary's username and password: whichever part names a db or credentials gives them
    for all. Parsing only: which server is the primary, only the sentinels say."""
    hosts: list[tuple[str, int]] = []
    db, username, password = 0, None, None
    for chunk in url.split(";"):
        parts = urlsplit(chunk.strip())
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError(f"not a sentinel:// address: {safe_url(chunk)!r}")
        hosts.append((parts.hostname, parts.port or 26379))
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
        username = username or (unquote(parts.username) if parts.username else None)
        if password is None and parts.password is not None:
            password = unquote(parts.password)
    return hosts, db, username, password


def safe_url(url: str) -> str:
    """``url`` without its password, for messages a person or a log will see."""
    if ";" in url:
        return ";".join(safe_url(chunk) for chunk in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redis_address(url: str) -> str:
    """Which Redis ``url`` names, for a person: ``host:port db N`` (a socket's path, or the sentinels and the
    primary's name), never a password."""
    if is_sentinel_url(url):
        try:
            hosts, db, _, _ = sentinel_parts(url)
        except ValueError:
            return safe_url(url)
        return f"the primary behind sentinels {', '.join(f'{h}:{p}' for h, p in hosts)} db {db}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return safe_url(url)
    query_db = dict(pair.partition("=")[::2] for pair in parts.query.split("&") if pair).get("db")
    if parts.scheme == "unix":
        return f"{parts.path} db {query_db or 0}"
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    db_name = parts.path.strip("/") or query_db or "0"
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    return f"{host}:{port or 6379} db {db_name}{tls}"
