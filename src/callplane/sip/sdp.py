"""SDP (RFC 4566) parse/serialise and RFC 3264 offer/answer for one audio stream (sans-IO).

Codecs: PCMU (static 0), PCMA (static 8) and telephone-event (RFC 4733; dynamic, 101 by default
with `a=fmtp:101 0-16`).  ptime 20.  Directions sendrecv/sendonly/recvonly/inactive.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

__all__ = [
    "ChosenMedia",
    "MediaDescription",
    "SdpError",
    "SessionDescription",
    "answer_reoffer",
    "build_offer",
    "bump_version",
    "mirror_direction",
    "negotiate_answer",
    "offered_direction",
    "parse_answer",
    "parse_sdp",
    "with_direction",
]


class SdpError(ValueError):
    """Malformed SDP, or an offer/answer that cannot be used."""


# RFC 3551 static payload types we know by name.
STATIC_PT = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}
CODEC_PT = {"PCMU": 0, "PCMA": 8}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSE_DIR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None  # the c= line's value, "IN IP4 1.2.3.4"
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # i=, b=, k= lines kept verbatim (type=value)

    def attr(self, name: str) -> list[str | None]:
        return [v for n, v in self.attributes if n == name]

    @property
    def direction(self) -> str:
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return "sendrecv"  # RFC 4566 §6: default when absent (session-level handled by caller)

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """Payload type -> (encoding name upper-case, clock rate), statics included."""
        out: dict[int, tuple[str, int]] = {}
        for f in self.formats:
            if f.isdigit() and int(f) in STATIC_PT:
                out[int(f)] = STATIC_PT[int(f)]
        for v in self.attr("rtpmap"):
            if not v:
                continue
            pt, _, enc = v.partition(" ")
            name, _, rest = enc.strip().partition("/")
            rate = rest.partition("/")[0]
            if pt.isdigit() and rate.isdigit():
                out[int(pt)] = (name.upper(), int(rate))
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: str  # "- 123 1 IN IP4 1.2.3.4"
    name: str = "-"
    connection: str | None = None
    times: list[str] = field(default_factory=lambda: ["0 0"])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0
    other: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        lines += self.other
        if self.connection:
            lines.append(f"c={self.connection}")
        lines += [f"t={t}" for t in self.times]
        lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            lines += m.other
            if m.connection:
                lines.append(f"c={m.connection}")
            lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def session_direction(self) -> str | None:
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return None


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse SDP; raises SdpError on anything malformed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SdpError("SDP is not UTF-8") from e
    sd: SessionDescription | None = None
    seen_v = False
    cur: MediaDescription | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:60]!r}")
        typ, val = line[0], line[2:]
        if typ == "v":
            if val.strip() != "0":
                raise SdpError("unsupported SDP version")
            seen_v = True
            continue
        if not seen_v:
            raise SdpError("SDP must start with v=0")
        if typ == "o":
            if len(val.split()) != 6:
                raise SdpError(f"bad o= line {val!r}")
            sd = SessionDescription(origin=val, times=[])
            continue
        if sd is None:
            raise SdpError("missing o= line")
        if typ == "m":
            parts = val.split()
            if len(parts) < 4:
                raise SdpError(f"bad m= line {val!r}")
            port = parts[1].split("/")[0]
            if not port.isdigit() or int(port) > 65535:
                raise SdpError(f"bad m= port {val!r}")
            cur = MediaDescription(parts[0], int(port), parts[2], parts[3:])
            sd.media.append(cur)
        elif typ == "c":
            _parse_connection(val)
            if cur is None:
                sd.connection = val
            else:
                cur.connection = val
        elif typ == "a":
            n, colon, v = val.partition(":")
            attr = (n, v if colon else None)
            (cur.attributes if cur is not None else sd.attributes).append(attr)
        elif typ == "s" and cur is None:
            sd.name = val
        elif typ == "t" and cur is None:
            sd.times.append(val)
        elif typ in "ibkezurp":
            (cur.other if cur is not None else sd.other).append(line)
        else:
            raise SdpError(f"unexpected SDP line {line[:60]!r}")
    if sd is None:
        raise SdpError("empty SDP")
    if not sd.times:
        sd.times = ["0 0"]
    return sd


def _parse_connection(val: str) -> str:
    """`IN IP4 1.2.3.4` / `IN IP6 ::1` -> address (multicast TTL suffixes stripped)."""
    parts = val.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {val!r}")
    addr = parts[2].split("/")[0]
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr  # an FQDN is allowed by RFC 4566; resolving it is the caller's business
    if (ip.version == 4) != (parts[1] == "IP4"):
        raise SdpError(f"address family mismatch in c= {val!r}")
    return addr


def _conn_line(ip: str) -> str:
    try:
        v6 = ipaddress.ip_address(ip).version == 6
    except ValueError:
        v6 = False
    return f"IN {'IP6' if v6 else 'IP4'} {ip}"


@dataclass(frozen=True, slots=True)
class ChosenMedia:
    """The negotiated audio stream, from our point of view."""

    remote_ip: str
    remote_port: int
    payload_type: int
    codec: str  # "PCMU" / "PCMA"
    clock_rate: int
    telephone_event_pt: int | None
    direction: str  # our direction: sendrecv / sendonly / recvonly / inactive
    ptime: int = 20


def build_offer(
    ip: str,
    port: int,
    codecs: tuple[str, ...] | list[str] = ("PCMU", "PCMA"),
    *,
    telephone_event_pt: int | None = 101,
    direction: str = "sendrecv",
    session_id: int | None = None,
    session_version: int = 1,
    ptime: int = 20,
) -> bytes:
    """An audio offer: `m=audio PORT RTP/AVP 0 8 101` with rtpmaps, fmtp, ptime, direction."""
    if direction not in DIRECTIONS:
        raise SdpError(f"bad direction {direction!r}")
    pts: list[int] = []
    for c in codecs:
        if c.upper() not in CODEC_PT:
            raise SdpError(f"unsupported codec {c!r}")
        pts.append(CODEC_PT[c.upper()])
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{pt} {STATIC_PT[pt][0]}/{STATIC_PT[pt][1]}") for pt in pts
    ]
    fmts = [str(p) for p in pts]
    if telephone_event_pt is not None:
        fmts.append(str(telephone_event_pt))
        attrs.append(("rtpmap", f"{telephone_event_pt} telephone-event/8000"))
        attrs.append(("fmtp", f"{telephone_event_pt} 0-16"))
    attrs += [("ptime", str(ptime)), (direction, None)]
    sid = session_id if session_id is not None else secrets.randbelow(2**31)
    conn = _conn_line(ip)
    sd = SessionDescription(
        origin=f"callplane {sid} {session_version} {conn}",
        name="callplane",
        connection=conn,
        media=[MediaDescription("audio", port, "RTP/AVP", fmts, None, attrs)],
    )
    return sd.to_bytes()


def _find_te(m: MediaDescription) -> int | None:
    for pt, (name, rate) in m.rtpmap().items():
        if name == "TELEPHONE-EVENT" and rate == 8000 and str(pt) in m.formats:
            return pt
    return None


def _media_addr(sd: SessionDescription, m: MediaDescription) -> str:
    conn = m.connection or sd.connection
    if conn is None:
        raise SdpError("no c= line for the audio stream")
    return _parse_connection(conn)


def _ptime(m: MediaDescription) -> int:
    for v in m.attr("ptime"):
        if v and v.strip().isdigit():
            return int(v.strip())
    return 20


def negotiate_answer(
    offer: bytes,
    ip: str,
    port: int,
    supported: tuple[str, ...] | list[str] = ("PCMU", "PCMA"),
    *,
    telephone_event: bool = True,
    direction: str = "sendrecv",
    session_id: int | None = None,
    session_version: int = 1,
) -> tuple[bytes, ChosenMedia | None]:
    """RFC 3264 §6: answer an offer.

    The first RTP/AVP audio stream with a codec we support is accepted: we keep the offerer's
    preference order (§6.1) and answer with the first common codec plus telephone-event when
    offered (same payload type as the offer).  Every other m= line is rejected with port 0, as
    is the audio stream when nothing is common (then `chosen` is None).  The answer has as many
    m= lines as the offer, in the same order (§6).
    """
    sd = parse_sdp(offer)
    want = [c.upper() for c in supported]
    conn = _conn_line(ip)
    answer_media: list[MediaDescription] = []
    chosen: ChosenMedia | None = None
    for m in sd.media:
        if chosen is None and m.media == "audio" and m.port != 0 and "RTP/AVP" in m.proto:
            rtpmap = m.rtpmap()
            pick: tuple[int, str, int] | None = None
            for f in m.formats:
                if not f.isdigit() or int(f) not in rtpmap:
                    continue
                name, rate = rtpmap[int(f)]
                if name in want and rate == 8000:
                    pick = (int(f), name, rate)
                    break
            if pick is not None:
                pt, name, rate = pick
                te = _find_te(m) if telephone_event else None
                offered_dir = m.direction
                if not m.attr("sendrecv") and not any(
                    m.attr(d) for d in DIRECTIONS
                ):  # no media-level direction: session-level applies
                    offered_dir = sd.session_direction() or "sendrecv"
                our_dir = _intersect_dir(_REVERSE_DIR[offered_dir], direction)
                remote_ip = _media_addr(sd, m)
                attrs: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {name}/{rate}")]
                fmts = [str(pt)]
                if te is not None:
                    fmts.append(str(te))
                    attrs += [("rtpmap", f"{te} telephone-event/8000"), ("fmtp", f"{te} 0-16")]
                attrs += [("ptime", "20"), (our_dir, None)]
                answer_media.append(MediaDescription("audio", port, m.proto, fmts, None, attrs))
                chosen = ChosenMedia(remote_ip, m.port, pt, name, rate, te, our_dir, _ptime(m))
                continue
        # Rejected stream (§6): port 0, the offered formats (at least one is required).
        answer_media.append(MediaDescription(m.media, 0, m.proto, m.formats or ["0"]))
    sid = session_id if session_id is not None else secrets.randbelow(2**31)
    ans = SessionDescription(
        origin=f"callplane {sid} {session_version} {conn}",
        name="callplane",
        connection=conn,
        times=list(sd.times),
        media=answer_media,
    )
    return ans.to_bytes(), chosen


def _intersect_dir(a: str, b: str) -> str:
    """Combine two directions (what the offer allows, what we want)."""
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    if recv:
        return "recvonly"
    return "inactive"


def parse_answer(answer: bytes, offer: bytes) -> ChosenMedia | None:
    """RFC 3264 §7: what the answerer accepted.  None if the audio stream was rejected (port 0)
    or nothing in it matches what we offered."""
    sa = parse_sdp(answer)
    so = parse_sdp(offer)
    offered_audio = next((m for m in so.media if m.media == "audio"), None)
    if offered_audio is None:
        raise SdpError("the offer has no audio stream")
    omap = offered_audio.rtpmap()
    for m in sa.media:
        if m.media != "audio" or m.port == 0:
            continue
        amap = m.rtpmap()
        for f in m.formats:
            if not f.isdigit():
                continue
            pt = int(f)
            name, rate = amap.get(pt, omap.get(pt, ("", 0)))
            if name in CODEC_PT and pt in omap and omap[pt][0] == name:
                te = _find_te(m)
                remote_dir = m.direction
                if not any(m.attr(d) for d in DIRECTIONS):
                    remote_dir = sa.session_direction() or "sendrecv"
                return ChosenMedia(
                    _media_addr(sa, m),
                    m.port,
                    pt,
                    name,
                    rate,
                    te,
                    _REVERSE_DIR[remote_dir],
                    _ptime(m),
                )
        return None
    return None


# ----------------------------------------------------------------- re-offers (RFC 3264 §8)


def mirror_direction(direction: str) -> str:
    """RFC 3264 §6.1: the answer's direction for an offered one (sendonly <-> recvonly)."""
    try:
        return _REVERSE_DIR[direction]
    except KeyError:
        raise SdpError(f"bad direction {direction!r}") from None


def _stream_direction(sd: SessionDescription, m: MediaDescription) -> str:
    """A stream's direction: its own attribute, else the session-level one, else sendrecv."""
    for n, _ in m.attributes:
        if n in DIRECTIONS:
            return n
    return sd.session_direction() or "sendrecv"


def offered_direction(sdp: bytes) -> str:
    """The direction the sender of `sdp` declares for its first active audio stream (port != 0),
    session-level direction applied (RFC 4566 §6).  "inactive" when no audio stream is active
    (RFC 3264 §8.4: hold by a stream with port 0 is an old form of inactive)."""
    sd = parse_sdp(sdp)
    for m in sd.media:
        if m.media == "audio" and m.port != 0:
            return _stream_direction(sd, m)
    return "inactive"


def with_direction(sdp: bytes, direction: str) -> bytes:
    """`sdp` with every active stream set to `direction` (session-level direction attributes
    removed so they cannot contradict it).  Everything else is kept as it is."""
    if direction not in DIRECTIONS:
        raise SdpError(f"bad direction {direction!r}")
    sd = parse_sdp(sdp)
    sd.attributes = [(n, v) for n, v in sd.attributes if n not in DIRECTIONS]
    for m in sd.media:
        attrs = [(n, v) for n, v in m.attributes if n not in DIRECTIONS]
        if m.port != 0:
            attrs.append((direction, None))
        m.attributes = attrs
    return sd.to_bytes()


def bump_version(sdp: bytes) -> bytes:
    """`sdp` with the o= session version incremented (RFC 3264 §8: every changed offer or answer
    in a session carries a version one higher than the previous one)."""
    sd = parse_sdp(sdp)
    parts = sd.origin.split()
    if not parts[2].isdigit():
        raise SdpError(f"bad o= session version {sd.origin!r}")
    parts[2] = str(int(parts[2]) + 1)
    sd.origin = " ".join(parts)
    return sd.to_bytes()


def _same_but_version(a: bytes, b: bytes) -> bool:
    sa, sb = parse_sdp(a), parse_sdp(b)
    oa, ob = sa.origin.split(), sb.origin.split()
    oa[2] = ob[2] = "0"
    sa.origin, sb.origin = " ".join(oa), " ".join(ob)
    return sa.to_bytes() == sb.to_bytes()


def answer_reoffer(offer: bytes, previous: bytes) -> bytes:
    """The answer to a re-offer (hold, resume, refresh) in an established session, built from
    our previous session description `previous` (RFC 3264 §8):

    * each offered stream keeps our previous stream at the same position, with the offered
      direction mirrored (offer sendonly -> recvonly, inactive -> inactive, ...);
    * an offered stream with port 0, or one beyond what we had before, is answered with port 0;
    * the o= line is ours, its version incremented when anything changed (§8) and unchanged
      otherwise, so the far end can tell a no-op refresh from a change.

    Codec changes in the re-offer are not renegotiated: the media layer keeps the codec it has.
    """
    so = parse_sdp(offer)
    sp = parse_sdp(previous)
    media: list[MediaDescription] = []
    for i, m in enumerate(so.media):
        if i < len(sp.media) and m.port != 0 and sp.media[i].port != 0:
            ours = sp.media[i]
            attrs = [(n, v) for n, v in ours.attributes if n not in DIRECTIONS]
            attrs.append((mirror_direction(_stream_direction(so, m)), None))
            media.append(
                MediaDescription(
                    ours.media,
                    ours.port,
                    ours.proto,
                    list(ours.formats),
                    ours.connection,
                    attrs,
                    list(ours.other),
                )
            )
        else:
            media.append(MediaDescription(m.media, 0, m.proto, m.formats or ["0"]))
    ans = SessionDescription(
        origin=sp.origin,
        name=sp.name,
        connection=sp.connection,
        times=list(sp.times),
        attributes=[(n, v) for n, v in sp.attributes if n not in DIRECTIONS],
        media=media,
        other=list(sp.other),
    )
    out = ans.to_bytes()
    if _same_but_version(out, previous):
        return previous
    return bump_version(out)
