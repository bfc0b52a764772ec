"""The composition root: builds every layer of a callplane server and runs it until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn

from callplane._version import __version__
from callplane.api.admin import admin_routes
from callplane.api.app import create_app
from callplane.api.conferences import conference_routes
from callplane.api.limits import (
    DEFAULT_MAX_CONNECTIONS,
    HEAD_TIMEOUT,
    KEEP_ALIVE_TIMEOUT,
    MAX_HEAD_BYTES,
    ConnectionGate,
    connection_cap,
    guarded_protocol,
    raise_descriptor_limit,
    watch_descriptors,
)
from callplane.api.recordings import recording_routes
from callplane.engine.config import EngineConfig
from callplane.engine.core import CallEngine
from callplane.engine.operations import conference, queue
from callplane.media.engine import MediaEngine
from callplane.netpolicy import TargetPolicy
from callplane.providers.asr import AsrError, PocketSphinxRecognizer
from callplane.providers.llm import LlmSettings, OpenAiChat
from callplane.providers.tts import DefaultTts
from callplane.providers.whisper import WhisperRecognizer
from callplane.sip.endpoint import SipEndpoint
from callplane.store import Store, prepare_projects
from callplane.webhooks import WebhookOutbox

log = logging.getLogger("callplane")

DATABASE_NAME = "callplane.db"
# How often the server records that it (and every call it holds) is alive: after a crash, the
# calls it left end at the last heartbeat, so their duration excludes the downtime (to within
# this interval).
HEARTBEAT_INTERVAL = 2.0


@dataclass
class ServerConfig:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    rtp_ports: tuple[int, int] = (20000, 20999)
    data_dir: Path = Path("data")
    project: str = ""  # the default project (inbound SIP calls), by id or name
    token: str = ""  # sets the default project's token
    routes: dict[str, str] = field(default_factory=dict)
    trunk: str | None = None
    log_level: str = "info"
    # Inbound SIP policy (sip.policy): None trusts loopback only; users answer digest.
    sip_trusted: list[str] | None = None
    sip_users: dict[str, str] = field(default_factory=dict)
    max_calls: int | None = None  # None: half the RTP range's even ports
    sip_rate: tuple[float, float] = (20.0, 40.0)  # new INVITEs/s per source, burst; 0: off
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    private_targets: str = "allow"  # "deny": callers may only target public addresses
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The AI agents' language model (providers.llm): an OpenAI-compatible base URL and model.
    llm_url: str | None = None
    llm_model: str | None = None
    llm_key: str | None = None
    # Speech recognition: "pocketsphinx" or "whisper" (providers.whisper) with its model, a
    # directory or a name (None: whisper base from the `whisper` extra's wheels).
    asr: str = "pocketsphinx"
    asr_model: str | None = None

    def target_policy(self) -> TargetPolicy:
        """The outbound target policy; the operator's own route SWML servers and trunk are
        trusted even when private."""
        trusted: list[tuple[str, int]] = []
        for url in self.routes.values():
            parts = urlsplit(url)
            if parts.hostname:
                trusted.append((parts.hostname, parts.port or _default_port(parts.scheme)))
        if self.llm_url:
            # The operator's own model server, like its routes, may be private.
            parts = urlsplit(self.llm_url)
            if parts.hostname:
                trusted.append((parts.hostname, parts.port or _default_port(parts.scheme)))
        if self.trunk:
            host, port = _sip_hostport(self.trunk)
            if host:
                trusted.append((host, port))
        return TargetPolicy.from_setting(self.private_targets, trusted=trusted)

    def effective_max_calls(self) -> int:
        lo, hi = self.rtp_ports
        even_ports = hi // 2 - (lo - 1) // 2
        return self.max_calls or max(1, even_ports // 2)


def prepare_data_dir(path: Path) -> None:
    """Create the data directory owner-only (it holds every project's secrets and recordings).

    Files created from now on are owner-only too (umask 077): the database, its WAL, recordings,
    the audio cache.
    """
    os.umask(0o077)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def open_store(data_dir: Path) -> Store:
    prepare_data_dir(data_dir)
    return Store.open(data_dir / DATABASE_NAME)


async def _heartbeat(store: Store) -> None:
    while True:
        store.mark_alive()
        await asyncio.sleep(HEARTBEAT_INTERVAL)


def _token_of(store: Store) -> Callable[[str], str | None]:
    def lookup(project_id: str) -> str | None:
        row = store.get_project(project_id)
        return None if row is None else row["token"]

    return lookup


def _default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


def _sip_hostport(uri: str) -> tuple[str, int]:
    # The trunk was validated as a SIP URI by the engine's parse_uri when used; here only its
    # host and port matter, and a malformed one simply trusts nothing.
    from callplane.sip.message import SipParseError, parse_uri

    try:
        target = parse_uri(uri)
    except SipParseError:
        return "", 0
    return target.host_bare, target.default_port()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _speech_recognizer(config: ServerConfig) -> PocketSphinxRecognizer | WhisperRecognizer | None:
    """pocketsphinx is a dependency of the server, but a build without it still serves
    everything except speech (which then answers 501). Whisper is asked for explicitly, so a
    missing package or model is an error (AsrError) that stops the start."""
    if config.asr == "whisper":
        # Joined from the wheels' two halves into the data directory (providers.whisper).
        return WhisperRecognizer(config.asr_model, cache_dir=config.data_dir / "models")
    if importlib.util.find_spec("pocketsphinx") is None:
        log.warning("pocketsphinx is not installed: speech recognition answers 501")
        return None
    # Its grammar and dictionary files live in the data directory, not in a temporary one: a
    # killed server would leave a temporary directory behind for every start.
    return PocketSphinxRecognizer(work_dir=config.data_dir / "asr")


class StoreIdempotency:
    """The api's idempotency memory, kept in SQLite so replays survive a restart."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, project_id: str, key: str) -> tuple[int, dict[str, Any]] | None:
        entry = self._store.idempotency_get(project_id, key)
        return None if entry is None else (entry["status"], entry["body"])

    def put(self, project_id: str, key: str, status: int, body: dict[str, Any]) -> None:
        self._store.idempotency_put(project_id, key, status, body)


async def serve(config: ServerConfig, *, install_signal_handlers: bool = True) -> None:
    store = open_store(config.data_dir)
    try:
        recognizer = _speech_recognizer(config)
    except AsrError:
        store.close()
        raise
    default, generated = prepare_projects(
        store, config.data_dir, project=config.project, token=config.token
    )
    for line in generated:  # secrets are shown once, when generated
        print(line, flush=True)
    config.project, config.token = default["id"], default["token"]
    targets = config.target_policy()
    outbox = WebhookOutbox(store, signing_key=default["signing_key"], targets=targets)
    # Every outbound HTTP fetch (SWML, audio, SWML request) goes through the target policy.
    http = targets.http_client(timeout=httpx.Timeout(10.0, connect=5.0))
    sip = SipEndpoint(
        config.sip_host,
        config.sip_port,
        user_agent=f"callplane/{__version__}",
        trusted=config.sip_trusted,
        users=config.sip_users,
        max_calls=config.effective_max_calls(),
        rate=config.sip_rate[0] or None,
        burst=config.sip_rate[1],
    )
    media = MediaEngine(config.sip_host, config.rtp_ports)
    llm: OpenAiChat | None = None
    if config.llm_url and config.llm_model:
        llm = OpenAiChat(LlmSettings(config.llm_url, config.llm_model, config.llm_key), http)
    else:
        log.info("no language model configured (--llm-url, --llm-model): SWML ai fails")
    scheme = "https" if config.tls_cert else "http"
    engine = CallEngine(
        EngineConfig(
            project_id=config.project,
            space_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"callplane:{config.project}")),
            sip_host=config.sip_host,
            sip_port=config.sip_port,
            media_host=config.sip_host,
            data_dir=config.data_dir,
            routes=dict(config.routes),
            trunk=config.trunk,
            http_base_url=f"{scheme}://{_url_host(config.http_host)}:{config.http_port}",
            targets=targets,
        ),
        store=store,
        outbox=outbox,
        sip=sip,
        media=media,
        tts=DefaultTts(),
        http=http,
        recognizer=recognizer,
        llm=llm,
    )
    ready = False
    heartbeat: asyncio.Task[None] | None = None
    app = create_app(
        engine,
        tokens=_token_of(store),
        idempotency=StoreIdempotency(store),
        ready=lambda: ready,
        targets=targets,
        extra_routes=[
            *recording_routes(store.get_recording),
            *conference_routes(
                conference.directory_of(engine.services), queue.queues_of(engine.services)
            ),
            *admin_routes(
                routes=engine.config.routes,
                default_project=lambda: engine.config.project_id,
                list_calls=lambda project, status: [
                    row["leg"] for row in store.list_calls(project, status)
                ],
                targets=targets,
            ),
        ],
    )
    raise_descriptor_limit()
    gate = ConnectionGate(
        max_connections=connection_cap(config.max_connections),
        head_timeout=HEAD_TIMEOUT,
        max_head_bytes=MAX_HEAD_BYTES,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.http_host,
            port=config.http_port,
            log_level=config.log_level.lower(),
            lifespan="off",
            access_log=config.log_level.lower() == "debug",
            # The gate closes slow heads and caps connections (api.limits); uvicorn bounds the
            # idle time between requests. limit_concurrency is not used: it answers 503 but
            # keeps the sockets open, and the gate already bounds connections (so requests).
            http=guarded_protocol(gate),
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            backlog=min(2048, gate.max_connections),
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
        )
    )
    # uvicorn would capture SIGTERM and re-raise it once HTTP is down, killing the process before
    # the calls are ended; our handlers end the calls first.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(watch_descriptors(), name="descriptor-watch")
    try:
        await outbox.start()
        await sip.start()
        config.sip_port = sip.port
        engine.config.sip_port = sip.port
        await media.start()
        await engine.start()
        # Only after engine.start(): recovering a crash's orphans reads the previous heartbeat.
        heartbeat = asyncio.create_task(_heartbeat(store))
        if recognizer is not None:
            # Load the decoder once now, so the first speech collect does not wait for it.
            await asyncio.to_thread(recognizer.warm_up)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.01)
        if serving.done():
            await serving  # re-raise why the HTTP server could not start
            return
        ready = True
        log.info(
            "callplane %s ready: %s %s:%d, SIP udp %s:%d, %d project(s), inbound to %s, "
            "private targets %s",
            __version__,
            scheme.upper(),
            config.http_host,
            config.http_port,
            config.sip_host,
            sip.port,
            len(store.list_projects()),
            config.project,
            targets.setting,
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        log.info("callplane stopping: ending active calls")
        ready = False
        await engine.stop()
        server.should_exit = True
        await serving
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
        watchdog.cancel()
        await media.stop()
        await sip.stop()
        await outbox.stop(flush_timeout=5.0)
        await http.aclose()
        if recognizer is not None:
            recognizer.close()
        store.close()
        log.info("callplane stopped")
