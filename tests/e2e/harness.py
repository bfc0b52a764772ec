"""Real peers for end-to-end tests: a callplane server process, an HTTP receiver for webhooks and
SWML documents, and sipp. Everything binds 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LOOPBACK = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "scenarios"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_port_pair(reserved: bool = False) -> int:
    """An even port whose odd neighbour is free too (sipp's -mp uses both). `reserved`: from
    31000-31998, which no server's RTP block and no ephemeral port (bound to port 0) ever
    uses, for a test that must know nobody else takes the ports next to it."""
    for attempt in range(200):
        if reserved:
            port = 31000 + (os.getpid() * 2 + attempt * 2) % 1000
        else:
            port = free_port(socket.SOCK_DGRAM)
        port -= port % 2
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind((LOOPBACK, port))
                b.bind((LOOPBACK, port + 1))
                return port
        except OSError:
            continue
    raise RuntimeError("no free even/odd UDP port pair")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Hit:
    path: str
    method: str
    headers: dict[str, str]
    body: Any
    at: float
    query: str = ""


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and serves registered SWML."""

    port: int = field(default_factory=free_port)
    hits: list[Hit] = field(default_factory=list)
    documents: dict[str, Any] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def serve_file(self, path: str, content: bytes, content_type: str) -> str:
        self.files[path] = (content, content_type)
        return self.url(path)

    def serve_swml(self, path: str, document: dict[str, Any]) -> str:
        self.documents[path] = document
        return self.url(path)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self.lock:
            self.hits.append(
                Hit(
                    request.url.path,
                    request.method,
                    dict(request.headers),
                    body,
                    time.time(),
                    request.url.query,
                )
            )
        if request.url.path in self.files:
            content, content_type = self.files[request.url.path]
            return Response(content, media_type=content_type)
        document = self.documents.get(request.url.path)
        if document is not None:
            return JSONResponse(document)
        return JSONResponse({"ok": True})

    def start(self) -> Receiver:
        app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])]
        )
        config = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, 10, "receiver")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def events(self, path: str, event_type: str | None = None) -> list[dict[str, Any]]:
        """The JSON bodies POSTed to `path`, each delivery once: delivery is at least once, and
        a server killed between a POST and its bookkeeping sends that row again after its
        restart with the same `X-Callplane-Delivery` id, which a receiver deduplicates on
        (`hits` keeps every request). Two servers may both number a row 1: the body is part of
        the key (a redelivery is byte-identical)."""
        seen: set[tuple[str, str]] = set()
        bodies: list[dict[str, Any]] = []
        with self.lock:
            for h in self.hits:
                if h.path != path or not isinstance(h.body, dict):
                    continue
                if event_type is not None and h.body.get("event_type") != event_type:
                    continue
                delivery = h.headers.get("x-callplane-delivery")
                if delivery is not None:
                    key = (delivery, json.dumps(h.body, sort_keys=True))
                    if key in seen:
                        continue
                    seen.add(key)
                bodies.append(h.body)
        return bodies

    def call_states(self, path: str, call_id: str) -> list[str]:
        return [
            e["params"]["call_state"]
            for e in self.events(path, "calling.call.state")
            if e["params"].get("call_id") == call_id
        ]

    def wait_call_state(self, path: str, call_id: str, state: str, timeout: float = 15) -> None:
        wait_until(
            lambda: state in self.call_states(path, call_id),
            timeout,
            f"call {call_id} to reach {state} (saw {self.call_states(path, call_id)})",
        )


def projects_cli(
    data_dir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`callplane projects ARGS --data DATA_DIR`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "callplane.cli", "projects", *args, "--data", str(data_dir)],
        check=check,
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class Server:
    """`callplane serve` as a subprocess, as a user runs it."""

    data_dir: Path
    routes: dict[str, str] = field(default_factory=dict)
    project: str = "e2e-project"
    token: str = "e2e-token"
    http_port: int = field(default_factory=free_port)
    sip_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    rtp_low: int = 0
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    scheme: str = "http"  # "https" with --tls-cert/--tls-key in extra_args
    verify: ssl.SSLContext | bool = True  # trusting the CA of the server's certificate, for https
    preexec_fn: Callable[[], Any] | None = None  # e.g. to lower RLIMIT_NOFILE in the child
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.rtp_low:
            # Distinct 200-port blocks per server so parallel servers rarely share RTP ports,
            # all below the kernel's ephemeral range (32768-60999), where every socket bound
            # to port 0 (far ends, taps, the other worker's clients) gets its port.
            self.rtp_low = 21000 + (os.getpid() * 7 + self.http_port) % 50 * 200

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.http_port}"

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "callplane.cli",
            "serve",
            "--http",
            self.host,
            "--sip",
            f"{LOOPBACK}:{self.sip_port}",
            "--rtp-ports",
            f"{self.rtp_low}-{self.rtp_low + 199}",
            "--data",
            str(self.data_dir),
            "--project",
            self.project,
            "--token",
            self.token,
            "--log-level",
            "debug",
            *self.extra_args,
        ]
        for name, url in self.routes.items():
            args += ["--route", f"{name}={url}"]
        log = self.log_path.open("ab")
        env = None if self.env is None else {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=self.preexec_fn
        )
        wait_until(self._healthy, 20, f"callplane to start (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"callplane exited: {self.log_path.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{self.base_url}/health", timeout=1, verify=self.verify)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("callplane did not stop within its SIGTERM timeout") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def projects(self) -> list[dict[str, str]]:
        """`callplane projects list --json` of this server's data directory."""
        return list(json.loads(projects_cli(self.data_dir, "list", "--json").stdout))

    @property
    def signing_key(self) -> str:
        """The webhook signing key of this server's project."""
        return next(p["signing_key"] for p in self.projects() if p["id"] == self.project)

    def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/api/calling/calls",
            json=body,
            auth=(self.project, self.token),
            headers=headers,
            timeout=10,
            verify=self.verify,
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(
            f"{self.base_url}{path}",
            auth=(self.project, self.token),
            timeout=10,
            verify=self.verify,
        )

    def call_status(self, call_id: str) -> str:
        return str(self.get(f"/api/calling/calls/{call_id}").json()["status"])

    def wait_status(self, call_id: str, *statuses: str, timeout: float = 15) -> str:
        return str(
            wait_until(
                lambda: (s := self.call_status(call_id)) in statuses and s,
                timeout,
                f"call {call_id} to be {statuses}",
            )
        )


@dataclass
class Sipp:
    """One sipp process bound to 127.0.0.1 with its own SIP and media ports."""

    args: list[str]
    port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    media_port: int = field(default_factory=free_port_pair)
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    @property
    def uri_host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, workdir: Path) -> Sipp:
        self.workdir = workdir
        cmd = [
            "sipp",
            *self.args,
            "-i",
            LOOPBACK,
            "-p",
            str(self.port),
            "-mi",
            LOOPBACK,
            "-mp",
            str(self.media_port),
            "-nostdin",
            "-timeout",
            "60s",
            "-trace_err",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(0.3)  # sipp binds its sockets before reading the scenario's first step
        return self

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sipp_available() -> bool:
    return shutil.which("sipp") is not None


@contextmanager
def running(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in reversed(things):
            thing.stop()


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def baresip_available() -> bool:
    return shutil.which("baresip") is not None


@dataclass
class Baresip:
    """A real SIP user agent (baresip) that auto-answers, sends a WAV as its microphone and is
    driven over its TCP control port (netstring-framed JSON)."""

    workdir: Path
    sip_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    ctrl_port: int = field(default_factory=free_port)
    rtp_low: int = field(default_factory=free_port_pair)
    proc: subprocess.Popen[bytes] | None = None
    _ctrl: socket.socket | None = None
    _buffer: bytes = b""
    _seen: list[dict[str, Any]] = field(default_factory=list)
    # Where the sndfile module writes what baresip hears (`*-dec.wav`) and says (`*-enc.wav`).
    record_dir: Path | None = None

    @property
    def uri(self) -> str:
        return f"sip:bob@{LOOPBACK}:{self.sip_port}"

    def recordings(self, kind: str = "dec") -> list[Path]:
        """The WAV files of what baresip heard (`dec`) or sent (`enc`), oldest first."""
        if self.record_dir is None:
            return []
        return sorted(self.record_dir.glob(f"*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def start(self, source_wav: Path) -> Baresip:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        # baresip also binds TCP on the SIP port and TLS on the next one, which free_port did
        # not check: when another process holds one of them, start again on fresh ports.
        for _ in range(5):
            if self._launch(source_wav):
                return self
            self.sip_port = free_port(socket.SOCK_DGRAM)
            self.ctrl_port = free_port()
            self.rtp_low = free_port_pair()
        raise AssertionError(f"baresip could not bind its ports: see {self.workdir}/baresip.log")

    def _launch(self, source_wav: Path) -> bool:
        """Start baresip; False if it exited because one of its ports was taken."""
        (self.workdir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen {LOOPBACK}:{self.sip_port}",
                    f"net_interface {LOOPBACK}",
                    "audio_player aubridge,null",
                    f"audio_source aufile,{source_wav}",
                    "audio_alert aubridge,null",
                    "ausrc_srate 8000",
                    "auplay_srate 8000",
                    "ausrc_channels 1",
                    "auplay_channels 1",
                    f"rtp_ports {self.rtp_low}-{self.rtp_low + 9}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module aufile.so",
                    "module aubridge.so",
                    "module account.so",
                    "module menu.so",
                    "module ctrl_tcp.so",
                    "module uuid.so",
                    f"ctrl_tcp_listen {LOOPBACK}:{self.ctrl_port}",
                    *(
                        ["module sndfile.so", f"snd_path {self.record_dir}"]
                        if self.record_dir is not None
                        else []
                    ),
                    "",
                ]
            )
        )
        (self.workdir / "accounts").write_text(
            f"<{self.uri}>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n"
        )
        log = (self.workdir / "baresip.log").open("wb")
        self.proc = subprocess.Popen(
            ["baresip", "-f", str(self.workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

        def connected_or_exited() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                return True
            try:
                self._ctrl = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1)
            except OSError:
                return False
            return True

        wait_until(connected_or_exited, 10, "baresip's control port")
        if self._ctrl is not None:
            return True
        log.close()
        if "Address already in use" in (self.workdir / "baresip.log").read_text(errors="replace"):
            return False
        raise AssertionError(f"baresip exited: see {self.workdir}/baresip.log")

    def command(self, command: str, params: str = "") -> None:
        assert self._ctrl is not None
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self._ctrl.sendall(str(len(body)).encode() + b":" + body + b",")

    def events(self, timeout: float = 0.2) -> list[dict[str, Any]]:
        """Netstring messages received on the control connection so far."""
        assert self._ctrl is not None
        self._ctrl.settimeout(timeout)
        try:
            while chunk := self._ctrl.recv(65536):
                self._buffer += chunk
        except (TimeoutError, BlockingIOError):
            pass
        messages: list[dict[str, Any]] = []
        while b":" in self._buffer:
            length, _, rest = self._buffer.partition(b":")
            size = int(length)
            if len(rest) < size + 1:
                break
            messages.append(json.loads(rest[:size]))
            self._buffer = rest[size + 1 :]
        self._seen.extend(messages)
        return list(self._seen)

    def stop(self) -> None:
        if self._ctrl is not None:
            self._ctrl.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def until(predicate: Callable[[], Any], within: float = 10, what: str = "") -> Any:
    """`wait_until` for async tests: polls in a thread, so the loop (and the in-process far
    ends and model servers on it) keeps running, and a blocking predicate cannot stall it."""
    return await asyncio.to_thread(wait_until, predicate, within, what or str(predicate))


def swml(*methods: Any) -> dict[str, Any]:
    """A SWML document whose main section runs `methods` in order."""
    return {"version": "1.0.0", "sections": {"main": list(methods)}}
