"""Messages that never reach the task body still end their job, and never show their text.

Other Celery clients publish ``igsend.send_message`` in shapes Celery itself trips over before igsend's code
runs: a pickled body is refused (igsend accepts JSON only), a body may not decode at all, and an operator may
revoke a task in Flower. Each would leave its job ``queued`` forever. Here :class:`Consumer` and the
``task_rejected`` / ``task_revoked`` handlers end the job: dead-lettered with the reason when the message could
not be read, ``cancelled`` when it was revoked before it was sent. (Celery-node's ``kwargs: null`` does reach
the task: :class:`workers.tasks.Request` reads it.)
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_rejected, task_revoked
from celery.worker.consumer import Consumer as CeleryConsumer

from igsend.core import records
from igsend.core.celery_app import TASK_NAME
from igsend.core.errors import CancelRefused
from igsend.core.settings import get_settings
from igsend.core.store import get_redis
from workers.tasks import DeadLettered, _dead, context

log = logging.getLogger("igsend.raw")


def _message_ids(message: Any) -> tuple[str | None, str | None]:
    headers = getattr(message, "headers", None) or {}
    return headers.get("id"), headers.get("task")


def dead_letter_unreadable(message: Any, why: str) -> None:
    """End the job of a message whose body igsend could not read (it cannot say what was in it)."""
    job_id, task = _message_ids(message)
    if task != TASK_NAME or not job_id:
        return
    content_type = getattr(message, "content_type", None)
    try:
        _dead(context(), job_id, f"unreadable message ({why}; content type {content_type}): send the message "
              "document as JSON", None, None, raw={"content_type": content_type})
    except DeadLettered:
        pass
    except Exception:  # Redis away: the message is gone either way; say so in the log
        log.exception("could not dead-letter unreadable message %s", job_id)


class Consumer(CeleryConsumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        dead_letter_unreadable(message, f"the body does not decode: {type(exc).__name__}")


@task_rejected.connect
def _on_rejected(message: Any = None, exc: Exception | None = None, **_: Any) -> None:
    # ContentDisallowed (e.g. a pickled body) and other invalid task messages land here.
    dead_letter_unreadable(message, type(exc).__name__ if exc else "rejected")


@task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    # sender: the task; request: its context (no task name on it)
    if getattr(sender, "name", None) != TASK_NAME or not getattr(request, "id", None):
        return
    reason = "expired before it was sent" if expired else "revoked (e.g. in Flower) before it was sent"
    try:
        records.cancel(get_redis(), request.id, reason=reason, record_ttl=get_settings().result_ttl, create=True)
    except CancelRefused as refused:
        log.warning("job %s was revoked while %s; its outcome stands", request.id, refused.status)
    except Exception:
        log.exception("could not cancel revoked job %s", request.id)
