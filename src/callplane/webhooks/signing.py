"""Webhook signatures: ``X-SignalWire-Signature`` = hex HMAC-SHA256(signing_key, url + body).

``signing_key`` is the webhook signing key of the project the event belongs to (``callplane
projects list --json`` shows it), not its API token: a receiver holds the key, and the key cannot
control calls. Each project's webhooks verify with its own key only.

The URL is part of the signed message so that a captured delivery cannot be replayed to another
endpoint of the receiver; the body is signed byte for byte, so a receiver must verify the raw
request body before parsing it (re-serialising the parsed JSON would not give the same bytes).

Receiver-side use::

    from callplane.webhooks import verify_signature

    ok = verify_signature(project_signing_key, str(request.url), await request.body(),
                          request.headers["X-SignalWire-Signature"])

A GET delivery (a stream's ``status_url_method: GET``) has no body: its signature covers the full
URL requested, the configured URL with the payload's query fields appended, and an empty body;
the same call verifies it (``request.url`` includes the query, the body is ``b""``).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-SignalWire-Signature"
DELIVERY_HEADER = "X-Callplane-Delivery"


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sign(signing_key: str, url: str, body: str | bytes) -> str:
    """The hex signature callplane sends for ``body`` POSTed to ``url``."""
    mac = hmac.new(_as_bytes(signing_key), _as_bytes(url), hashlib.sha256)
    mac.update(_as_bytes(body))
    return mac.hexdigest()


def verify_signature(signing_key: str, url: str, body: str | bytes, signature: str) -> bool:
    """True if ``signature`` is the valid signature of ``body`` posted to ``url``.

    ``url`` must be the exact URL the webhook was configured with (scheme, host, port, path and
    query as registered; for a GET delivery, with the payload's query fields that callplane
    appended, i.e. the URL as requested); ``body`` the raw request body (``b""`` for a GET).
    The comparison is constant-time so that timing does not leak how many leading characters
    of a forged signature were right.
    """
    expected = sign(signing_key, url, body)
    return hmac.compare_digest(expected, signature.strip().lower())
