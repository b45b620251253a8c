"""The index from Meta's message id to its job (igsend/core/sent.py) and the compact delivered record it points to."""

from __future__ import annotations

import json

import pytest

from igsend.core import sent
from igsend.core.records import decode_done


@pytest.mark.parametrize("job_id", ["0aeb69f5-02f3-44c4-8c5e-b2584ad5aa5b", "celery-node-42",
                                    "C5486CE6-246A-45D8-9664-F7A5C8017C53", "!odd", ""])
def test_a_job_id_comes_back_as_it_was_given(job_id: str) -> None:
    kept = sent.compact_job_id(job_id)
    assert sent.job_id_of(kept) == job_id
    if job_id.islower() and len(job_id) == 36:
        assert len(kept) == 22  # a UUID's 16 bytes


def test_the_hashes_searched_cover_the_whole_retention_and_a_worker_clock_ahead() -> None:
    now = 10 * sent.BUCKET + 5
    keys = sent.recent_keys("shop", within=2 * sent.BUCKET, now=now)
    assert keys == [sent.sent_key("shop", now), sent.sent_key("shop", now + sent.BUCKET),
                    sent.sent_key("shop", now - sent.BUCKET), sent.sent_key("shop", now - 2 * sent.BUCKET)]


def test_a_delivered_record_keeps_metas_id_without_its_common_prefix_and_reads_it_back_whole() -> None:
    mid = sent.MESSAGE_ID_PREFIX + "abc123"
    new = decode_done("j1", json.dumps({"k": "text", "a": "shop", "r": "17841400000000001", "c": 1000.5, "e": 1500,
                                        "ms": 120.0, "mi": "~abc123"}))
    old = decode_done("j1", json.dumps({"k": "text", "a": "shop", "r": "17841400000000001", "c": 1000.5,
                                        "d": 1002.0, "n": 1, "ms": 120.0, "mi": mid}))
    assert new == old
    assert new["result"] == {"recipient_id": "17841400000000001", "message_id": mid}
    assert new["delivered_at"] == 1002.0 and new["attempts"] == 1
    assert sent.expand_message_id("mid.other") == "mid.other"  # an id without the prefix is kept whole
