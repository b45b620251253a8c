"""Moved to :mod:`igsend.core.dlq` (both sides use it); kept so ``from workers import dlq`` still works."""

from igsend.core.dlq import *  # noqa: F403
from igsend.core.dlq import list_entries, purge, replay, show  # noqa: F401
