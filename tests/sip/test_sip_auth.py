"""Digest authentication (RFC 2617 §3.5 and RFC 7616 §3.9.1 vectors; RFC 8760 for SIP)."""

from __future__ import annotations

import pytest

from callplane.sip.auth import (
    Challenge,
    authorization,
    best_challenge,
    digest_response,
    parse_authorization,
    parse_challenge,
    verify_authorization,
)
from callplane.sip.message import SipParseError


def test_rfc2617_md5_vector() -> None:
    # RFC 2617 §3.5
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    # RFC 7616 §3.9.1 (the SHA-256 digest RFC 8760 brings to SIP)
    assert (
        digest_response(
            algorithm=algorithm,
            username="Mufasa",
            password="Circle of Life",
            realm="http-auth@example.org",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_parse_challenge() -> None:
    ch = parse_challenge(
        'Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth,auth-int", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert ch == Challenge(
        realm="atlanta.com",
        nonce="f84f1cec41e6cbe5aea9c8e88d359",
        algorithm="MD5",
        qop=["auth", "auth-int"],
        opaque="",
        stale=False,
    )
    ch2 = parse_challenge('digest realm="r", nonce="n", algorithm=SHA-256, stale=true')
    assert ch2.algorithm == "SHA-256" and ch2.stale and ch2.qop == [] and ch2.opaque is None


@pytest.mark.parametrize(
    "value",
    ['Basic realm="x"', 'Digest nonce="n"', 'Digest realm="r"', "Digest realm", 'Digest realm="x'],
)
def test_bad_challenges(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_challenge(value)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess", "SHA-512-256"])
@pytest.mark.parametrize("qop", [True, False])
def test_authorization_header_verifies(algorithm: str, qop: bool) -> None:
    ch = Challenge(
        realm="callplane",
        nonce="abc123",
        algorithm=algorithm,
        qop=["auth"] if qop else [],
        opaque="op aque",
    )
    value = authorization(
        ch,
        method="INVITE",
        uri="sip:bob@127.0.0.1",
        username="alice",
        password='s3cr"et',
        nc=1,
        cnonce="c0ffee",
    )
    p = parse_authorization(value)
    assert p["username"] == "alice" and p["realm"] == "callplane" and p["nonce"] == "abc123"
    assert p["uri"] == "sip:bob@127.0.0.1" and p["algorithm"] == algorithm
    assert p["opaque"] == "op aque"
    if qop:
        assert (p["qop"], p["nc"], p["cnonce"]) == ("auth", "00000001", "c0ffee")
    else:
        assert "qop" not in p and "nc" not in p
    assert verify_authorization(
        value, method="INVITE", username="alice", password='s3cr"et', realm="callplane"
    )
    assert not verify_authorization(
        value, method="INVITE", username="alice", password="wrong", realm="callplane"
    )
    assert not verify_authorization(
        value, method="BYE", username="alice", password='s3cr"et', realm="callplane"
    )


def test_auth_int_only_is_refused_and_unknown_algorithm() -> None:
    with pytest.raises(SipParseError):
        authorization(
            Challenge("r", "n", qop=["auth-int"]),
            method="INVITE",
            uri="sip:a@b",
            username="u",
            password="p",
        )
    with pytest.raises(SipParseError):
        authorization(
            Challenge("r", "n", algorithm="SHA-1"),
            method="INVITE",
            uri="sip:a@b",
            username="u",
            password="p",
        )


def test_random_cnonce() -> None:
    ch = Challenge("r", "n", qop=["auth"])
    a = parse_authorization(
        authorization(ch, method="INVITE", uri="sip:a@b", username="u", password="p")
    )
    b = parse_authorization(
        authorization(ch, method="INVITE", uri="sip:a@b", username="u", password="p")
    )
    assert a["cnonce"] != b["cnonce"] and len(a["cnonce"]) >= 8


def test_best_challenge_prefers_the_strongest_supported() -> None:
    md5 = 'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"'
    odd = 'Digest realm="r", nonce="n3", algorithm=SHA-1024'
    only_int = 'Digest realm="r", nonce="n4", algorithm=SHA-256, qop="auth-int"'
    assert best_challenge([md5, sha]).nonce == "n2"
    assert best_challenge([sha, md5]).nonce == "n2"
    assert best_challenge([odd, "Basic x", only_int, md5]).nonce == "n1"
    with pytest.raises(SipParseError):
        best_challenge([odd, only_int])
    with pytest.raises(SipParseError):
        best_challenge([])
