"""The Graph API client: one POST to ``/{version}/{account}/messages`` on a pooled ``requests.Session``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from workers.accounts import Account

CONNECT_TIMEOUT = 5.0
#: Below the broker's visibility timeout (30 s) so a slow answer never outlives the message's lease.
READ_TIMEOUT = 15.0


@dataclass(frozen=True)
class GraphResponse:
    status: int
    body: Any
    headers: dict[str, str]
    elapsed: float


class GraphClient:
    """Sends message bodies as the account's login kind documents them, token in the Authorization header.

    Instagram Login: JSON body (the Instagram Login pages' examples). Facebook Login: the seed's form fields
    (``recipient``, ``message``/``sender_action``, ``payload`` as JSON strings). The token never goes in the
    URL, where proxies and access logs would keep it.
    """

    def __init__(self, *, pool_size: int = 10, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def send(self, account: Account, body: dict[str, Any]) -> GraphResponse:
        """POST one message. Raises ``requests.RequestException`` when no HTTP answer arrives."""
        headers = {"Authorization": f"Bearer {account.token}"}
        params = {}
        proof = account.appsecret_proof()
        if proof:
            params["appsecret_proof"] = proof
        started = time.monotonic()
        if account.login == "facebook":
            form = {key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                    for key, value in body.items()}
            response = self.session.post(account.messages_url, params=params, data=form, headers=headers,
                                         timeout=self.timeout)
        else:
            response = self.session.post(account.messages_url, params=params, json=body, headers=headers,
                                         timeout=self.timeout)
        elapsed = time.monotonic() - started
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return GraphResponse(response.status_code, payload, dict(response.headers), elapsed)
