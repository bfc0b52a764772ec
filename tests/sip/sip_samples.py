"""Sample messages shared by the SIP tests (written for these tests, in the spirit of RFC 4475)."""

from __future__ import annotations


def crlf(text: str) -> bytes:
    """Turn a readable multi-line literal into a CRLF-delimited message."""
    lines = text.strip("\n").split("\n")
    head, sep, body = "\n".join(lines).partition("\n\n")
    out = head.replace("\n", "\r\n") + "\r\n\r\n"
    if sep:
        out += body.replace("\n", "\r\n")
    return out.encode("utf-8")


SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)

INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n" + SDP
).encode()

RESPONSE_180 = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
