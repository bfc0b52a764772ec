"""`dial` options that change what goes over the wire: digest auth, the PSTN trunk, send_digits,
caller_id and codecs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_sipp
from farend import FarEnd
from harness import SCENARIOS, Receiver, Server, Sipp

from callplane import AsyncRestClient, RestClient, RestError

HANG_ON = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}


@requires_sipp
@pytest.mark.parametrize(("password", "answered"), [("s3cret", True), ("wrong", False)])
def test_digest_credentials_answer_a_401_challenge(
    server: Server, receiver: Receiver, tmp_path: Path, password: str, answered: bool
) -> None:
    sipp = Sipp(["-sf", str(SCENARIOS / "auth_uas.xml"), "-m", "1"]).start(tmp_path)
    try:
        client = RestClient(server.project, server.token, server.host)
        leg = client.calling.dial(
            from_="+15559876543",
            to=f"sip:service@{sipp.uri_host}",
            swml={"version": "1.0.0", "sections": {"main": [{"play": {"url": "silence:0.5"}}]}},
            username="alice",
            password=password,
            status_url=receiver.url("/status"),
            status_events=["answered", "ended"],
        )
        receiver.wait_call_state("/status", leg["id"], "ended")
        states = receiver.call_states("/status", leg["id"])
        assert states == (["answered", "ended"] if answered else ["ended"])
        if not answered:
            assert receiver.events("/status")[-1]["params"]["end_reason"] == "error"
        assert sipp.wait() == 0
        # credentials are write-only
        assert "password" not in str(server.get(f"/api/calling/calls/{leg['id']}").json())
    finally:
        sipp.stop()


async def test_e164_destinations_go_to_the_trunk(make_server: Any, far_end: FarEnd) -> None:
    server: Server = make_server(extra_args=["--trunk", f"sip:127.0.0.1:{far_end.endpoint.port}"])
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(
            from_="+15559876543", to="+15557654321", caller_id="+15550001111", swml=HANG_ON
        )
        assert leg["type"] == "relay_pstn_call"
        await asyncio.wait_for(far_end.answered.wait(), 10)
        assert far_end.request_uri.startswith("sip:+15557654321@127.0.0.1")
        assert "+15550001111" in far_end.calls[0].from_uri
        await client.calling.end(leg["id"])


async def test_without_a_trunk_e164_is_unresolvable(server: Server) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        with pytest.raises(RestError) as refused:
            await client.calling.dial(from_="+15559876543", to="+15557654321", swml=HANG_ON)
    assert refused.value.status_code == 422
    assert refused.value.errors[0]["code"] == "to_destination_unresolvable"
    assert refused.value.errors[0]["attribute"] == "to"


async def test_send_digits_after_answer_and_codec_choice(server: Server, far_end: FarEnd) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(
            from_="+15559876543",
            to=far_end.uri,
            swml=HANG_ON,
            send_digits="12w#",
            codecs=["PCMU"],
        )
        await asyncio.wait_for(far_end.answered.wait(), 10)
        offer = far_end.calls[0].remote_sdp or b""
        assert b"RTP/AVP 0 101" in offer  # only PCMU (and telephone-event) offered
        await asyncio.sleep(1.5)
        await client.calling.end(leg["id"])
    assert far_end.digits() == "12#"


async def test_swml_send_digits(server: Server, far_end: FarEnd, receiver: Receiver) -> None:
    script = {
        "version": "1.0.0",
        "sections": {
            "main": [
                {"send_digits": {"digits": "9*w0"}},
                {
                    "request": {
                        "url": receiver.url("/done?r=${send_digits_result}"),
                        "method": "GET",
                    }
                },
                {"sleep": -1},
            ]
        },
    }
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=script)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        for _ in range(200):
            if any(h.path == "/done" for h in receiver.hits):
                break
            await asyncio.sleep(0.05)
        await client.calling.end(leg["id"])
    done = next(h for h in receiver.hits if h.path == "/done")
    assert done.method == "GET" and done.query == "r=success"
    assert far_end.digits() == "9*0"
