"""Which group's inbox each entry of a webhook delivery goes to (``IGSEND_GROUPS``).

With groups, what a webhook says about an account (when a person wrote, a comment's time, the event in
``igsend:inbound``) must live in the account's group: that is where producers check the 24-hour window before
queueing and where the group's workers check it again. A delivery may hold entries of several accounts
(``entry[]``), so the handler splits it: each group's inbox receives a delivery of its accounts' entries only
(``{"object": ..., "entry": [...]}``, re-serialised: the signature was verified on the original bytes first).

An entry's account is found as :mod:`producers.webhook_inbox` finds it (the IG account id, or the Page id of a
Facebook-Login account, as the workers announced them), read here from every group's registry; its group is then
the one the groups file puts the account in (so a moved account's events follow it at once). What names no
account of any group (an account igsend does not serve, a body that is not a JSON object of entries) is kept in
the file's first group without an account, as a single Redis keeps it, and logged as unroutable.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from igsend.core.groups import Group
from producers.webhook_inbox import delivery_document

log = logging.getLogger("igsend.webhooks")

_lock = threading.Lock()
#: The last registry read from each group (group name -> IG account id -> account names): a group that does not
#: answer for a moment still has its entries routed (their store then fails, 503, and Meta retries).
_last_known: dict[str, dict[str, tuple[str, ...]]] = {}


class RegistryUnavailable(Exception):
    """An entry names an account igsend may serve, but a group whose registry was never read does not answer:
    the delivery is answered 503 and Meta retries it."""


def ids_to_accounts(groups: Mapping[str, Group],
                    read: Callable[[Group], dict[str, tuple[str, ...]]]) -> tuple[dict[str, set[str]], list[str]]:
    """IG account id -> account names, merged over every group's registry (``read``), and the groups whose
    registry is unknown (they did not answer and were never read)."""
    merged: dict[str, set[str]] = {}
    unknown: list[str] = []
    for group in groups.values():
        try:
            found = read(group)
        except Exception as exc:  # noqa: BLE001 - one group down must not stop the others' webhooks
            with _lock:
                known = _last_known.get(group.name)
            if known is None:
                log.warning("webhooks: the registry of group %s cannot be read (%s)", group.name,
                            type(exc).__name__)
                unknown.append(group.name)
                continue
            found = known
        else:
            with _lock:
                _last_known[group.name] = found
        for account_id, names in found.items():
            merged.setdefault(account_id, set()).update(names)
    return merged, unknown


def split(body: bytes, groups: Mapping[str, Group],
          read: Callable[[Group], dict[str, tuple[str, ...]]]) -> dict[str, bytes]:
    """The delivery to store in each group's inbox (group name -> body). Raises :class:`RegistryUnavailable`
    when an entry names no known account while some group's registry could not be read: it may be that group's."""
    first = next(iter(groups))
    document = delivery_document(body)
    if document is None:
        log.warning("webhooks: a delivery that is not a JSON object of entries is unroutable: kept in group %s",
                    first)
        return {first: body}  # processed there as one "unreadable" event, as without groups
    owner = {account: group.name for group in groups.values() for account in group.accounts}
    by_id, unknown = ids_to_accounts(groups, read)
    routed: dict[str, list[Any]] = {}
    unroutable: list[str] = []
    for entry in document["entry"]:
        entry_id = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        targets = sorted({owner[name] for name in by_id.get(entry_id, ()) if name in owner})
        if not targets:
            if unknown:
                raise RegistryUnavailable(f"the account of entry {entry_id or '?'} may be in group(s) "
                                          f"{', '.join(unknown)}, whose Redis does not answer")
            unroutable.append(entry_id or "?")
            targets = [first]
        for target in targets:
            routed.setdefault(target, []).append(entry)
    if unroutable:
        log.warning("webhooks: %d entr%s for an account in no group (ids %s): unroutable, kept in group %s "
                    "without an account", len(unroutable), "y" if len(unroutable) == 1 else "ies",
                    ", ".join(unroutable), first)
    head = {key: value for key, value in document.items() if key != "entry"}
    return {name: json.dumps({**head, "entry": part}, ensure_ascii=False, separators=(",", ":")).encode()
            for name, part in routed.items()}
