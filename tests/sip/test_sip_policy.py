"""Inbound SIP policy (sans-IO): token buckets, digest nonces, admission of new INVITEs."""

from __future__ import annotations

import pytest

from callplane.sip.auth import authorization, parse_challenge
from callplane.sip.message import Headers, SipRequest
from callplane.sip.policy import (
    InboundPolicy,
    RateLimiter,
    TokenBucket,
    make_nonce,
    nonce_age,
    parse_networks,
)

URI = "sip:service@192.0.2.10:5060"


def invite(authz: str | None = None, uri: str = URI) -> SipRequest:
    h = Headers()
    if authz is not None:
        h.add("Authorization", authz)
    return SipRequest("INVITE", uri, h)


def answer(policy: InboundPolicy, now: float, *, user: str, pw: str, alg: str = "MD5") -> str:
    adm = policy.check_invite(invite(), "198.51.100.7", now, 0)
    assert adm.code == 401
    values = [v for n, v in adm.headers if n == "WWW-Authenticate"]
    ch = next(c for c in map(parse_challenge, values) if c.algorithm == alg)
    return authorization(ch, method="INVITE", uri=URI, username=user, password=pw)


def test_token_bucket_rate_and_burst() -> None:
    b = TokenBucket(rate=20, burst=40, now=0.0)
    assert sum(b.take(0.0) for _ in range(100)) == 40
    assert not b.take(0.01)
    assert b.take(0.05)  # 0.05 s * 20/s = one token
    assert sum(b.take(10.0) for _ in range(100)) == 40  # refilled, capped at burst


def test_rate_limiter_per_source_and_bounded() -> None:
    r = RateLimiter(20, 40, max_keys=100)
    assert sum(r.allow("a", 0.0) for _ in range(50)) == 40
    assert r.allow("b", 0.0)  # another source has its own bucket
    for i in range(1000):
        r.allow(f"spoofed-{i}", 100.0 + i * 0.001)
    assert len(r) <= 100
    with pytest.raises(ValueError):
        RateLimiter(0, 1)


def test_nonce_is_bound_to_secret_and_realm_and_ages() -> None:
    n = make_nonce(b"k1", "r", 1000.0)
    assert nonce_age(b"k1", "r", n, 1010.5) == 10.5
    assert nonce_age(b"k2", "r", n, 1010.0) is None
    assert nonce_age(b"k1", "other", n, 1010.0) is None
    for bad in ("", "abc", "zz.00", "3e8." + "0" * 32, n + "0", "1" * 17 + "." + n.split(".")[1]):
        assert nonce_age(b"k1", "r", bad, 1010.0) is None


def test_trusted_networks() -> None:
    p = InboundPolicy()
    assert p.is_trusted("127.0.0.1") and p.is_trusted("127.9.9.9") and p.is_trusted("::1")
    assert p.is_trusted("::ffff:127.0.0.1")
    assert not p.is_trusted("198.51.100.7") and not p.is_trusted("garbage")
    p2 = InboundPolicy(trusted=["127.0.0.1/32", "10.0.0.0/8"])
    assert p2.is_trusted("10.1.2.3") and not p2.is_trusted("127.0.0.2")
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])


def test_untrusted_without_users_is_forbidden_trusted_is_accepted() -> None:
    p = InboundPolicy(trusted=["127.0.0.1/32"])
    assert p.check_invite(invite(), "127.0.0.1", 0.0, 0).accepted
    assert p.check_invite(invite(), "127.0.0.2", 0.0, 0).code == 403


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_digest_challenge_and_verification(alg: str) -> None:
    p = InboundPolicy(users={"alice": "s3cret"}, secret=b"x")
    adm = p.check_invite(invite(), "198.51.100.7", 100.0, 0)
    assert adm.code == 401
    algs = [parse_challenge(v).algorithm for n, v in adm.headers if n == "WWW-Authenticate"]
    assert algs == ["MD5", "SHA-256"]
    good = answer(p, 100.0, user="alice", pw="s3cret", alg=alg)
    ok = p.check_invite(invite(good), "198.51.100.7", 101.0, 0)
    assert ok.accepted and ok.user == "alice"
    assert (
        p.check_invite(
            invite(answer(p, 100.0, user="alice", pw="nope", alg=alg)), "198.51.100.7", 101.0, 0
        ).code
        == 403
    )
    assert (
        p.check_invite(
            invite(answer(p, 100.0, user="bob", pw="s3cret", alg=alg)), "198.51.100.7", 101.0, 0
        ).code
        == 403
    )
    # digest-uri: the Request-URI, or at least its host and port (sipp sends sip:host:port)
    for uri, code in (
        ("sip:other@192.0.2.10", 0),
        ("sip:service@192.0.2.10:5061", 403),
        ("sip:service@192.0.2.99:5060", 403),
    ):
        assert p.check_invite(invite(good, uri=uri), "198.51.100.7", 101.0, 0).code == code
    # expired nonce with right credentials: stale challenge
    stale = p.check_invite(invite(good), "198.51.100.7", 100.0 + 301, 0)
    assert stale.code == 401 and all(parse_challenge(v).stale for _, v in stale.headers)
    # a nonce from another endpoint (other secret) is just challenged again
    other = InboundPolicy(users={"alice": "s3cret"}, secret=b"y")
    assert other.check_invite(invite(good), "198.51.100.7", 101.0, 0).code == 401
    # garbage Authorization
    assert p.check_invite(invite("Basic abc"), "198.51.100.7", 101.0, 0).code == 400


def test_capacity_and_rate_limit_give_503_with_retry_after() -> None:
    p = InboundPolicy(max_calls=2, rate=20, burst=40)
    assert p.check_invite(invite(), "127.0.0.1", 0.0, 1).accepted
    full = p.check_invite(invite(), "127.0.0.1", 0.0, 2)
    assert full.code == 503 and ("Retry-After", "5") in full.headers
    codes = [p.check_invite(invite(), "127.0.0.5", 1.0, 0).code for _ in range(45)]
    assert codes.count(0) == 40 and codes[40:] == [503] * 5
    assert p.check_invite(invite(), "127.0.0.6", 1.0, 0).accepted  # per source
    assert InboundPolicy(rate=None).check_invite(invite(), "127.0.0.1", 0.0, 10**6).accepted
