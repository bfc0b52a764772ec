"""RFC 3261 message parsing and serialisation (sans-IO).

Everything here is a pure function of its input.  Malformed input raises `SipParseError` and
never any other exception type (the hypothesis fuzz test in tests/sip proves it).

Scope: the grammar of RFC 3261 §25 as far as a user agent needs it: start lines, headers with
folding (§7.3.1), compact forms (§7.3.3), comma-separated multi-valued headers (§7.3.1),
Content-Length for datagrams (§18.3), SIP URIs (§19.1), name-addr / addr-spec (§20.10), Via
(§20.42) and CSeq (§20.16).  Parsing is liberal where RFC 4475 asks it to be (case, whitespace,
folding, unknown headers and schemes) and strict where a wrong guess would corrupt state (numbers,
mandatory headers, Content-Length larger than the datagram).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "CSeq",
    "Headers",
    "NameAddr",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "Via",
    "canonical_name",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_name_addrs",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_comma",
]

SIP_VERSION = "SIP/2.0"
# RFC 3261 §8.1.1.7: branch IDs of RFC 3261 compliant elements start with this magic cookie.
MAGIC_COOKIE = "z9hG4bK"


class SipParseError(ValueError):
    """The input is not a valid SIP message (or URI, header value...)."""


# RFC 3261 §7.3.3 compact forms, plus those of later RFCs (3265 o/u, 3515 r, 3892 b, 4028 x,
# 3841 a/j/d, 3903... ) that a UA may meet.
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Canonical spellings for serialisation; other names are capitalised per dash-separated word.
_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Headers whose values may be comma-joined lists (RFC 3261 §7.3.1); only these are split.
_LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "in-reply-to",
        "path",
    }
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_METHOD_RE = _TOKEN_RE
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9\-.]+")


def canonical_name(name: str) -> str:
    """Long, canonically capitalised header name for any spelling or compact form."""
    low = name.strip().lower()
    low = _COMPACT.get(low, low)
    if low in _CANONICAL:
        return _CANONICAL[low]
    return "-".join(part[:1].upper() + part[1:] for part in low.split("-"))


def _key(name: str) -> str:
    low = name.strip().lower()
    return _COMPACT.get(low, low)


class Headers:
    """Ordered, case-insensitive, multi-valued header collection.

    Each entry is one header field line (canonical name, raw value).  `get` returns the first
    value, `get_all` every line's value, `get_list` every comma-separated element of list headers.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        k = _key(name)
        return any(n.lower() == k for n, _ in self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        k = _key(name)
        for n, v in self._items:
            if n.lower() == k:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        k = _key(name)
        return [v for n, v in self._items if n.lower() == k]

    def get_list(self, name: str) -> list[str]:
        """All comma-separated elements over all lines of `name` (for list headers)."""
        out: list[str] = []
        for v in self.get_all(name):
            out.extend(split_comma(v))
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of `name` by one line (kept at the first one's position)."""
        k = _key(name)
        canon = canonical_name(name)
        out: list[tuple[str, str]] = []
        done = False
        for n, v in self._items:
            if n.lower() == k:
                if not done:
                    out.append((canon, value))
                    done = True
            else:
                out.append((n, v))
        if not done:
            out.append((canon, value))
        self._items = out

    def remove(self, name: str) -> None:
        k = _key(name)
        self._items = [(n, v) for n, v in self._items if n.lower() != k]

    def remove_first(self, name: str) -> None:
        k = _key(name)
        for i, (n, _) in enumerate(self._items):
            if n.lower() == k:
                del self._items[i]
                return


# --------------------------------------------------------------------------- low-level lexing


def _unquote(s: str) -> str:
    """Body of a quoted-string (RFC 3261 §25.1) without the quotes, with quoted-pairs resolved."""
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise SipParseError(f"not a quoted string: {s!r}")
    out: list[str] = []
    i, end = 1, len(s) - 1
    while i < end:
        ch = s[i]
        if ch == "\\":
            if i + 1 >= end:
                raise SipParseError("dangling backslash in quoted string")
            out.append(s[i + 1])
            i += 2
        elif ch == '"':
            raise SipParseError("unescaped quote in quoted string")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def quote(s: str) -> str:
    """Quoted-string for `s` (escapes backslash and double quote)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_outside(s: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and <...>."""
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    angle = 0
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if in_quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < n:
                buf.append(s[i + 1])
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
            buf.append(ch)
        elif ch == "<":
            angle += 1
            buf.append(ch)
        elif ch == ">":
            angle = max(0, angle - 1)
            buf.append(ch)
        elif ch == sep and angle == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if in_quote:
        raise SipParseError("unterminated quoted string")
    parts.append("".join(buf))
    return parts


def split_comma(value: str) -> list[str]:
    """Elements of a comma-separated header value (commas in quotes or <> don't split)."""
    return [p.strip() for p in _split_outside(value, ",") if p.strip()]


def parse_params(s: str) -> dict[str, str | None]:
    """`;a=b;c;d="x y"` (leading ';' optional) -> {'a': 'b', 'c': None, 'd': 'x y'}.

    Names are lower-cased (parameter names are case-insensitive, RFC 3261 §7.3.1); quoted values
    are unquoted.
    """
    out: dict[str, str | None] = {}
    s = s.strip()
    if not s:
        return out
    if s.startswith(";"):
        s = s[1:]
    for part in _split_outside(s, ";"):
        part = part.strip()
        if not part:
            raise SipParseError("empty parameter")
        name, eq, val = part.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter name {name!r}")
        if eq:
            val = val.strip()
            if val.startswith('"'):
                val = _unquote(val)
            elif not val or any(c in val for c in ' \t"<>,'):
                raise SipParseError(f"bad parameter value {val!r}")
            out[name.lower()] = val
        else:
            out[name.lower()] = None
    return out


def format_params(params: dict[str, str | None]) -> str:
    out = []
    for k, v in params.items():
        if v is None:
            out.append(f";{k}")
        elif v == "" or any(c in v for c in ' \t;,"<>\\'):
            out.append(f";{k}={quote(v)}")
        else:
            out.append(f";{k}={v}")
    return "".join(out)


def _parse_host(host: str) -> str:
    """Validate a host: IPv6 reference, IPv4 address or hostname.  Returns it as given."""
    if not host:
        raise SipParseError("empty host")
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipParseError(f"bad IPv6 reference {host!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as e:
            raise SipParseError(f"bad IPv6 address {host!r}") from e
        return host
    if not _HOSTNAME_RE.fullmatch(host):
        raise SipParseError(f"bad host {host!r}")
    return host


def _parse_port(port: str) -> int:
    if not port.isascii() or not port.isdigit() or len(port) > 5:
        raise SipParseError(f"bad port {port!r}")
    p = int(port)
    if p > 65535:
        raise SipParseError(f"port out of range {port!r}")
    return p


def _split_hostport(s: str) -> tuple[str, int | None]:
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {s!r}")
        host, rest = s[: end + 1], s[end + 1 :]
        if not rest:
            return _parse_host(host), None
        if not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 host {s!r}")
        return _parse_host(host), _parse_port(rest[1:])
    host, colon, port = s.partition(":")
    return _parse_host(host), (_parse_port(port) if colon else None)


# --------------------------------------------------------------------------- SIP URI


@dataclass(slots=True)
class SipUri:
    """A sip: or sips: URI (RFC 3261 §19.1).  `host` keeps IPv6 brackets: "[::1]"."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def host_bare(self) -> str:
        """Host without IPv6 brackets (what socket functions want)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        return (t or ("tls" if self.scheme == "sips" else "udp")).lower()

    def default_port(self) -> int:
        return self.port if self.port is not None else (5061 if self.scheme == "sips" else 5060)


def parse_uri(s: str) -> SipUri:
    """Parse a sip:/sips: URI.  Other schemes raise SipParseError."""
    s = s.strip()
    scheme, colon, rest = s.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        raise SipParseError(f"not a SIP URI: {s!r}")
    if not rest or any(c in rest for c in ' \t\r\n<>"'):
        raise SipParseError(f"bad SIP URI: {s!r}")
    user: str | None = None
    password: str | None = None
    # '@' cannot appear unescaped anywhere but as the userinfo terminator (§25.1: user, password,
    # params and headers exclude it), so the first '@' splits userinfo from hostport.
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user:
            raise SipParseError(f"empty user part: {s!r}")
    hostport, qmark, hdrs = rest.partition("?")
    hostport, semi, params = hostport.partition(";")
    host, port = _split_hostport(hostport)
    uri = SipUri(scheme, user, password, host, port)
    if semi:
        uri.params = parse_params(params)
    if qmark:
        for h in hdrs.split("&"):
            k, eq, v = h.partition("=")
            if not k or not eq:
                raise SipParseError(f"bad URI header {h!r}")
            uri.headers[k] = v
    return uri


# --------------------------------------------------------------------------- name-addr


@dataclass(slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters (From, To, Contact, Route, ...).

    `uri` is kept as a string so non-SIP schemes (tel:, urn:) survive; `sip_uri` parses it.
    """

    uri: str
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        return parse_uri(self.uri)

    def __str__(self) -> str:
        dn = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{dn}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(s: str) -> NameAddr:
    """Parse one name-addr or addr-spec followed by header parameters (RFC 3261 §20.10)."""
    s = s.strip()
    if not s:
        raise SipParseError("empty address")
    if s == "*":  # Contact: * (REGISTER only); represented as uri "*"
        return NameAddr("*")
    display: str | None = None
    if s.startswith('"'):
        # Find the closing quote honouring quoted-pairs.
        i = 1
        while i < len(s):
            if s[i] == "\\":
                i += 2
                continue
            if s[i] == '"':
                break
            i += 1
        if i >= len(s):
            raise SipParseError("unterminated display name")
        display = _unquote(s[: i + 1])
        s = s[i + 1 :].lstrip()
        if not s.startswith("<"):
            raise SipParseError("display name without <uri>")
    lt = s.find("<")
    if lt >= 0:
        if display is None:
            token_dn = s[:lt].strip()
            if token_dn:
                display = token_dn
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError("unterminated <uri>")
        uri = s[lt + 1 : gt].strip()
        rest = s[gt + 1 :]
        if rest.strip() and not rest.strip().startswith(";"):
            raise SipParseError(f"junk after <uri>: {rest!r}")
    else:
        # addr-spec form: parameters after the URI are header parameters (§20.10).
        uri, _, params = s.partition(";")
        uri = uri.strip()
        rest = ";" + params if params else ""
    if not uri or ":" not in uri or any(c in uri for c in ' \t"<>'):
        raise SipParseError(f"bad URI in address: {uri!r}")
    return NameAddr(uri, display, parse_params(rest))


def parse_name_addrs(value: str) -> list[NameAddr]:
    return [parse_name_addr(v) for v in split_comma(value)]


# --------------------------------------------------------------------------- Via, CSeq


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        v = self.params.get("rport")
        if v is None or not v.isdigit():
            return None
        return int(v)

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(value: str) -> list[Via]:
    """Parse a Via header value (possibly comma-joined) into Via entries (RFC 3261 §20.42)."""
    out: list[Via] = []
    for item in split_comma(value):
        proto, _, rest = item.partition("/")
        ver, _, rest = rest.partition("/")
        rest = rest.lstrip()
        m = re.match(r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(.*)\Z", rest, re.S)
        if not m or proto.strip().upper() != "SIP" or ver.strip() != "2.0":
            raise SipParseError(f"bad Via {item!r}")
        transport, rest = m.group(1).upper(), m.group(2)
        sent_by, semi, params = rest.partition(";")
        # RFC 4475 §3.1.1.1 allows whitespace around ':' in sent-by.
        sent_by = re.sub(r"\s*:\s*", ":", sent_by.strip())
        if not sent_by or any(c.isspace() for c in sent_by):
            raise SipParseError(f"bad Via sent-by {item!r}")
        host, port = _split_hostport(sent_by)
        out.append(Via(transport, host, port, parse_params(params) if semi else {}))
    if not out:
        raise SipParseError("empty Via")
    return out


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise SipParseError(f"bad CSeq {value!r}")
    # §8.1.1.5: the sequence number MUST be < 2**31.
    if len(parts[0]) > 10 or int(parts[0]) >= 2**31:
        raise SipParseError(f"CSeq out of range {value!r}")
    if not _METHOD_RE.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq method {value!r}")
    return CSeq(int(parts[0]), parts[1])


# --------------------------------------------------------------------------- messages


class SipMessage:
    """Common part of requests and responses."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    # Convenience accessors; they raise SipParseError on malformed values.
    @property
    def call_id(self) -> str:
        v = self.headers.get("Call-ID")
        if not v:
            raise SipParseError("missing Call-ID")
        return v.strip()

    @property
    def cseq(self) -> CSeq:
        v = self.headers.get("CSeq")
        if v is None:
            raise SipParseError("missing CSeq")
        return parse_cseq(v)

    @property
    def vias(self) -> list[Via]:
        out: list[Via] = []
        for v in self.headers.get_all("Via"):
            out.extend(parse_via(v))
        return out

    @property
    def top_via(self) -> Via:
        v = self.headers.get("Via")
        if v is None:
            raise SipParseError("missing Via")
        return parse_via(v)[0]

    @property
    def from_(self) -> NameAddr:
        v = self.headers.get("From")
        if v is None:
            raise SipParseError("missing From")
        return parse_name_addr(v)

    @property
    def to(self) -> NameAddr:
        v = self.headers.get("To")
        if v is None:
            raise SipParseError("missing To")
        return parse_name_addr(v)

    @property
    def contacts(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_list("Contact")]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_list("Record-Route")]

    @property
    def content_type(self) -> str | None:
        v = self.headers.get("Content-Type")
        return v.split(";")[0].strip().lower() if v else None

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with long header names and a correct Content-Length (§20.14)."""
        lines = [self._start_line()]
        for n, v in self.headers:
            if n == "Content-Length":
                continue
            lines.append(f"{n}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class SipRequest(SipMessage):
    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self.version = version

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"


class SipResponse(SipMessage):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _split_head_body(data: bytes) -> tuple[bytes, bytes]:
    # Leading CRLFs before the start line are keep-alives / noise to ignore (§7.5).
    data = data.lstrip(b"\r\n")
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :]
    # Liberal: accept bare LF line endings too.
    idx = data.find(b"\n\n")
    if idx >= 0:
        return data[:idx], data[idx + 2 :]
    # A datagram with headers but no blank line: treat it all as head, empty body.
    return data, b""


def parse_message(data: bytes, *, strict: bool = True) -> SipRequest | SipResponse:
    """Parse one SIP message from a UDP datagram.

    With `strict` (the default) the headers every request/response needs for transaction and
    dialog processing (Via, From, To, Call-ID, CSeq, RFC 3261 §8.1.1) must be present and valid,
    so code above may use the accessors without further checks.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SipParseError("need bytes")
    head_b, body = _split_head_body(bytes(data))
    try:
        head = head_b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SipParseError("header section is not UTF-8") from e
    raw_lines = re.split(r"\r?\n", head)
    if not raw_lines or not raw_lines[0].strip():
        raise SipParseError("empty message")
    start = raw_lines[0]
    # Unfold (§7.3.1): a line starting with whitespace continues the previous header.
    lines: list[str] = []
    for ln in raw_lines[1:]:
        if ln[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("continuation line before any header")
            lines[-1] += " " + ln.strip()
        else:
            lines.append(ln)
    headers = Headers()
    for ln in lines:
        name, colon, value = ln.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME_RE.fullmatch(name):
            raise SipParseError(f"bad header line {ln[:80]!r}")
        headers.add(name, value.strip())

    msg: SipRequest | SipResponse
    if start.startswith("SIP/"):
        parts = start.split(None, 2)
        if len(parts) < 2 or parts[0].upper() != SIP_VERSION:
            raise SipParseError(f"bad status line {start[:80]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isascii() or not code.isdigit():
            raise SipParseError(f"bad status code {start[:80]!r}")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range {status}")
        msg = SipResponse(status, parts[2].strip() if len(parts) > 2 else "", headers, b"")
    else:
        parts = start.split()
        if len(parts) != 3:
            raise SipParseError(f"bad request line {start[:80]!r}")
        method, uri, version = parts
        if not _METHOD_RE.fullmatch(method):
            raise SipParseError(f"bad method {method!r}")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"unsupported version {version!r}")
        if ":" not in uri:
            raise SipParseError(f"bad Request-URI {uri!r}")
        msg = SipRequest(method, uri, headers, b"")

    # Content-Length on a datagram (§18.3): a larger value than the bytes received is an error;
    # a smaller one truncates the body; absent means "the rest of the datagram".
    cl = headers.get("Content-Length")
    if cl is not None:
        cl = cl.strip()
        if not cl.isascii() or not cl.isdigit() or len(cl) > 9:
            raise SipParseError(f"bad Content-Length {cl!r}")
        n = int(cl)
        if n > len(body):
            raise SipParseError("Content-Length larger than the datagram")
        body = body[:n]
    msg.body = body

    if strict:
        _validate(msg)
    return msg


def _validate(msg: SipRequest | SipResponse) -> None:
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if msg.headers.get(name) is None:
            raise SipParseError(f"missing mandatory header {name}")
    if not msg.call_id or any(c.isspace() for c in msg.call_id):
        raise SipParseError("bad Call-ID")
    msg.vias  # noqa: B018 - parse every Via for validation
    cseq = msg.cseq
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    if isinstance(msg, SipRequest) and cseq.method != msg.method:
        # §8.2 / RFC 4475 §3.1.2.14: the CSeq method must match the request method.
        raise SipParseError("CSeq method does not match the request method")
