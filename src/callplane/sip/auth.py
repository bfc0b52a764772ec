"""Digest authentication, client side (RFC 3261 §22.2/§22.3, RFC 2617, RFC 7616 / RFC 8760).

`parse_challenge` reads a WWW-Authenticate / Proxy-Authenticate value; `authorization` computes
the matching Authorization / Proxy-Authorization value.  Algorithms: MD5, MD5-sess, SHA-256,
SHA-256-sess (RFC 8760 §2.3 lets SIP use SHA-256; SHA-512-256 is accepted too).  qop: "auth"
(preferred when offered) or none (RFC 2069 compatibility).  "auth-int" alone is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from .message import SipParseError, _split_outside, _unquote, quote

__all__ = [
    "Challenge",
    "authorization",
    "best_challenge",
    "digest_response",
    "parse_challenge",
]

_HASHES = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512-256": lambda data=b"": hashlib.new("sha512_256", data),
}


@dataclass(slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    opaque: str | None = None
    stale: bool = False
    scheme: str = "Digest"


def parse_challenge(value: str) -> Challenge:
    """Parse `Digest realm="x", nonce="y", qop="auth,auth-int", algorithm=MD5, opaque="z"`."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported auth scheme {scheme!r}")
    params: dict[str, str] = {}
    for part in _split_outside(rest, ","):
        part = part.strip()
        if not part:
            continue
        k, eq, v = part.partition("=")
        if not eq:
            raise SipParseError(f"bad challenge parameter {part!r}")
        v = v.strip()
        params[k.strip().lower()] = _unquote(v) if v.startswith('"') else v
    if "realm" not in params or "nonce" not in params:
        raise SipParseError("challenge without realm or nonce")
    qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")


def best_challenge(values: list[str]) -> Challenge:
    """RFC 8760 §2.4: of several challenges (one header line each) pick the strongest
    algorithm we support, whatever their order.  Raises SipParseError when none is usable."""
    usable: list[Challenge] = []
    for v in values:
        try:
            ch = parse_challenge(v)
        except SipParseError:
            continue
        if ch.algorithm.removesuffix("-SESS") in _PREFERENCE and (not ch.qop or "auth" in ch.qop):
            usable.append(ch)
    if not usable:
        raise SipParseError("no usable digest challenge")
    return min(usable, key=lambda c: _PREFERENCE.index(c.algorithm.removesuffix("-SESS")))


def _h(algorithm: str, data: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    fn = _HASHES.get(base)
    if fn is None:
        raise SipParseError(f"unsupported digest algorithm {algorithm!r}")
    return fn(data.encode("utf-8")).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str = "00000001",
    cnonce: str = "",
) -> str:
    """The `response` value of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1 (qop None or "auth")."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization header value answering `challenge`.

    `uri` is the Request-URI of the request being retried (§22.4: digest-uri = Request-URI).
    """
    if challenge.qop and "auth" not in challenge.qop:
        raise SipParseError(f"unsupported qop {challenge.qop!r}")
    qop = "auth" if challenge.qop else None
    cn = cnonce if cnonce is not None else secrets.token_hex(8)
    ncs = f"{nc:08x}"
    resp = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        password=password,
        realm=challenge.realm,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=ncs,
        cnonce=cn,
    )
    parts = [
        f"username={quote(username)}",
        f"realm={quote(challenge.realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(resp)}",
        f"algorithm={challenge.algorithm}",
    ]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    if qop:
        parts += [f"qop={qop}", f"nc={ncs}", f"cnonce={quote(cn)}"]
    elif challenge.algorithm.upper().endswith("-SESS"):
        # -sess folds the cnonce into HA1 (RFC 2617 §3.2.2.2), so the server needs it.
        parts.append(f"cnonce={quote(cn)}")
    return "Digest " + ", ".join(parts)


def parse_authorization(value: str) -> dict[str, str]:
    """Parameters of an Authorization header (used by a challenging UAS, e.g. in tests)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported auth scheme {scheme!r}")
    out: dict[str, str] = {}
    for part in _split_outside(rest, ","):
        part = part.strip()
        if not part:
            continue
        k, eq, v = part.partition("=")
        if not eq:
            raise SipParseError(f"bad authorization parameter {part!r}")
        v = v.strip()
        out[k.strip().lower()] = _unquote(v) if v.startswith('"') else v
    return out


def verify_authorization(
    value: str, *, method: str, username: str, password: str, realm: str
) -> bool:
    """Server-side check of an Authorization value (for the challenging-UAS test peer)."""
    p = parse_authorization(value)
    if p.get("username") != username or p.get("realm") != realm:
        return False
    expected = digest_response(
        algorithm=p.get("algorithm", "MD5"),
        username=username,
        password=password,
        realm=realm,
        nonce=p.get("nonce", ""),
        method=method,
        uri=p.get("uri", ""),
        qop=p.get("qop"),
        nc=p.get("nc", ""),
        cnonce=p.get("cnonce", ""),
    )
    return secrets.compare_digest(expected, p.get("response", ""))
