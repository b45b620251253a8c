"""The shared core: settings, Redis keys, the Celery app, the job record, the DLQ, account state, errors."""
