"""Media reflection is impossible by construction. A caller's SDP may name any address (a third
party's port here): callplane sends no media before the call is authorised, and for a caller
outside --sip-trusted it sends only to where that caller's own RTP comes from (symmetric RTP,
RFC 4961). Trusted callers keep media going to their SDP address at once."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import LOOPBACK, Receiver, Server, free_port_pair

from callplane.sip.endpoint import Answered, Failed, OutgoingCall, SipCallEvent, SipEndpoint
from callplane.sip.sdp import build_offer

TALK = {
    "version": "1.0.0",
    "sections": {"main": [{"answer": {}}, {"play": {"url": "silence:20"}}]},
}
UNTRUSTED = ["--sip-trusted", "::1/128", "--sip-user", "alice:s3cret"]


class Listener:
    """A bound UDP port that counts what reaches it: the third party, or the real caller."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def drain(self) -> int:
        count = 0
        while True:
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def caller() -> AsyncIterator[SipEndpoint]:
    ep = SipEndpoint(LOOPBACK, 0, "caller")
    await ep.start()
    yield ep
    await ep.stop(timeout=0.5)


@pytest.fixture
def victim() -> AsyncIterator[Listener]:
    port = free_port_pair()
    listener = Listener(port)
    yield listener  # type: ignore[misc]
    listener.close()


async def final(call: OutgoingCall) -> SipCallEvent:
    while True:
        event = await asyncio.wait_for(call.events.get(), 10)
        if isinstance(event, Answered | Failed):
            return event


def serve(tmp_path: Path, receiver: Receiver, extra: list[str]) -> Server:
    return Server(
        data_dir=tmp_path / "data",
        routes={"talk": receiver.serve_swml("/talk", TALK)},
        extra_args=extra,
    ).start()


def rtp_port(sdp: bytes) -> int:
    match = re.search(rb"m=audio (\d+)", sdp)
    assert match, sdp
    return int(match.group(1))


async def test_unauthorised_invite_sends_nothing_to_its_sdp_address(
    tmp_path: Path, receiver: Receiver, caller: SipEndpoint, victim: Listener
) -> None:
    server = serve(tmp_path, receiver, UNTRUSTED)
    try:
        for auth in (None, ("alice", "wrong")):
            call = caller.invite(
                f"sip:talk@{LOOPBACK}:{server.sip_port}",
                f"sip:mallory@{LOOPBACK}",
                build_offer(LOOPBACK, victim.port),
                auth=auth,
            )
            event = await final(call)
            assert isinstance(event, Failed) and event.code in (401, 403), event
        await asyncio.sleep(1.5)
        assert victim.drain() == 0
        assert not any(h.path == "/talk" for h in receiver.hits)  # no call, no SWML, no media
    finally:
        server.kill()


async def test_untrusted_caller_gets_media_only_where_its_own_rtp_comes_from(
    tmp_path: Path, receiver: Receiver, caller: SipEndpoint, victim: Listener
) -> None:
    server = serve(tmp_path, receiver, UNTRUSTED)
    real = Listener()
    try:
        call = caller.invite(
            f"sip:talk@{LOOPBACK}:{server.sip_port}",
            f"sip:alice@{LOOPBACK}",
            build_offer(LOOPBACK, victim.port),  # names the third party's port
            auth=("alice", "s3cret"),
        )
        event = await final(call)
        assert isinstance(event, Answered), event
        await asyncio.sleep(1.5)  # 75 packets would have left by now
        assert victim.drain() == 0
        assert real.drain() == 0

        # Our real media socket speaks: callplane latches onto it, and only onto it.
        packet = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xff" * 160
        real.sock.sendto(packet, (LOOPBACK, rtp_port(event.sdp)))
        await asyncio.sleep(1.0)
        assert real.drain() >= 25
        assert victim.drain() == 0
        await call.bye()
    finally:
        real.close()
        server.kill()


async def test_trusted_caller_gets_media_at_its_sdp_address_at_once(
    tmp_path: Path, receiver: Receiver, caller: SipEndpoint, victim: Listener
) -> None:
    server = serve(tmp_path, receiver, [])  # loopback is trusted by default
    try:
        call = caller.invite(
            f"sip:talk@{LOOPBACK}:{server.sip_port}",
            f"sip:bob@{LOOPBACK}",
            build_offer(LOOPBACK, victim.port),
        )
        event = await final(call)
        assert isinstance(event, Answered), event
        await asyncio.sleep(1.0)
        assert victim.drain() >= 25
        await call.bye()
    finally:
        server.kill()
