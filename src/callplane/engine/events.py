"""Where every event of a call goes: the store (always) and the status webhooks (when subscribed).

Payloads follow reference §7.1: `{event_type, event_channel, timestamp, project_id, space_id,
params}`; the engine builds them here so operations only name their event type and params.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from callplane.engine.calls import Call
from callplane.store import Store
from callplane.webhooks import WebhookOutbox

log = logging.getLogger("callplane.engine.events")


class EventSink:
    def __init__(self, store: Store, outbox: WebhookOutbox, *, space_id: str) -> None:
        self._store = store
        self._outbox = outbox
        self._space_id = space_id

    def envelope(self, call: Call, event_type: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_type": event_type,
            "event_channel": f"swml:{call.node_id}",
            "timestamp": time.time(),
            "project_id": call.project_id,
            "space_id": self._space_id,
            "params": {"call_id": call.id, "node_id": call.node_id, **params},
        }

    def emit(
        self,
        call: Call,
        event_type: str,
        params: dict[str, Any],
        *,
        webhook_url: str | None,
        method: str = "POST",
    ) -> dict[str, Any]:
        """Store the event with its call and, when `webhook_url` is set, queue it for delivery.

        Both writes are durable before this returns, so an accepted event survives a crash.
        Delivery is ordered per call: the call id is the outbox's ordering key; the call's project
        signs it. ``method`` is the webhook's HTTP method (GET or POST: a stream's
        ``status_url_method``).
        """
        payload = self.envelope(call, event_type, params)
        self.deliver(call, payload, webhook_url, method=method)
        return payload

    def deliver(
        self,
        call: Call,
        payload: dict[str, Any],
        webhook_url: str | None,
        *,
        method: str = "POST",
    ) -> None:
        """A payload whose shape the caller built (e.g. §7.4's transcript callbacks, which have
        no event_channel): stored with the call, and sent when a URL is given."""
        self._store.append_event(call.id, payload)
        if webhook_url:
            self._outbox.enqueue(
                webhook_url,
                payload,
                ordering_key=call.id,
                project_id=call.project_id,
                method=method,
            )
