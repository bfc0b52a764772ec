"""RTP ports running out is answered with 503 (try again later), not 480 and not a crash: an
inbound INVITE gets 503 with Retry-After before it rings, and `dial` gets an HTTP 503. A tiny
`--rtp-ports` range whose second pair is held by another socket runs out after one call."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from conftest import requires_sipp
from harness import LOOPBACK, SCENARIOS, Receiver, Server, Sipp, free_port_pair, wait_until

from callplane.sip.message import SipResponse, parse_message

pytestmark = [requires_sipp]

T = TypeVar("T")

HOLD = {"version": "1.0.0", "sections": {"main": [{"answer": {}}, {"play": {"url": "silence:30"}}]}}


def invite(sock: socket.socket, sip_port: int, call_id: str) -> bytes:
    port = sock.getsockname()[1]
    body = (
        f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
        f"m=audio {port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()
    head = (
        f"INVITE sip:alice@{LOOPBACK}:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:raw@{LOOPBACK}:{port}>;tag=raw\r\nTo: <sip:alice@{LOOPBACK}:{sip_port}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@{LOOPBACK}:{port}>\r\n"
        f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def final_response(
    sock: socket.socket, within: float = 5.0, call_id: str | None = None
) -> SipResponse:
    """The next final response (to `call_id`'s INVITE only, when given: an unacknowledged 503
    of an earlier INVITE is retransmitted meanwhile)."""
    deadline = time.monotonic() + within
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        msg = parse_message(sock.recv(65535))
        if (
            isinstance(msg, SipResponse)
            and msg.status >= 200
            and (call_id is None or msg.headers.get("Call-ID") == call_id)
        ):
            return msg


def while_full(attempt: Callable[[int], T], status: Callable[[T], int]) -> list[T]:
    """`attempt(n)` again while it is refused with 503, for up to 5 s: an ended call's ports
    come back just after it ends (later on a loaded machine). Every attempt's result."""
    results = [attempt(0)]
    for n in range(1, 20):
        if status(results[-1]) != 503:
            break
        time.sleep(0.25)
        results.append(attempt(n))
    return results


def test_rtp_ports_running_out_gives_503_to_invites_and_dial(
    tmp_path: Path, receiver: Receiver
) -> None:
    low = free_port_pair(reserved=True)
    # the range holds two pairs; another process holds the second one
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    sipp = Sipp(["-sf", str(SCENARIOS / "ring_forever.xml"), "-m", "1"]).start(tmp_path)
    server: Server | None = None
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for offset, sock in zip((2, 3), held, strict=True):
            # taken by someone else already: just as unavailable
            with contextlib.suppress(OSError):
                sock.bind((LOOPBACK, low + offset))
        server = Server(
            data_dir=tmp_path / "data",
            routes={"alice": receiver.serve_swml("/alice", HOLD)},
            extra_args=["--rtp-ports", f"{low}-{low + 3}", "--max-calls", "10"],
        ).start()
        auth = (server.project, server.token)
        dial = {
            "command": "dial",
            "params": {"from": "+15559876543", "to": f"sip:bob@{sipp.uri_host}", "swml": HOLD},
        }
        url = f"{server.base_url}/api/calling/calls"
        first = httpx.post(url, json=dial, auth=auth, timeout=10)
        assert first.status_code == 200, first.text  # it takes the only free pair
        leg = first.json()["id"]
        assert server.wait_status(leg, "ringing") == "ringing"

        caller.bind((LOOPBACK, 0))
        caller.sendto(invite(caller, server.sip_port, "full1"), (LOOPBACK, server.sip_port))
        response = final_response(caller)
        assert response.status == 503, response
        assert int(response.headers.get("Retry-After") or "0") > 0
        assert not any(h.path == "/alice" for h in receiver.hits)  # refused before any SWML

        # The client's retries reuse their Idempotency-Key: a 503 must not be replayed to them.
        retried = {"Idempotency-Key": "dial-when-full"}
        second = httpx.post(url, json=dial, auth=auth, headers=retried, timeout=10)
        assert second.status_code == 503, second.text
        assert int(second.headers.get("Retry-After") or "0") > 0

        def end(call_id: str) -> None:
            command = {"command": "calling.end", "id": call_id, "params": {}}
            ended = httpx.post(url, json=command, auth=auth, timeout=10)
            assert ended.status_code == 200, ended.text
            server.wait_status(call_id, "canceled", "ended")

        # The ports come back when the call ends (the session's sockets close just after it,
        # later on a loaded machine): the retry under the same key dials.
        end(leg)
        answers = while_full(
            lambda _: httpx.post(url, json=dial, auth=auth, headers=retried, timeout=10),
            lambda answer: answer.status_code,
        )
        assert answers[-1].status_code == 200, [a.text for a in answers]
        assert "Idempotent-Replayed" not in answers[-1].headers
        end(answers[-1].json()["id"])

        # ... and so does the next INVITE, through to its SWML.
        def admitted(attempt: int) -> int:
            call_id = f"again{attempt}"
            caller.sendto(invite(caller, server.sip_port, call_id), (LOOPBACK, server.sip_port))
            return final_response(caller, call_id=call_id).status

        statuses = while_full(admitted, lambda status: status)
        assert statuses[-1] == 200, statuses
        wait_until(lambda: any(h.path == "/alice" for h in receiver.hits), 5, "the SWML fetch")
    finally:
        caller.close()
        for sock in held:
            sock.close()
        sipp.stop()
        if server is not None:
            server.kill()
