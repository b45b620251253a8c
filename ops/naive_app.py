"""The baseline for ``ops/bench throughput``: the Celery task most teams start with.

One ``requests.post`` per task, a new connection each time, default prefork pool with concurrency = cores.
Started by the benchmark as ``celery -A naive_app worker -P prefork -c CORES -Q naive``.
"""

import os

import requests
from celery import Celery

app = Celery("naive", broker=os.environ["NAIVE_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="naive", task_ignore_result=True)


@app.task(name="naive.send")
def send(url: str, token: str, body: dict) -> None:
    # The token rides in the task arguments here, as it does in most hand-written senders.
    requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
