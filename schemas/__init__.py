"""The message contract shared by producers, the HTTP API and workers."""

from schemas.messages import (
    FACEBOOK_LOGIN_ONLY,
    KINDS,
    MEDIA_KINDS,
    SCHEMAS,
    SEED_KINDS,
    SEND_CLASS,
    TEXT_MAX_BYTES,
    InvalidMessage,
    graph_body,
    load_message,
    staged,
)

__all__ = ["FACEBOOK_LOGIN_ONLY", "KINDS", "MEDIA_KINDS", "SCHEMAS", "SEED_KINDS", "SEND_CLASS", "TEXT_MAX_BYTES",
           "InvalidMessage", "graph_body", "load_message", "staged"]
