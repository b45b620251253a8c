"""GET /healthz: whether Redis answers, the workers alive and what puts messages at risk, for each group too."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from igsend.core import routing
from igsend.core.groups import Group
from igsend.core.settings import get_settings
from igsend.core.store import redis_warnings
from producers.api.redis_check import quick_redis

health_blp = Blueprint("health", __name__, description="Is the service able to send")


class HealthSchema(Schema):
    ok = fields.Boolean(required=True, metadata={"description": "Redis answers (messages can be queued)"})
    redis = fields.Boolean(required=True)
    workers = fields.Integer(required=True, metadata={"description": "workers whose heartbeat is alive"})
    workers_warning = fields.String(metadata={"description": "when no worker is alive: what to run"})
    warnings = fields.List(fields.String(), metadata={
        "description": "Redis settings that put messages at risk, one sentence each"})
    token_warnings = fields.List(fields.String(), metadata={
        "description": "accounts whose token expires within 7 days (or expired), or whose last token refresh or "
                       "check failed, one sentence each (docs: Tokens)"})
    error = fields.String(metadata={"description": "the type of the error a probe met"})


class GroupHealthSchema(HealthSchema):
    group = fields.String(required=True, metadata={"description": "the group's name (IGSEND_GROUPS)"})
    accounts = fields.List(fields.String(), required=True, metadata={"description": "the group's accounts"})


class HealthWithGroupsSchema(HealthSchema):
    groups = fields.List(fields.Nested(GroupHealthSchema), metadata={
        "description": "with IGSEND_GROUPS: each group's own probe; `ok` is then true when every group's Redis "
                       "answers, and the answer is 503 only when none does"})


@health_blp.route("/healthz", methods=["GET"])
@health_blp.doc(operationId="health", security=[])
@health_blp.response(200, HealthWithGroupsSchema, description="Redis answers (workers are reported, not required)")
@health_blp.alt_response(503, schema=HealthWithGroupsSchema, description="Redis does not answer")
def healthz() -> Any:
    """Whether Redis answers, how many workers announced themselves, and what puts messages at risk; no key.
    With IGSEND_GROUPS, the same for each group under ``groups``, summed up at the top."""
    groups = [group for group in routing.every_group() if group]
    if not groups:
        health = _probe(get_settings().redis_url)
        return jsonify({"ok": health["redis"], **health}), 200 if health["redis"] else 503
    probes = [{"group": group.name, "accounts": list(group.accounts), **_probe(group.redis_url, group)}
              for group in groups]
    total: dict[str, Any] = {
        "ok": all(probe["redis"] for probe in probes), "redis": all(probe["redis"] for probe in probes),
        "workers": sum(probe["workers"] for probe in probes),
        "warnings": [f"group {probe['group']}: {warning}" for probe in probes for warning in probe.get("warnings", [])],
        "token_warnings": [f"group {probe['group']}: {warning}" for probe in probes
                           for warning in probe.get("token_warnings", [])],
        "groups": probes}
    down = [probe["group"] for probe in probes if not probe["redis"]]
    if down:
        total["error"] = f"Redis of group(s) {', '.join(down)} does not answer"
    return jsonify(total), 200 if len(down) < len(probes) else 503


def _probe(url: str, group: Group | None = None) -> dict[str, Any]:
    """One Redis's health: whether it answers, its workers, what puts its messages at risk."""
    from igsend.core import presence
    from igsend.core.account_state import token_warnings

    health: dict[str, Any] = {"redis": False, "workers": 0}
    # Each probe on its own: a failing one is reported, never raised; the workers are read from their
    # heartbeats (igsend.core.presence), not pinged, and not read when Redis is down.
    try:
        with routing.in_group(group):  # settings-driven checks (DLQ cap, replica acks) read this group's
            client = quick_redis(url)
            health["redis"] = bool(client.ping())
            health["warnings"] = redis_warnings(client)  # e.g. eviction on, or no persistence: reported, not fatal
            health["workers"] = presence.read(client).alive
            health["token_warnings"] = token_warnings(client=client)  # reported, not fatal, as the Redis warnings
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not crash
        health["error"] = type(exc).__name__
    if health["redis"] and not health["workers"]:
        # Reported, not fatal: the API still queues, and the messages wait for a worker.
        health["workers_warning"] = presence.no_worker_warning()
    return health
