"""`python -m sandbox`: the local Graph API emulator, as `igsend sandbox` runs it."""

from sandbox.server import main

main()
