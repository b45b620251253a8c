"""The message contract shared by producers, the HTTP API and workers."""

from schemas.messages import (
    KINDS,
    MEDIA_KINDS,
    SCHEMAS,
    SEND_CLASS,
    TEXT_MAX_BYTES,
    InvalidMessage,
    graph_body,
    load_message,
)

__all__ = ["KINDS", "MEDIA_KINDS", "SCHEMAS", "SEND_CLASS", "TEXT_MAX_BYTES", "InvalidMessage", "graph_body",
           "load_message"]
