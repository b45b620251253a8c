"""The floor Celery itself sets for ``ops/bench throughput``: the featureless Celery task.

Celery's ``threads`` pool on the Redis transport, acks_late with one message prefetched per free slot (as
igsend's workers run), no result, no task events, no Celery INFO lines, no rate limits; the task does one POST on
a pooled ``requests.Session`` and nothing else: no admission, no job record, no logging, no metrics. Whatever
igsend spends per message beyond this row is igsend's own; what this row spends beyond the bare POST (the
ceiling row) is Celery's per-task path. Started by the benchmark as
``celery -A featureless_app worker -P threads -c 64 -Q featureless --without-gossip --without-mingle``.
"""

import os

import requests
from celery import Celery
from requests.adapters import HTTPAdapter

app = Celery("featureless", broker=os.environ["FEATURELESS_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="featureless",
                task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1,
                worker_send_task_events=False, worker_disable_rate_limits=True, worker_hijack_root_logger=False)

session = requests.Session()
session.mount("http://", HTTPAdapter(pool_maxsize=64))
session.mount("https://", HTTPAdapter(pool_maxsize=64))


@app.task(name="featureless.send")
def send(url: str, token: str, body: dict) -> None:
    session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
