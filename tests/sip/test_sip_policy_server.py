"""The inbound SIP policy flags of `callplane serve` (--sip-trusted, --sip-user, --sip-rate,
--max-calls and their CALLPLANE_* twins), checked against the real server process on 127.0.0.1.
Loopback is made untrusted by trusting only ::1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_sip_endpoint_e2e import HOST, free_udp_port, offer, raw_request, until
from test_sip_policy_e2e import get_response, lenient_peer

from callplane.sip.endpoint import Failed, SipEndpoint

pytestmark = pytest.mark.e2e


async def start_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    sip_port = free_udp_port()
    rtp_low = free_udp_port({sip_port}, even=True)
    cmd = [
        sys.executable,
        "-m",
        "callplane.cli",
        "serve",
        "--http",
        f"{HOST}:0",
        "--sip",
        f"{HOST}:{sip_port}",
        "--rtp-ports",
        f"{rtp_low}-{rtp_low + 3}",
        "--data",
        str(tmp_path / "data"),
        "--project",
        "p",
        "--token",
        "t",
        *args,
    ]
    log = (tmp_path / "server.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    # Ready when it answers OPTIONS (OPTIONS is not policed).
    t, peer, port = await lenient_peer()
    try:
        for n in range(200):
            if proc.returncode is not None:
                raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
            t.sendto(
                raw_request("OPTIONS", port, sip_port, branch=f"z9hG4bKup{n}"), (HOST, sip_port)
            )
            try:
                await asyncio.wait_for(peer.queue.get(), 0.1)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("callplane serve did not come up")
    finally:
        t.close()
    return proc, sip_port


@pytest.fixture
async def caller() -> AsyncIterator[SipEndpoint]:
    e = SipEndpoint(HOST, 0, "caller")
    await e.start()
    yield e
    await e.stop(timeout=0.5)


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("via_env", [False, True])
async def test_untrusted_caller_is_challenged_and_authenticates(
    tmp_path: Path, caller: SipEndpoint, via_env: bool
) -> None:
    if via_env:
        env = {"CALLPLANE_SIP_TRUSTED": "::1/128", "CALLPLANE_SIP_USERS": "bob:x,alice:s3cret"}
        proc, port = await start_server(tmp_path, env=env)
    else:
        proc, port = await start_server(
            tmp_path, "--sip-trusted", "::1/128", "--sip-user", "alice:s3cret"
        )
    try:
        t, peer, pport = await lenient_peer()
        try:
            t.sendto(raw_request("INVITE", pport, port, body=offer()), (HOST, port))
            r = await get_response(peer)
            assert r.status == 401 and len(r.headers.get_all("WWW-Authenticate")) == 2
        finally:
            t.close()
        # right credentials get past the policy to the engine, which has no route: 404
        ok = caller.invite(
            f"sip:nobody@{HOST}:{port}", f"sip:alice@{HOST}", offer(), auth=("alice", "s3cret")
        )
        ev = await until(ok, Failed)
        assert isinstance(ev, Failed) and ev.code == 404
        bad = caller.invite(
            f"sip:nobody@{HOST}:{port}", f"sip:alice@{HOST}", offer(), auth=("alice", "nope")
        )
        ev2 = await until(bad, Failed)
        assert isinstance(ev2, Failed) and ev2.code == 403
    finally:
        await stop(proc)


async def test_default_trusts_loopback_and_rate_flag_limits(
    tmp_path: Path, caller: SipEndpoint
) -> None:
    proc, port = await start_server(tmp_path, "--sip-rate", "0.5/2")
    try:
        codes = []
        for _ in range(3):
            call = caller.invite(f"sip:nobody@{HOST}:{port}", f"sip:alice@{HOST}", offer())
            ev = await until(call, Failed)
            assert isinstance(ev, Failed)
            codes.append(ev.code)
        assert codes == [404, 404, 503]  # trusted (no challenge), burst of 2, then limited
    finally:
        await stop(proc)


def test_bad_policy_flags_are_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["--sip-trusted", "10.0.0.0/33"],
        ["--sip-user", "alice"],
        ["--sip-rate", "fast"],
        ["--max-calls", "0"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "callplane.cli", "serve", *args],
            capture_output=True,
            timeout=30,
        )
        assert r.returncode == 2, args
        assert b"usage:" in r.stderr


def test_default_max_calls_is_half_the_even_rtp_ports() -> None:
    from callplane.server import ServerConfig

    assert ServerConfig(rtp_ports=(20000, 20999)).effective_max_calls() == 250  # 500 even ports
    assert ServerConfig(rtp_ports=(20001, 20004)).effective_max_calls() == 1  # 20002, 20004
    assert ServerConfig(rtp_ports=(20000, 20001)).effective_max_calls() == 1  # never 0
    assert ServerConfig(max_calls=7).effective_max_calls() == 7
