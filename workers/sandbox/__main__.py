from workers.sandbox.server import main

main()
