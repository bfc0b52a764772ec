"""The HTTP server under hostile clients: slow request heads and floods of idle connections.

Real sockets against a `callplane serve` subprocess on 127.0.0.1; every test is bounded in the
number of sockets it opens and in time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import LOOPBACK, Server

from callplane import AsyncRestClient, RestClient, RestError


def _closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), or None if it stayed open."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - start
    except TimeoutError:
        return None


@contextmanager
def _idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(2)
            try:
                sock.connect((LOOPBACK, port))
            except OSError:
                sock.close()  # the backlog is full: the flood is as big as it can get
                continue
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_half_sent_request_line_is_closed(server: Server) -> None:
    with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
        sock.sendall(b"GET /hea")
        closed = _closed_within(sock, 15)
    assert closed is not None, "a half-sent request line kept its connection open for 15 s"
    assert closed <= 12


def test_silent_connection_and_slow_headers_are_closed(server: Server) -> None:
    with (
        socket.create_connection((LOOPBACK, server.http_port), timeout=5) as silent,
        socket.create_connection((LOOPBACK, server.http_port), timeout=5) as slow,
    ):
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for i in range(6):  # a header every 2 s: always "active", never complete
            time.sleep(2)
            try:
                slow.sendall(f"X-Slow-{i}: y\r\n".encode())
            except OSError:
                break
        assert _closed_within(slow, 6) is not None
        assert _closed_within(silent, 3) is not None


def test_keep_alive_connection_serves_several_requests(server: Server) -> None:
    # The head timer restarts per request: a client pausing between requests is not cut off
    # by it (only by the keep-alive idle timeout).
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        assert client.get("/health").status_code == 200
        time.sleep(1)
        assert client.get("/health").status_code == 200


def test_oversized_request_head_is_refused(server: Server) -> None:
    with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(200):
                sock.sendall(b"X-Fill: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass
        assert _closed_within(sock, 5) is not None


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_idle_connection_flood_leaves_health_answering(make_server: Any) -> None:
    server: Server = make_server(preexec_fn=_low_descriptor_limit)
    assert server.proc is not None
    with _idle_connections(server.http_port, 1500) as flood:
        assert len(flood) >= 1024  # more than the server can hold
        cpu_before = _cpu_seconds(server.proc.pid)
        time.sleep(3)
        cpu = (_cpu_seconds(server.proc.pid) - cpu_before) / 3
        for _ in range(3):
            response = httpx.get(f"{server.base_url}/health", timeout=5)
            assert response.status_code == 200
        # A command works too (authenticated; a validation error is still an answer).
        assert server.post({"command": "dial", "params": {}}).status_code == 422
    assert cpu < 0.3, f"the server used {cpu:.2f} cores while holding idle connections"
    assert "HTTP connection limit" in server.log()
    assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200


# ------------------------------------------------------------------ HTTPS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _private_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA made for this test and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=callplane test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")
def test_https_round_trip_with_a_private_ca(
    make_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = _private_ca(tmp_path)
    trust = ssl.create_default_context(cafile=str(ca))
    server: Server = make_server(
        scheme="https",
        verify=trust,
        env={"CALLPLANE_TLS_CERT": str(cert), "CALLPLANE_TLS_KEY": str(key)},
    )
    assert server.get("/health").json() == {"status": "ok"}
    assert "ready: HTTPS" in server.log()

    # Plain HTTP to the HTTPS port gets no API answer; an untrusting client refuses the server.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{server.host}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.base_url}/health", timeout=5)

    # The SDK trusts the private CA through SSL_CERT_FILE (httpx honours it for both clients).
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    with RestClient(server.project, server.token, server.base_url) as client:
        with pytest.raises(RestError) as refused:
            client.calling.dial(from_="+15550001111", to="nobody", swml={"sections": {}})
        assert refused.value.status_code == 422

    async def async_round_trip() -> int:
        async with AsyncRestClient(server.project, server.token, server.base_url) as client:
            try:
                await client.calling.end("3fa85f64-5717-4562-b3fc-2c963f66afa6")
            except RestError as exc:
                return exc.status_code
        return 200

    assert asyncio.run(async_round_trip()) == 404


def test_tls_cert_without_key_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callplane.cli", "serve", "--tls-cert", "/nonexistent.pem"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--tls-cert and --tls-key go together" in result.stderr


async def test_descriptor_watch_warns_near_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    from callplane.api.limits import watch_descriptors

    open_now = len(os.listdir("/proc/self/fd"))
    with caplog.at_level("WARNING", logger="callplane.http"):
        task = asyncio.create_task(watch_descriptors(interval=0.01, limit=open_now + 2))
        await asyncio.sleep(0.1)
        task.cancel()
    [record] = [r for r in caplog.records if "file descriptors in use" in r.getMessage()]
    assert f"of {open_now + 2} file descriptors" in record.getMessage()  # once, not per tick
