"""Worker side of igsend: the Celery task, Graph client, admission and rate limiting, retries, DLQ, sandbox."""
