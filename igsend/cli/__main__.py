"""``python -m igsend.cli``: the ``igsend`` command line, run as a module."""

import os

from igsend.cli.main import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()
