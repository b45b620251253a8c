"""Logging for worker processes: a filter that blanks anything shaped like a Graph token, on every handler,
and with ``IGSEND_LOG_FORMAT=json`` a formatter that makes every line one JSON object."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

from igsend.core import tracing

# Meta tokens: user/page tokens start with EAA (Facebook Login) or IG (Instagram Login) followed by a long
# run of URL-safe characters. Whatever follows "Bearer ", "access_token=" or "input_token=" (debug_token) is
# blanked too.
_TOKEN_SHAPED = re.compile(r"\b(?:EAA|IGQ|IGA)[A-Za-z0-9_\-]{20,}")
_AFTER_MARKER = re.compile(r"(?i)(bearer\s+|access_token=|input_token=)[^&\s\"',;]+")


def redact(text: str) -> str:
    # Each pattern runs only on text holding its literal part: most lines hold neither, and the case-insensitive
    # scan alone cost a worker more than the rest of its per-POST log line. casefold() folds what (?i) matches
    # ("ſ" for "s", the Kelvin sign for "k").
    folded = text.casefold()
    if "bearer" in folded or "_token=" in folded:
        text = _AFTER_MARKER.sub(r"\1[redacted]", text)
    if "EAA" in text or "IG" in text:
        text = _TOKEN_SHAPED.sub("[redacted]", text)
    return text


class RedactTokens(logging.Filter):
    """Second line of defence: tokens never reach a log call by design, and this blanks them if one does."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        # Kept as given, not copied: workers.accounts.secrets() grows when a token file brings a new token.
        self._secrets = secrets if secrets is not None else []

    @property
    def secrets(self) -> list[str]:
        return [s for s in self._secrets if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        secrets = self.secrets
        for secret in secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
            for secret in secrets:
                record.exc_text = record.exc_text.replace(secret, "[redacted]")
            record.exc_info = None
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, tracebacks included (in ``exc``), so a log pipeline never has to join
    lines. A message that is itself a JSON object (igsend's per-POST line) is merged in, not nested."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, object] = {"ts": round(record.created, 3), "level": record.levelname,
                                   "logger": record.name, "process": record.processName}
        parsed = None
        if message.startswith("{"):
            try:
                parsed = json.loads(message)
            except ValueError:
                pass
        if isinstance(parsed, dict):
            data.update(parsed)
        else:
            data["message"] = message
        if getattr(record, "trace_id", ""):  # inside a span, with traces on (igsend.core.tracing)
            data["trace_id"], data["span_id"] = record.trace_id, record.span_id  # type: ignore[attr-defined]
        for field in ("task_name", "task_id"):  # set on Celery's task-logger records
            if getattr(record, field, None) not in (None, "???"):
                data[field] = getattr(record, field)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TraceIdsInText(tracing.TraceIds):
    """Text logs: a line written inside a span ends with its ``trace_id=… span_id=…``."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = tracing.ids()
        if found:
            record.msg, record.args = f"{record.getMessage()} trace_id={found[0]} span_id={found[1]}", None
        return True


def configure_logging() -> None:
    """Install the filter on the root logger's handlers as Celery sets them up, and on Celery's own."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    from igsend.core.settings import get_settings
    from workers.accounts import secrets as configured_secrets

    as_json = get_settings().log_format == "json"

    def install(logger: logging.Logger | None = None, **_: object) -> None:
        # igsend logs one line per POST itself; Celery's "received"/"succeeded" lines per task would triple
        # the log volume (and its CPU cost) without adding anything. Failures still log.
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        secrets = configured_secrets()
        for target in {logger or logging.getLogger(), logging.getLogger()}:
            for handler in target.handlers:
                if not any(isinstance(f, RedactTokens) for f in handler.filters):
                    handler.addFilter(RedactTokens(secrets))
                if tracing.on() and not any(isinstance(f, tracing.TraceIds) for f in handler.filters):
                    handler.addFilter(tracing.TraceIds() if as_json else TraceIdsInText())
                if as_json:
                    handler.setFormatter(JsonFormatter())

    after_setup_logger.connect(install, weak=False)
    after_setup_task_logger.connect(install, weak=False)
    if as_json:
        _json_from_the_start(secrets_of=configured_secrets)


def _json_from_the_start(secrets_of: object) -> None:
    """Make the lines written before and around Celery's logging JSON too.

    A root handler installed now is kept by Celery (it only adds one to an unconfigured root logger), so
    Python warnings (captured into logging) and early errors are formatted like the rest. Celery prints its
    shutdown notices with ``celery.apps.worker.safe_say`` (raw writes from signal handlers, bypassing
    logging): those are replaced by a JSON line written the same lock-free way.
    """
    import celery.apps.worker

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RedactTokens(secrets_of()))  # type: ignore[operator]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)

    def json_say(msg: str, f: object = sys.__stderr__) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "level": "WARNING", "logger": "celery.apps.worker",
                           "process": "MainProcess", "message": redact(str(msg))}, ensure_ascii=False)
        try:
            os.write(f.fileno(), (line + "\n").encode())  # type: ignore[attr-defined]
        except (OSError, AttributeError, ValueError):
            pass  # a notice must never break a shutdown

    celery.apps.worker.safe_say = json_say  # type: ignore[attr-defined]  # celery-types does not declare it
