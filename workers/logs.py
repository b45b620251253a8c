"""Logging for worker processes: a filter that blanks anything shaped like a Graph token, on every handler."""

from __future__ import annotations

import logging
import re

# Meta tokens: user/page tokens start with EAA (Facebook Login) or IG (Instagram Login) followed by a long
# run of URL-safe characters. Whatever follows "Bearer " or "access_token=" is blanked too.
_TOKEN_SHAPED = re.compile(r"\b(?:EAA|IGQ|IGA)[A-Za-z0-9_\-]{20,}")
_AFTER_MARKER = re.compile(r"(?i)(bearer\s+|access_token=)[^&\s\"',;]+")


def redact(text: str) -> str:
    return _TOKEN_SHAPED.sub("[redacted]", _AFTER_MARKER.sub(r"\1[redacted]", text))


class RedactTokens(logging.Filter):
    """Second line of defence: tokens never reach a log call by design, and this blanks them if one does."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = [s for s in (secrets or []) if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "[redacted]")
            record.exc_info = None
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging() -> None:
    """Install the filter on the root logger's handlers as Celery sets them up, and on Celery's own."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    from workers.accounts import registry

    def install(logger: logging.Logger | None = None, **_: object) -> None:
        # igsend logs one line per POST itself; Celery's "received"/"succeeded" lines per task would triple
        # the log volume (and its CPU cost) without adding anything. Failures still log.
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        secrets = [account.token for account in registry().values()]
        for target in {logger or logging.getLogger(), logging.getLogger()}:
            for handler in target.handlers:
                if not any(isinstance(f, RedactTokens) for f in handler.filters):
                    handler.addFilter(RedactTokens(secrets))

    after_setup_logger.connect(install, weak=False)
    after_setup_task_logger.connect(install, weak=False)
