"""Durable delivery of events to customer URLs (the webhook outbox) and its signature scheme.

Imports only ``callplane.store`` (and ``callplane._version`` for the User-Agent).
"""

from callplane.webhooks.outbox import (
    DEFAULT_MAX_AGE,
    USER_AGENT,
    OutboxStats,
    WebhookOutbox,
    query_string,
    with_query,
)
from callplane.webhooks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign, verify_signature

__all__ = [
    "DEFAULT_MAX_AGE",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "OutboxStats",
    "WebhookOutbox",
    "query_string",
    "sign",
    "verify_signature",
    "with_query",
]
