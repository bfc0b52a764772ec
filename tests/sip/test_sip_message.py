"""RFC 3261 message, URI and header parsing (callplane.sip.message)."""

from __future__ import annotations

import time

import pytest
from sip_samples import INVITE, RESPONSE_180, SDP, crlf

from callplane.sip.message import (
    CSeq,
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    canonical_name,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_name_addrs,
    parse_params,
    parse_uri,
    parse_via,
    split_comma,
)

# ----------------------------------------------------------------------------- basic messages


def test_parse_invite() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:bob@biloxi.example.com"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.from_.tag == "1928301774"
    assert msg.from_.display_name == "Alice"
    assert msg.to.tag is None
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.rport is None and "rport" in msg.top_via.params
    assert msg.body == SDP.encode()
    assert msg.content_type == "application/sdp"
    assert msg.contacts[0].uri == "sip:alice@pc33.atlanta.example.com"


def test_parse_response() -> None:
    msg = parse_message(RESPONSE_180)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.to.tag == "a6c85cf"
    assert msg.body == b""


def test_roundtrip_serialisation() -> None:
    msg = parse_message(INVITE)
    again = parse_message(msg.to_bytes())
    assert isinstance(again, SipRequest)
    assert list(again.headers) == list(msg.headers)
    assert again.body == msg.body
    assert bytes(msg) == msg.to_bytes()


def test_serialise_sets_content_length() -> None:
    h = Headers([("v", "SIP/2.0/UDP h;branch=z9hG4bKx"), ("l", "999")])
    req = SipRequest("MESSAGE", "sip:a@b", h, b"hello")
    data = req.to_bytes()
    assert b"Content-Length: 5\r\n" in data
    assert b"999" not in data
    assert data.endswith(b"\r\n\r\nhello")
    assert data.startswith(b"MESSAGE sip:a@b SIP/2.0\r\nVia: ")


def test_response_reason_may_contain_spaces_and_be_empty() -> None:
    base = RESPONSE_180.replace(b"180 Ringing", b"486 Busy   Here now")
    msg = parse_message(base)
    assert isinstance(msg, SipResponse) and msg.reason == "Busy   Here now"
    msg = parse_message(RESPONSE_180.replace(b"180 Ringing", b"180 "))
    assert isinstance(msg, SipResponse) and msg.reason == ""


# ----------------------------------------------------------------------------- headers


def test_compact_headers() -> None:
    data = crlf(
        """
OPTIONS sip:user@example.com SIP/2.0
v: SIP/2.0/UDP host.example.com;branch=z9hG4bKabc
f: <sip:caller@example.net>;tag=1
t: <sip:user@example.com>
i: compact@host
CSeq: 1 OPTIONS
m: <sip:caller@host.example.com>
k: timer, 100rel
s: hi
c: application/sdp
l: 0

"""
    )
    msg = parse_message(data)
    assert msg.call_id == "compact@host"
    assert msg.headers.get("Call-ID") == "compact@host"
    assert msg.headers.get("i") == "compact@host"
    assert msg.headers.get("SUPPORTED") == "timer, 100rel"
    assert msg.headers.get_list("Supported") == ["timer", "100rel"]
    assert msg.headers.get("Subject") == "hi"
    assert msg.content_type == "application/sdp"
    # serialised with long names
    out = msg.to_bytes()
    assert b"\r\nCall-ID: compact@host\r\n" in out
    assert b"\r\nFrom: <sip:caller@example.net>;tag=1\r\n" in out
    assert b"\r\ni:" not in out


@pytest.mark.parametrize(
    ("name", "canon"),
    [
        ("call-id", "Call-ID"),
        ("I", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("content-length", "Content-Length"),
        ("l", "Content-Length"),
        ("x-custom-thing", "X-Custom-Thing"),
        ("r", "Refer-To"),
        ("o", "Event"),
    ],
)
def test_canonical_names(name: str, canon: str) -> None:
    assert canonical_name(name) == canon


def test_header_folding_and_case_and_whitespace() -> None:
    data = (
        b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
        b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
        b'from   : "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
        b"MaX-fOrWaRdS: 0068\r\n"
        b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
        b"Content-Length   : 0\r\n"
        b"cseq: 0009\r\n  INVITE\r\n"
        b"Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw\r\n"
        b"s :\r\n"
        b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
        b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
        b"v:  SIP/2.0/TCP spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
        b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
        b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
        b"      newvalue ;\r\n  secondparam ; q = 0.33\r\n"
        b"\r\n"
    )
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.cseq == CSeq(9, "INVITE")
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    vias = msg.vias
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[0].host == "192.0.2.2" and vias[0].branch == "390skdjuw"
    assert vias[1].branch == "z9hG4bK9ikj8"
    assert vias[2].branch == "z9hG4bK30239" and vias[2].host == "192.168.255.111"
    c = msg.contacts[0]
    assert c.display_name == 'Quoted string ""'
    assert c.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


def test_headers_api() -> None:
    h = Headers()
    h.add("via", "a")
    h.add("Via", "b, c")
    h.add("To", "x")
    assert h.get_all("VIA") == ["a", "b, c"]
    assert h.get_list("v") == ["a", "b", "c"]
    assert "to" in h and "t" in h and "From" not in h and 3 not in h
    h.prepend("Via", "z")
    assert h.get("Via") == "z"
    h.remove_first("Via")
    assert h.get("Via") == "a"
    h.set("Via", "only")
    assert h.get_all("Via") == ["only"] and next(iter(h)) == ("Via", "only")
    h.set("Subject", "new")
    assert h.get("s") == "new"
    h.remove("Via")
    assert h.get("Via") is None and h.get("Via", "d") == "d"
    assert len(h.copy()) == len(h) == 2


def test_split_comma_respects_quotes_and_angles() -> None:
    assert split_comma('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == [
        '"a, b" <sip:x@y;p=1,2>',
        "<sip:z@w>",
    ]
    assert split_comma(" , ,a,,") == ["a"]


def test_multiple_contacts_and_record_routes() -> None:
    data = INVITE.replace(
        b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n",
        b'Contact: <sip:a@h1>;q=0.5, "Two, Three" <sip:b@h2>\r\nContact: sip:c@h3;expires=5\r\n'
        b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
    )
    msg = parse_message(data)
    cs = msg.contacts
    assert [c.uri for c in cs] == ["sip:a@h1", "sip:b@h2", "sip:c@h3"]
    assert cs[1].display_name == "Two, Three"
    assert cs[2].params == {"expires": "5"}  # addr-spec form: params belong to the header
    assert [r.uri for r in msg.record_routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]


# ----------------------------------------------------------------------------- Content-Length


def test_content_length_truncates_extra_datagram_bytes() -> None:
    data = INVITE + b"garbage after the body"
    msg = parse_message(data)
    assert msg.body == SDP.encode()


def test_content_length_larger_than_datagram_is_an_error() -> None:
    with pytest.raises(SipParseError):
        parse_message(INVITE[:-10])


def test_missing_content_length_takes_rest_of_datagram() -> None:
    data = INVITE.replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse_message(data).body == SDP.encode()


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1 2", b"99999999999", b"\xd9\xa3"])
def test_bad_content_length(value: bytes) -> None:
    data = INVITE.replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: " + value)
    with pytest.raises(SipParseError):
        parse_message(data)


def test_leading_crlf_and_bare_lf() -> None:
    msg = parse_message(b"\r\n\r\n" + INVITE)
    assert isinstance(msg, SipRequest)
    head, _, body = INVITE.partition(b"\r\n\r\n")
    lf = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    msg2 = parse_message(lf)
    assert msg2.call_id == "a84b4c76e66710@pc33.atlanta.example.com"


# ----------------------------------------------------------------------------- invalid messages


def _replace(old: bytes, new: bytes) -> bytes:
    assert old in INVITE
    return INVITE.replace(old, new)


INVALID = {
    "empty": b"",
    "only_crlf": b"\r\n\r\n",
    "no_version": _replace(b"sip:bob@biloxi.example.com SIP/2.0", b"sip:bob@biloxi.example.com"),
    "bad_version": _replace(b"biloxi.example.com SIP/2.0\r\n", b"biloxi.example.com SIP/7.0\r\n"),
    "spaces_in_ruri": _replace(b"INVITE sip:bob@biloxi", b"INVITE sip:bob @biloxi"),
    "no_scheme_ruri": _replace(b"INVITE sip:bob@biloxi.example.com", b"INVITE bob"),
    "bad_method": _replace(b"INVITE sip:", b"INV(ITE sip:"),
    "missing_call_id": _replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""),
    "missing_via": _replace(
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n", b""
    ),
    "missing_from": _replace(
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n', b""
    ),
    "missing_cseq": _replace(b"CSeq: 314159 INVITE\r\n", b""),
    "cseq_mismatch": _replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 OPTIONS"),
    "cseq_too_big": _replace(b"CSeq: 314159 INVITE", b"CSeq: 36893488147419103232 INVITE"),
    "cseq_2_31": _replace(b"CSeq: 314159 INVITE", b"CSeq: 2147483648 INVITE"),
    "cseq_no_number": _replace(b"CSeq: 314159 INVITE", b"CSeq: INVITE"),
    "bad_via_proto": _replace(b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"),
    "bad_via_port": _replace(b"example.com:5060;branch", b"example.com:99999;branch"),
    "unterminated_quote": _replace(b'From: "Alice" <sip', b'From: "Alice <sip'),
    "unterminated_angle": _replace(b'To: "Bob" <sip:bob@biloxi.example.com>', b"To: <sip:bob"),
    "no_colon_header": _replace(b"Max-Forwards: 70", b"Max-Forwards 70"),
    "bad_header_name": _replace(b"Max-Forwards: 70", b"Max Forwards: 70"),
    "continuation_first": INVITE.replace(b"\r\nVia:", b"\r\n Via:", 1),
    "bad_ipv6_via": _replace(b"pc33.atlanta.example.com:5060;branch", b"[::1:5060;branch"),
    "status_code_4_digits": RESPONSE_180.replace(b"180 Ringing", b"1800 Ringing"),
    "status_code_99": RESPONSE_180.replace(b"180 Ringing", b"099 Ringing"),
    "status_code_700": RESPONSE_180.replace(b"180 Ringing", b"700 Ringing"),
    "non_utf8_header": _replace(b"Max-Forwards: 70", b"Max-Forwards: \xff\xfe"),
    "bad_param": _replace(b";tag=1928301774", b";tag=19 28"),
    "empty_param": _replace(b";tag=1928301774", b";;tag=1"),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_raise_sip_parse_error(name: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(INVALID[name])


def test_non_strict_parsing_allows_missing_headers() -> None:
    msg = parse_message(INVALID["missing_call_id"], strict=False)
    assert isinstance(msg, SipRequest)
    with pytest.raises(SipParseError):
        _ = msg.call_id


def test_unknown_method_and_scheme_are_accepted() -> None:
    data = crlf(
        """
NEWMETHOD tel:+1-555-0100;phone-context=example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnew
From: <urn:service:sos>;tag=1
To: <tel:+15550100>
Call-ID: x
CSeq: 8 NEWMETHOD
Content-Length: 0

"""
    )
    msg = parse_message(data)
    assert isinstance(msg, SipRequest) and msg.method == "NEWMETHOD"
    assert msg.to.uri == "tel:+15550100"
    with pytest.raises(SipParseError):
        _ = msg.to.sip_uri


# ----------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("sip:alice@atlanta.com", ("sip", "alice", None, "atlanta.com", None)),
        (
            "SIP:alice:secretword@atlanta.com;transport=tcp",
            ("sip", "alice", "secretword", "atlanta.com", None),
        ),
        (
            "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
            ("sips", "alice", None, "atlanta.com", None),
        ),
        (
            "sip:+1-212-555-1212:1234@gateway.com;user=phone",
            ("sip", "+1-212-555-1212", "1234", "gateway.com", None),
        ),
        ("sip:alice@192.0.2.4:5070", ("sip", "alice", None, "192.0.2.4", 5070)),
        (
            "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
            ("sip", None, None, "atlanta.com", None),
        ),
        (
            "sip:alice;day=tuesday@atlanta.com",
            ("sip", "alice;day=tuesday", None, "atlanta.com", None),
        ),
        ("sip:[::1]", ("sip", None, None, "[::1]", None)),
        ("sip:bob@[2001:db8::10]:5070;lr", ("sip", "bob", None, "[2001:db8::10]", 5070)),
        ("sip:%61lice@atlanta.com", ("sip", "%61lice", None, "atlanta.com", None)),
    ],
)
def test_parse_uri(text: str, fields: tuple[str, str | None, str | None, str, int | None]) -> None:
    u = parse_uri(text)
    assert (u.scheme, u.user, u.password, u.host, u.port) == fields
    # serialisation is stable
    assert str(parse_uri(str(u))) == str(u)


def test_uri_params_and_headers() -> None:
    u = parse_uri("sip:alice@atlanta.com:5061;transport=TCP;lr;maddr=239.255.255.1?subject=x&p=y")
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert u.transport == "tcp"
    assert u.headers == {"subject": "x", "p": "y"}
    assert u.default_port() == 5061
    assert parse_uri("sips:a@b").default_port() == 5061
    assert parse_uri("sip:a@b").default_port() == 5060
    assert parse_uri("sip:a@[::1]:5").host_bare == "::1"
    assert parse_uri("sips:a@b").transport == "tls"


@pytest.mark.parametrize(
    "text",
    [
        "http://example.com",
        "sip:",
        "sip:@host",
        "sip:alice@",
        "sip:alice@host:port",
        "sip:alice@host:70000",
        "sip:alice@[::1",
        "sip:alice@[not:v6]",
        "sip:alice@host name",
        "sip:alice@[::1]x",
        "sip:alice@host;=x",
        "sip:alice@host?noequals",
        "sip:alice@ho_st",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# ----------------------------------------------------------------------------- name-addr, Via, CSeq


def test_name_addr_forms() -> None:
    a = parse_name_addr('"Mr. Watson" <sip:watson@worcester.bell-telephone.com>;tag=88sja8x')
    assert (a.display_name, a.uri, a.tag) == (
        "Mr. Watson",
        "sip:watson@worcester.bell-telephone.com",
        "88sja8x",
    )
    b = parse_name_addr("Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8")
    assert b.display_name == "Anonymous" and b.tag == "hyh8"
    c = parse_name_addr("sip:+12125551212@server.phone2net.com;tag=887s")
    assert c.uri == "sip:+12125551212@server.phone2net.com" and c.tag == "887s"
    d = parse_name_addr("<sip:a@b;lr>")
    assert d.uri == "sip:a@b;lr" and d.params == {} and d.display_name is None
    e = parse_name_addr('"\\"quoted\\" \\\\ name" <sip:a@b>')
    assert e.display_name == '"quoted" \\ name'
    assert parse_name_addr(str(e)).display_name == e.display_name
    assert parse_name_addr("*").uri == "*"
    assert str(parse_name_addr('"A" <sip:a@b>;tag=1')) == '"A" <sip:a@b>;tag=1'
    assert parse_name_addr("<sip:a@b>").sip_uri.host == "b"
    assert len(parse_name_addrs("<sip:a@b>, <sip:c@d>")) == 2


@pytest.mark.parametrize(
    "text",
    ["", '"unterminated <sip:a@b>', '"A" sip:a@b', "<sip:a@b", "<sip:a@b> junk", "<nocolon>", "<>"],
)
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_via_parsing() -> None:
    (v,) = parse_via(
        "SIP/2.0/UDP 192.0.2.1:5060;received=192.0.2.207;branch=z9hG4bK77asjd;rport=5061"
    )
    assert (v.transport, v.host, v.port, v.branch) == ("UDP", "192.0.2.1", 5060, "z9hG4bK77asjd")
    assert v.received == "192.0.2.207" and v.rport == 5061
    assert v.sent_by == "192.0.2.1:5060"
    assert (
        str(v) == "SIP/2.0/UDP 192.0.2.1:5060;received=192.0.2.207;branch=z9hG4bK77asjd;rport=5061"
    )
    (w,) = parse_via("SIP/2.0/tcp [2001:db8::9]:5070;branch=z9hG4bKx")
    assert w.transport == "TCP" and w.host == "[2001:db8::9]" and w.port == 5070
    two = parse_via("SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com")
    assert [x.host for x in two] == ["a.example.com", "b.example.com"]
    assert two[1].branch is None and two[1].port is None


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP a b", "XIP/2.0/UDP h", "SIP/2.0/UDP h:x"],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


def test_cseq() -> None:
    assert parse_cseq("1 INVITE") == CSeq(1, "INVITE")
    assert str(parse_cseq(" 0042   BYE ")) == "42 BYE"
    for bad in ("", "1", "x INVITE", "1 INVITE extra", "-1 BYE", "1 B(E"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_params() -> None:
    assert parse_params(';a=b;C;d="x ;y"') == {"a": "b", "c": None, "d": "x ;y"}
    assert parse_params("") == {}
    for bad in (";a=", ';a="x', ";a b=c", ";a=b c"):
        with pytest.raises(SipParseError):
            parse_params(bad)


# ----------------------------------------------------------------------------- speed


def test_parse_speed_reported() -> None:
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        parse_message(INVITE)
    per = (time.perf_counter() - t0) / n
    print(f"\nparse_message(INVITE, strict): {per * 1e6:.1f} us per message")
    assert per < 0.002  # generous bound: a regression guard, not a benchmark
