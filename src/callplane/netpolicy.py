"""The outbound target policy: which addresses callplane may send to on a caller's behalf.

Every URL, WebSocket, RTP address and SIP URI in a command or a SWML script makes callplane
open a connection. Exposed to untrusted callers, that turns it into a proxy into the network it
runs in: the cloud metadata service (169.254.169.254), loopback admin ports, the LAN. With
``--private-targets deny`` (`TargetPolicy(allow_private=False)`) only *public* unicast
addresses are reached; ``allow`` (the default, for local development where the SWML server
and the SIP peers live next door) reaches everything, as before.

Two checks, one notion of "public" (`is_public`):

* `host_refusal`: at validation time, on the host as written. It catches literal addresses in
  every spelling a resolver accepts (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``,
  ``[::ffff:127.0.0.1]``) and the ``localhost`` names, without DNS (the api must not block).
* `TargetPolicy.vet`: at connect time, on every connection (each redirect hop included). It
  resolves the name, refuses if *any* address is not public, and returns the address to
  connect to, so the connection goes to the address that was checked: a DNS answer that
  changes between the check and the connect (rebinding) cannot slip a private address in.
  `TargetPolicy.http_client` builds the httpx client whose every TCP connection goes through
  it while the Host header and TLS server name stay the URL's.

A leaf module: it imports nothing from callplane.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
Setting = Literal["allow", "deny"]

SETTINGS: Final = ("allow", "deny")
MAX_REDIRECTS: Final = 5
POLICY_NAME: Final = "--private-targets deny"

_LOCAL_NAMES: Final = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_DEC: Final = frozenset("0123456789")
_OCT: Final = frozenset("01234567")
_HEX: Final = frozenset("0123456789abcdef")


class TargetRefused(OSError):
    """A target the policy does not allow; the message names the policy."""


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read the way resolvers and browsers read an IPv4 literal, or None for a name.

    1 to 4 dot-separated numbers, each decimal, ``0x`` hexadecimal or ``0``-prefixed octal; the
    last one fills the remaining bytes (``127.1`` is 127.0.0.1, ``2130706433`` too). A trailing
    dot is allowed. Out-of-range numbers are not an address (and not a usable name either).
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        lowered = part.lower()
        if lowered.startswith("0x"):
            digits, base, allowed = lowered[2:], 16, _HEX
        elif len(lowered) > 1 and lowered.startswith("0"):
            digits, base, allowed = lowered[1:], 8, _OCT
        else:
            digits, base, allowed = lowered, 10, _DEC
        if not digits and base != 16:
            return None  # an empty label: "1..2"
        if not set(digits) <= allowed:
            return None  # a name (or a malformed number, which no resolver takes either)
        numbers.append(int(digits, base) if digits else 0)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_address(host: str) -> Address | None:
    """An IP literal in any accepted spelling (IPv6 with or without brackets), else None."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    return parse_ipv4(bare) if bare and ":" not in bare else None


def is_public(address: Address) -> bool:
    """A global unicast address: not loopback, private, link-local (169.254/16: cloud metadata),
    shared (100.64/10), multicast, reserved, unspecified, documentation, nor an IPv6 address
    that embeds an IPv4 one (mapped, NAT64, 6to4, Teredo)."""
    if (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
    ):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None or address in _NAT64:
            return False
        if address.sixtofour is not None or address.teredo is not None:
            return False
    return True


def host_refusal(host: str) -> str | None:
    """Why a target host is refused (a literal non-public address or a local name), else None.

    Names are not resolved here: `TargetPolicy.vet` does that when connecting.
    """
    name = host.strip().rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{host} is a local host name"
    address = parse_address(name)
    if address is not None and not is_public(address):
        return f"{host} is a private, loopback, link-local or reserved address ({address})"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def origin(host: str, port: int) -> tuple[str, int]:
    """The normalised (host, port) key of `TargetPolicy.trusted`."""
    return host.strip().strip("[]").rstrip(".").lower(), port


@dataclass(frozen=True)
class TargetPolicy:
    """``trusted``: (host, port) origins the operator configured (``--route`` SWML servers, the
    ``--trunk``), reached without checks even when they are private: they are not a caller's
    choice. Build keys with `origin`."""

    allow_private: bool = True
    trusted: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver = system_resolver

    @classmethod
    def from_setting(cls, setting: str, *, trusted: Iterable[tuple[str, int]] = ()) -> TargetPolicy:
        if setting not in SETTINGS:
            raise ValueError(f"private targets must be allow or deny, got {setting!r}")
        keys = frozenset(origin(host, port) for host, port in trusted)
        return cls(allow_private=setting == "allow", trusted=keys)

    def refusal(self, host: str, port: int | None) -> str | None:
        """Validation time: why a target is refused (see `host_refusal`), or None."""
        if self.allow_private or (port is not None and origin(host, port) in self.trusted):
            return None
        return host_refusal(host)

    @property
    def setting(self) -> Setting:
        return "allow" if self.allow_private else "deny"

    async def vet(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; raises `TargetRefused` (an OSError).

        ``allow``: ``host`` itself, no lookup (the connection resolves it as it always did).
        ``deny``: a resolved public address; the caller must connect to it, not to ``host``.
        """
        if self.allow_private or origin(host, port) in self.trusted:
            return host
        reason = host_refusal(host)
        if reason is not None:
            raise TargetRefused(f"{reason}: refused by {POLICY_NAME}")
        literal = parse_address(host)
        if literal is not None:
            return str(literal)
        addresses = await self.resolver(host.strip("[]"), port)
        if not addresses:
            raise OSError(f"cannot resolve {host}")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not is_public(address):
                raise TargetRefused(
                    f"{host} resolves to {address}, a private, loopback, link-local or reserved "
                    f"address: refused by {POLICY_NAME}"
                )
        return addresses[0]

    def http_client(
        self,
        *,
        timeout: httpx.Timeout,
        max_redirects: int = MAX_REDIRECTS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> httpx.AsyncClient:
        """An httpx client whose every connection (redirect hops included) is vetted.

        With ``deny``, proxies from the environment are ignored: a proxy would make the
        connect-time check see the proxy, not the target.
        """
        context = ssl_context or httpx.create_ssl_context()
        transport = httpx.AsyncHTTPTransport(verify=context)
        limits = httpx.Limits()
        # httpx's transport has no parameter for httpcore's network backend; the pool it made
        # is replaced by the same pool over the vetting backend (tests/webhooks/
        # test_target_policy.py proves the check happens on every connection and hop).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_VettingBackend(self),
        )
        return httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            max_redirects=max_redirects,
            trust_env=self.allow_private,
        )


class _VettingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio backend, connecting to `TargetPolicy.vet`'s address."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):  # the lookup is part of connecting
                address = await self._policy.vet(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not outbound targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
