"""Fuzzing: whatever bytes arrive, the parser raises SipParseError or returns a message."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sip_samples import INVITE, RESPONSE_180

from callplane.sip.auth import parse_challenge
from callplane.sip.message import (
    SipParseError,
    SipRequest,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from callplane.sip.sdp import SdpError, negotiate_answer, parse_sdp

SEEDS = [INVITE, RESPONSE_180]
# Bytes that are structurally significant for SIP, to make mutations bite.
SPECIAL = [
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"@",
    b"[",
    b"]",
    b"=",
    b"?",
    b"\x00",
    b"\xff",
    b" ",
    b"SIP/2.0",
    b"z9hG4bK",
    b"tag=",
    b"Content-Length: 99999\r\n",
]


def _exercise(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    # A message that parsed strictly must have working accessors and survive a round trip.
    _ = (msg.call_id, msg.cseq, msg.vias, msg.from_, msg.to)
    with contextlib.suppress(SipParseError):
        _ = msg.contacts
    again = parse_message(msg.to_bytes())
    assert again.body == msg.body
    if isinstance(msg, SipRequest):
        assert isinstance(again, SipRequest) and again.method == msg.method


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _exercise(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:  # delete a span
            end = draw(st.integers(pos, min(len(data), pos + 20)))
            del data[pos:end]
        elif op == 1:  # insert structural bytes
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        elif op == 2 and pos < len(data):  # flip a byte
            data[pos] = draw(st.integers(0, 255))
        else:  # insert random bytes
            data[pos:pos] = draw(st.binary(max_size=8))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_valid_messages(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_header_value_parsers(text: str) -> None:
    for fn in (parse_uri, parse_name_addr, parse_via, parse_challenge):
        with contextlib.suppress(SipParseError):
            fn(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sdp_parser(data: bytes) -> None:
    try:
        parse_sdp(data)
        negotiate_answer(data, "127.0.0.1", 4000)
    except SdpError:
        pass
