"""A callplane server for a test session: a `callplane serve` process on free loopback ports
with a temporary data directory and credentials of its own."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from callplane.client import RestClient
from callplane.testing.webhooks import HOST, WebhookReceiver, free_port


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class CallplaneServer:
    """``client`` (a `RestClient`), ``url``, ``sip`` ("host:port"), ``add_route``, ``calls()``,
    ``events(call_id)``. ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        routes: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        log_file: str | Path | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="callplane-test-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.http_port = free_port()
        self.sip_port = _free_udp_port()
        # A block of 200 RTP ports away from the default range and from other servers of the
        # same machine (the server skips ports that are taken).
        low = 40000 + (os.getpid() * 7 + self.http_port) % 100 * 200
        self.rtp_ports = (low, low + 199)
        self.project = "test"
        self.token = secrets.token_urlsafe(24)
        self.signing_key = ""
        self.routes = dict(routes or {})
        self.extra_args = extra_args
        self.log_file = (
            Path(log_file) if log_file else self.data_dir.parent / (self.data_dir.name + ".log")
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: RestClient | None = None
        self._documents: WebhookReceiver | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def sip(self) -> str:
        return f"{HOST}:{self.sip_port}"

    @property
    def client(self) -> RestClient:
        if self._client is None:
            self._client = RestClient(self.project, self.token, self.url)
        return self._client

    def start(self, timeout: float = 30.0) -> CallplaneServer:
        data = self.data_dir / "data"
        args = [
            sys.executable, "-m", "callplane.cli", "serve",
            "--http", f"{HOST}:{self.http_port}",
            "--sip", self.sip,
            "--rtp-ports", f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "--data", str(data),
            "--project", self.project,
            "--token", self.token,
            "--log-level", "warning",
            *self.extra_args,
        ]  # fmt: skip
        for name, url in self.routes.items():
            args += ["--route", f"{name}={url}"]
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"callplane did not start; its log ({self.log_file}):\n{self.log()}"
                )
            time.sleep(0.05)
        listing = subprocess.run(
            [sys.executable, "-m", "callplane.cli", "projects", "list", "--json", "--data",
             str(data)],
            capture_output=True, check=True,
        )  # fmt: skip
        for row in json.loads(listing.stdout):
            if row["name"] == self.project or row["id"] == self.project:
                self.project, self.signing_key = row["id"], row["signing_key"]
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._documents is not None:
            self._documents.stop()
            self._documents = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> CallplaneServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the API

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(
            method, f"{self.url}{path}", auth=(self.project, self.token), timeout=10, **kwargs
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response

    def add_route(self, name: str, swml_or_url: str | dict[str, Any]) -> str:
        """Inbound calls to ``name`` (and `dial(to=name)`) run this SWML: a URL, or a document
        (a dict, or JSON/YAML text) served from the test process. Returns the route's URL."""
        if isinstance(swml_or_url, str) and swml_or_url.startswith(("http://", "https://")):
            url = swml_or_url
        else:
            if self._documents is None:
                self._documents = WebhookReceiver().start()
            url = self._documents.serve_swml(f"/routes/{name}", swml_or_url)
        self._request("PUT", f"/api/routes/{name}", json={"url": url})
        self.routes[name] = url
        return url

    def remove_route(self, name: str) -> None:
        self._request("DELETE", f"/api/routes/{name}")
        self.routes.pop(name, None)

    def calls(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        data: list[dict[str, Any]] = self._request(
            "GET", "/api/calling/calls", params=params
        ).json()["data"]
        return data

    def call(self, call_id: str) -> dict[str, Any]:
        leg: dict[str, Any] = self._request("GET", f"/api/calling/calls/{call_id}").json()
        return leg

    def events(self, call_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._request(
            "GET", f"/api/calling/calls/{call_id}/events"
        ).json()["data"]
        return data
