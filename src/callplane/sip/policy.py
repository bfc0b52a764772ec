"""Who may call in, and how much (sans-IO): the decision `SipEndpoint` applies to every new
incoming INVITE before any state is created for it.

* `TokenBucket` / `RateLimiter`: a per-source token bucket on new INVITEs (memory bounded).
* `make_nonce` / `nonce_age`: digest nonces bound to one endpoint (HMAC with its secret) that
  carry their issue time, so they are checked without storing them and expire.
* `InboundPolicy.check_invite(req, source_ip, now, active_calls)` -> `Admission`: accept, or the
  final response to send (503 + Retry-After for rate/capacity, 401 + WWW-Authenticate for an
  untrusted source without credentials, 403 when they are wrong or nobody may call in).

Nonce counts (nc) are not tracked: a captured Authorization can be replayed until its nonce
expires (`nonce_ttl`, 5 min by default), as with most SIP servers that do not keep per-nonce state.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .auth import parse_authorization, verify_authorization
from .message import SipParseError, SipRequest, parse_uri, quote

__all__ = [
    "CAPACITY_RETRY_AFTER",
    "DEFAULT_TRUSTED",
    "Admission",
    "InboundPolicy",
    "RateLimiter",
    "TokenBucket",
    "make_nonce",
    "nonce_age",
    "parse_networks",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Seconds a caller is told to wait (Retry-After of a 503) when callplane is full: the calls cap,
# or no RTP ports left for the call's media.
CAPACITY_RETRY_AFTER = 5
DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128")
# RFC 8760 §2.4 would list the preferred SHA-256 first.  MD5 goes first because clients that
# know only MD5 often read only the first challenge (sipp 3.6 does); clients that implement
# RFC 8760, ours included (auth.best_challenge), pick SHA-256 from either position.
DIGEST_ALGORITHMS = ("MD5", "SHA-256")


def parse_networks(values: Iterable[str | IpNetwork]) -> list[IpNetwork]:
    """CIDRs (or bare addresses) -> networks; raises ValueError on a bad one."""
    out: list[IpNetwork] = []
    for v in values:
        if isinstance(v, str):
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        else:
            out.append(v)
    return out


class TokenBucket:
    """`rate` tokens a second up to `burst`; `take(now)` spends one if there is one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full_at(self) -> float:
        """When the bucket will be full again (then it carries no information)."""
        return self.updated + (self.burst - self.tokens) / self.rate


class RateLimiter:
    """One TokenBucket per key (the source address).  Buckets that have refilled completely
    are dropped once more than `max_keys` exist, so a spoofed-source flood cannot grow memory
    without bound (at worst max_keys buckets of recent sources remain)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            b = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return b.take(now)

    def _prune(self, now: float) -> None:
        for k in [k for k, b in self._buckets.items() if b.full_at() <= now]:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            # Everybody is active: forget the oldest half rather than grow.
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for k in by_age[: len(by_age) // 2]:
                del self._buckets[k]


def _nonce_mac(secret: bytes, stamp: str, realm: str) -> str:
    return hmac.new(secret, f"{stamp}:{realm}".encode(), hashlib.sha256).hexdigest()[:32]


def make_nonce(secret: bytes, realm: str, now: float) -> str:
    """A nonce carrying its issue time (whole seconds, hex) and an HMAC binding it to this
    endpoint's secret and realm."""
    stamp = f"{max(0, int(now)):x}"
    return f"{stamp}.{_nonce_mac(secret, stamp, realm)}"


def nonce_age(secret: bytes, realm: str, nonce: str, now: float) -> float | None:
    """Seconds since `nonce` was issued, or None when it was not made with `secret`/`realm`."""
    stamp, dot, mac = nonce.partition(".")
    if not dot or not stamp or len(stamp) > 16 or any(c not in "0123456789abcdef" for c in stamp):
        return None
    if not hmac.compare_digest(mac, _nonce_mac(secret, stamp, realm)):
        return None
    return now - int(stamp, 16)


def _same_target(digest_uri: str, request_uri: str) -> bool:
    """§22.4 wants the digest-uri to be the Request-URI; some clients (sipp) send only
    `sip:host:port`.  The response hash covers the digest-uri anyway, so requiring the same
    host and port keeps a credential from being replayed at another server."""
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except SipParseError:
        return False
    return (a.host_bare.lower(), a.default_port()) == (b.host_bare.lower(), b.default_port())


@dataclass(frozen=True, slots=True)
class Admission:
    """`code` 0: accept (`user` is the authenticated user name, None for a trusted source);
    otherwise the final response to send, with its extra headers."""

    code: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    user: str | None = None

    @property
    def accepted(self) -> bool:
        return self.code == 0


class InboundPolicy:
    """The admission rules for new incoming INVITEs (see the module docstring).

    trusted: networks whose INVITEs need no credentials (default loopback).
    users: {name: password} for digest authentication of everybody else (none: 403).
    max_calls: concurrent calls (incoming and outgoing) beyond which INVITEs get 503.
    rate / burst: new INVITEs a second per source address (token bucket), beyond -> 503.
    """

    def __init__(
        self,
        *,
        trusted: Iterable[str | IpNetwork] | None = None,
        users: Mapping[str, str] | None = None,
        realm: str = "callplane",
        max_calls: int | None = None,
        rate: float | None = 20.0,
        burst: float = 40.0,
        nonce_ttl: float = 300.0,
        secret: bytes | None = None,
    ) -> None:
        self.trusted = parse_networks(DEFAULT_TRUSTED if trusted is None else trusted)
        self.users = dict(users or {})
        self.realm = realm
        self.max_calls = max_calls
        self.limiter = RateLimiter(rate, burst) if rate else None
        self.nonce_ttl = nonce_ttl
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == n.version and addr in n for n in self.trusted)

    def challenge(self, now: float, *, stale: bool = False) -> list[tuple[str, str]]:
        nonce = make_nonce(self._secret, self.realm, now)
        st = ", stale=true" if stale else ""
        return [
            (
                "WWW-Authenticate",
                f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, "
                f'algorithm={alg}, qop="auth"{st}',
            )
            for alg in DIGEST_ALGORITHMS
        ]

    def check_invite(
        self,
        req: SipRequest,
        source_ip: str,
        now: float,
        active_calls: int,
        *,
        rate_limited: bool = True,
    ) -> Admission:
        """`rate_limited=False` skips the rate limit (the endpoint's INVITEs to itself)."""
        if rate_limited and self.limiter is not None and not self.limiter.allow(source_ip, now):
            return Admission(503, "Service Unavailable (rate limited)", [("Retry-After", "1")])
        if self.max_calls is not None and active_calls >= self.max_calls:
            return Admission(
                503,
                "Service Unavailable (too many calls)",
                [("Retry-After", str(CAPACITY_RETRY_AFTER))],
            )
        if self.is_trusted(source_ip):
            return Admission()
        if not self.users:
            return Admission(403, "Forbidden")
        value = req.headers.get("Authorization")
        if value is None:
            return Admission(401, "Unauthorized", self.challenge(now))
        try:
            p = parse_authorization(value)
        except SipParseError:
            return Admission(400, "Bad Request (Authorization)")
        user = p.get("username", "")
        alg = p.get("algorithm", "MD5").upper()
        if p.get("realm") != self.realm or alg not in DIGEST_ALGORITHMS:
            return Admission(401, "Unauthorized", self.challenge(now))
        age = nonce_age(self._secret, self.realm, p.get("nonce", ""), now)
        if age is None or age < -5.0:
            return Admission(401, "Unauthorized", self.challenge(now))
        if not _same_target(p.get("uri", ""), req.uri) or p.get("qop") not in (None, "auth"):
            return Admission(403, "Forbidden")
        password = self.users.get(user)
        if password is None or not verify_authorization(
            value, method=req.method, username=user, password=password, realm=self.realm
        ):
            return Admission(403, "Forbidden")
        if age > self.nonce_ttl:
            # RFC 7616 §3.3: right credentials, old nonce: challenge again with stale=true.
            return Admission(401, "Unauthorized", self.challenge(now, stale=True))
        return Admission(user=user)
