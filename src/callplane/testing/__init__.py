"""Testing voice applications: a virtual phone on callplane's own SIP and media stack, a server
for the test session and a webhook receiver (see docs/testing.md).

The pytest plugin (`callplane.testing.plugin`, entry point ``pytest11``) provides them as the
fixtures ``callplane_server``, ``phone`` and ``webhooks``; outside pytest::

    from callplane.testing import CallplaneServer, Phone, PhoneRuntime
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callplane.testing.match import DEFAULT_THRESHOLD, Match, match
    from callplane.testing.phone import (
        CallFailed,
        Phone,
        PhoneError,
        PhoneRuntime,
        TranscriptEntry,
    )
    from callplane.testing.server import CallplaneServer
    from callplane.testing.webhooks import Webhook, WebhookReceiver, signature

_EXPORTS = {
    "DEFAULT_THRESHOLD": "match",
    "Match": "match",
    "match": "match",
    "CallFailed": "phone",
    "Phone": "phone",
    "PhoneError": "phone",
    "PhoneRuntime": "phone",
    "TranscriptEntry": "phone",
    "CallplaneServer": "server",
    "Webhook": "webhooks",
    "WebhookReceiver": "webhooks",
    "signature": "webhooks",
}

__all__ = [
    "DEFAULT_THRESHOLD",
    "CallFailed",
    "CallplaneServer",
    "Match",
    "Phone",
    "PhoneError",
    "PhoneRuntime",
    "TranscriptEntry",
    "Webhook",
    "WebhookReceiver",
    "match",
    "signature",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import callplane.testing` (the pytest plugin does) must not load numpy and the
    # speech model into every test session.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(f"callplane.testing.{module}"), name)
