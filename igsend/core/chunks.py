"""Chunks: several jobs of one lane (one account's send class) handed to a worker as ONE Celery task.

Celery's per-task path (fetch, unacked bookkeeping, three task events, ack) costs about as much CPU as the POST
itself (docs/performance.md). The dispatcher (workers/scheduler.py) therefore publishes what it takes from a lane
as one ``igsend.send_chunk`` task: its arguments are the account, the send class and how many jobs (what Flower
shows), the job ids travel in the keyword argument ``jobs`` (never a token nor a message's text; Flower shows
``{'jobs': '50 job ids'}``) and in the message header ``igsend_jobs`` (so the lost-message sweeper can tell which
jobs a queued or unacknowledged chunk holds without decoding its body). Each job keeps its record, its admission,
its lock and its in-flight mark: a chunk redelivered after its worker died (acks_late) skips the jobs already
delivered and ends the in-flight ones as a redelivered ``igsend.send_message`` would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from igsend.core.celery_app import NEW_PRIORITY, QUEUE
from igsend.core.lanes import LANE_PREFIX

CHUNK_TASK_NAME = "igsend.send_chunk"
#: The message header that names a chunk's job ids.
JOBS_HEADER = "igsend_jobs"


@dataclass(frozen=True)
class Chunk:
    account: str
    send_class: str
    job_ids: list[str]


def split(reply: list[Any], size: int) -> list[Chunk]:
    """lua/claim_fair.lua's answer (lane, count, ids... per step) as chunks of at most ``size`` ids of one lane, in
    the order the lanes were served; consecutive steps of one lane join one chunk."""
    chunks: list[Chunk] = []
    index = 0
    while index < len(reply):
        lane, count = str(reply[index]), int(reply[index + 1])
        ids = [str(job_id) for job_id in reply[index + 2:index + 2 + count]]
        index += 2 + count
        account, _, send_class = lane[len(LANE_PREFIX):].rpartition("|")
        if chunks and chunks[-1].account == account and chunks[-1].send_class == send_class:
            last = chunks.pop()
            ids = [*last.job_ids, *ids]
        for start in range(0, len(ids), size):
            chunks.append(Chunk(account, send_class, ids[start:start + size]))
    return chunks


def argsrepr(account: str, send_class: str, count: int) -> str:
    return repr([account, send_class, count])


def publish(app: Any, producer: Any, chunk: Chunk) -> str:
    """Publish one ``igsend.send_chunk``; returns its task id."""
    task_id = f"chunk-{uuid.uuid4()}"
    count = len(chunk.job_ids)
    message = app.amqp.create_task_message(task_id, CHUNK_TASK_NAME, [chunk.account, chunk.send_class, count],
                                           {"jobs": chunk.job_ids}, argsrepr=argsrepr(chunk.account,
                                                                                      chunk.send_class, count),
                                           kwargsrepr=repr({"jobs": f"{count} job ids"}), ignore_result=True)
    message.headers[JOBS_HEADER] = chunk.job_ids
    app.amqp.send_task_message(producer, CHUNK_TASK_NAME, message, queue=QUEUE, priority=NEW_PRIORITY, declare=[])
    return task_id


# KEYS: moving. ARGV: ids. The ids a dispatch step pushed at the right end of the moving list are published: take
# them off (LTRIM when they are the tail, as they are unless another leader's step ran meanwhile; else one by one).
_UNMOVE = """
local n = #ARGV
local tail = redis.call('LRANGE', KEYS[1], -n, -1)
local same = #tail == n
if same then
  for i = 1, n do
    if tail[i] ~= ARGV[i] then same = false break end
  end
end
if same then
  redis.call('LTRIM', KEYS[1], 0, -n - 1)
else
  for i = 1, n do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
end
return n
"""


def unmove(client: Any, moving: str, job_ids: list[str]) -> None:
    if job_ids:
        client.register_script(_UNMOVE)(keys=[moving], args=job_ids)


def job_ids_in(envelope: Any) -> list[str]:
    """The job ids a kombu envelope (a decoded queue item or unacked entry) stands for: a chunk's ``igsend_jobs``,
    else the task id (an ``igsend.send_message``'s id is its job's)."""
    try:
        headers = envelope["headers"]
        jobs = headers.get(JOBS_HEADER)
        if isinstance(jobs, list):
            return [str(job_id) for job_id in jobs]
        return [str(headers["id"])] if headers.get("id") else []
    except (KeyError, TypeError, AttributeError):
        return []


__all__ = ["CHUNK_TASK_NAME", "JOBS_HEADER", "QUEUE", "Chunk", "argsrepr", "job_ids_in", "publish", "split",
           "unmove"]
