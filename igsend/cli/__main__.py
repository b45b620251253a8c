import os

from igsend.cli.main import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()
