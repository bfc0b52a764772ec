"""SDP (RFC 4566) and offer/answer (RFC 3264)."""

from __future__ import annotations

import pytest

from callplane.sip.sdp import (
    ChosenMedia,
    SdpError,
    answer_reoffer,
    build_offer,
    bump_version,
    mirror_direction,
    negotiate_answer,
    offered_direction,
    parse_answer,
    parse_sdp,
    with_direction,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


OFFER_SIPP = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)


def test_build_offer() -> None:
    offer = build_offer("127.0.0.1", 20000, session_id=42)
    text = offer.decode()
    assert "m=audio 20000 RTP/AVP 0 8 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text
    assert "a=fmtp:101 0-16\r\n" in text
    assert "a=ptime:20\r\n" in text and "a=sendrecv\r\n" in text
    assert "c=IN IP4 127.0.0.1\r\n" in text and "o=callplane 42 1 IN IP4 127.0.0.1\r\n" in text
    sd = parse_sdp(offer)
    assert sd.media[0].rtpmap() == {
        0: ("PCMU", 8000),
        8: ("PCMA", 8000),
        101: ("TELEPHONE-EVENT", 8000),
    }
    assert parse_sdp(sd.to_bytes()).to_bytes() == offer


def test_build_offer_variants() -> None:
    o = build_offer("::1", 20002, ["PCMA"], telephone_event_pt=None, direction="sendonly").decode()
    assert "c=IN IP6 ::1" in o and "m=audio 20002 RTP/AVP 8\r\n" in o
    assert "telephone-event" not in o and "a=sendonly" in o
    with pytest.raises(SdpError):
        build_offer("127.0.0.1", 1, ["G729"])
    with pytest.raises(SdpError):
        build_offer("127.0.0.1", 1, direction="sideways")


def test_answer_picks_offerers_first_common_codec_and_te() -> None:
    offer = build_offer("192.0.2.1", 4000, ["PCMA", "PCMU"])
    answer, chosen = negotiate_answer(offer, "127.0.0.1", 30000)
    assert chosen == ChosenMedia("192.0.2.1", 4000, 8, "PCMA", 8000, 101, "sendrecv", 20)
    text = answer.decode()
    assert "m=audio 30000 RTP/AVP 8 101\r\n" in text
    assert "a=fmtp:101 0-16" in text and "c=IN IP4 127.0.0.1" in text
    # and the offerer reads the answer back
    assert parse_answer(answer, offer) == ChosenMedia(
        "127.0.0.1", 30000, 8, "PCMA", 8000, 101, "sendrecv", 20
    )


def test_answer_respects_our_supported_list() -> None:
    offer = build_offer("192.0.2.1", 4000, ["PCMA", "PCMU"])
    _, chosen = negotiate_answer(offer, "127.0.0.1", 30000, ["PCMU"], telephone_event=False)
    assert chosen is not None and chosen.payload_type == 0 and chosen.telephone_event_pt is None


def test_static_payload_without_rtpmap_and_dynamic_te_number() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=audio 7078 RTP/AVP 18 0 96",
        "a=rtpmap:96 telephone-event/8000",
        "a=fmtp:96 0-15",
    )
    answer, chosen = negotiate_answer(offer, "127.0.0.1", 30000)
    assert chosen is not None and (chosen.payload_type, chosen.telephone_event_pt) == (0, 96)
    assert b"m=audio 30000 RTP/AVP 0 96" in answer


@pytest.mark.parametrize(
    ("offered", "ours"),
    [
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
        ("sendrecv", "sendrecv"),
    ],
)
def test_direction(offered: str, ours: str) -> None:
    offer = build_offer("192.0.2.1", 4000, direction=offered)
    answer, chosen = negotiate_answer(offer, "127.0.0.1", 30000)
    assert chosen is not None and chosen.direction == ours
    assert f"a={ours}".encode() in answer
    # the offerer's view after reading the answer is its own direction
    back = parse_answer(answer, offer)
    assert back is not None and back.direction == offered


def test_session_level_direction() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "a=sendonly",
        "m=audio 7078 RTP/AVP 0",
    )
    _, chosen = negotiate_answer(offer, "127.0.0.1", 30000)
    assert chosen is not None and chosen.direction == "recvonly"


def test_no_common_codec_rejects_with_port_zero() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=audio 7078 RTP/AVP 18 9",
    )
    answer, chosen = negotiate_answer(offer, "127.0.0.1", 30000)
    assert chosen is None
    assert b"m=audio 0 RTP/AVP 18 9" in answer
    assert parse_answer(answer, offer) is None


def test_extra_streams_rejected_and_order_kept() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=video 5000 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "m=audio 7078 RTP/AVP 8",
        "c=IN IP4 10.0.0.9",
        "m=audio 7080 RTP/AVP 0",
    )
    answer, chosen = negotiate_answer(offer, "127.0.0.1", 30000)
    assert chosen is not None and chosen.remote_ip == "10.0.0.9" and chosen.remote_port == 7078
    media = parse_sdp(answer).media
    assert [(m.media, m.port) for m in media] == [("video", 0), ("audio", 30000), ("audio", 0)]


def test_ipv6_connection_and_ptime() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP6 ::1",
        "s=-",
        "c=IN IP6 2001:db8::1",
        "t=0 0",
        "m=audio 7078 RTP/AVP 0",
        "a=ptime:30",
    )
    answer, chosen = negotiate_answer(offer, "::1", 30000)
    assert chosen is not None and chosen.remote_ip == "2001:db8::1" and chosen.ptime == 30
    assert b"c=IN IP6 ::1" in answer


def test_parse_answer_from_sipp() -> None:
    offer = build_offer("127.0.0.1", 20000)
    chosen = parse_answer(OFFER_SIPP, offer)
    assert chosen == ChosenMedia("127.0.0.1", 6000, 0, "PCMU", 8000, None, "sendrecv", 20)


def test_parse_answer_ignores_codecs_we_did_not_offer() -> None:
    offer = build_offer("127.0.0.1", 20000, ["PCMU"])
    answer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=audio 7078 RTP/AVP 8",
    )
    assert parse_answer(answer, offer) is None
    with pytest.raises(SdpError):
        parse_answer(answer, sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "t=0 0"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"o=- 1 1 IN IP4 1.1.1.1\r\n",
        b"v=1\r\n",
        b"v=0\r\nm=audio 1 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 IN IP4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP6 1.1.1.1\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nq=what\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\njunk\r\n",
        b"\xff\xfe",
    ],
)
def test_bad_sdp(data: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(data)


def test_missing_connection_is_an_error_for_negotiation() -> None:
    offer = sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0", "m=audio 7078 RTP/AVP 0")
    with pytest.raises(SdpError):
        negotiate_answer(offer, "127.0.0.1", 1)


# ----------------------------------------------------------------- re-offers (RFC 3264 §8)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
        ("sendrecv", "sendrecv"),
    ],
)
def test_answer_reoffer_mirrors_direction(offered: str, answered: str) -> None:
    ours = build_offer("127.0.0.1", 20000, session_id=7, session_version=3)
    reoffer = build_offer("127.0.0.1", 4000, direction=offered)
    ans = answer_reoffer(reoffer, ours)
    assert offered_direction(ans) == answered
    sd = parse_sdp(ans)
    assert sd.media[0].port == 20000 and sd.media[0].formats == ["0", "8", "101"]
    if answered == "sendrecv":
        assert ans == ours  # nothing changed: same body, same version (§8)
    else:
        assert sd.origin == "callplane 7 4 IN IP4 127.0.0.1"
        assert [n for n, _ in sd.media[0].attributes].count(answered) == 1


def test_answer_reoffer_resume_bumps_again_and_session_level_direction() -> None:
    ours = build_offer("127.0.0.1", 20000, session_id=7, session_version=1)
    hold = sdp(
        "v=0",
        "o=x 1 2 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "a=sendonly",
        "m=audio 4000 RTP/AVP 0",
    )
    held = answer_reoffer(hold, ours)
    assert offered_direction(hold) == "sendonly" and offered_direction(held) == "recvonly"
    assert parse_sdp(held).origin.split()[2] == "2"
    resumed = answer_reoffer(build_offer("127.0.0.1", 4000), held)
    assert offered_direction(resumed) == "sendrecv"
    assert parse_sdp(resumed).origin.split()[2] == "3"


def test_answer_reoffer_extra_and_disabled_streams_get_port_zero() -> None:
    ours = build_offer("127.0.0.1", 20000)
    reoffer = sdp(
        "v=0",
        "o=x 1 2 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "m=video 4002 RTP/AVP 96",
    )
    sd = parse_sdp(answer_reoffer(reoffer, ours))
    assert [(m.media, m.port) for m in sd.media] == [("audio", 20000), ("video", 0)]
    off = reoffer.replace(b"m=audio 4000", b"m=audio 0")
    sd2 = parse_sdp(answer_reoffer(off, ours))
    assert sd2.media[0].port == 0 and offered_direction(off) == "inactive"
    with pytest.raises(SdpError):
        answer_reoffer(b"v=0\r\nbogus\r\n", ours)


def test_with_direction_and_bump_version() -> None:
    o = build_offer("127.0.0.1", 20000, session_id=9, session_version=5)
    held = with_direction(o, "sendonly")
    assert offered_direction(held) == "sendonly"
    assert held.count(b"a=sendonly") == 1 and b"a=sendrecv" not in held
    assert with_direction(held, "sendrecv") == o
    assert b"o=callplane 9 6 IN IP4" in bump_version(o)
    with pytest.raises(SdpError):
        with_direction(o, "sideways")
    with pytest.raises(SdpError):
        bump_version(o.replace(b" 5 IN", b" x IN"))
    with pytest.raises(SdpError):
        mirror_direction("up")
    # a session-level direction is replaced, not contradicted
    s = sdp("v=0", "o=x 1 2 IN IP4 127.0.0.1", "s=-", "a=inactive", "m=audio 4000 RTP/AVP 0")
    r = with_direction(s, "recvonly")
    assert b"a=inactive" not in r and offered_direction(r) == "recvonly"
