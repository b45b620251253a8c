"""The ``igsend`` command line."""

from igsend.cli.main import main

__all__ = ["main"]
