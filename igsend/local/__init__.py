"""The stack on one machine: embedded Redis, child processes with readiness waits, ``igsend up`` and ``demo``."""
