"""igsend's own packages beside the two sides (``producers`` and ``workers``) and the contract (``schemas``).

- ``igsend.core``: what both sides share and depend on one way: settings, the Redis key layout, the Celery
  app, the job record and its transitions, the dead-letter queue, account state, errors. It imports neither
  side.
- ``igsend.cli``: the ``igsend`` command line, a thin layer over the owners of each verb.
- ``igsend.local``: running the stack on one machine: embedded Redis, child processes, ``up``, ``demo``.
"""
