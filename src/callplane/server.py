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

import httpx
import uvicorn

from callplane._version import __version__
from callplane.api.app import create_app
from callplane.api.recordings import recording_routes
from callplane.engine.config import EngineConfig
from callplane.engine.core import CallEngine
from callplane.media.engine import MediaEngine
from callplane.providers.asr import PocketSphinxRecognizer
from callplane.providers.tts import DefaultTts
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


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _speech_recognizer() -> PocketSphinxRecognizer | None:
    """pocketsphinx is a dependency of the server, but a build without it still serves
    everything except speech (which then answers 501)."""
    if importlib.util.find_spec("pocketsphinx") is None:
        log.warning("pocketsphinx is not installed: speech recognition answers 501")
        return None
    return PocketSphinxRecognizer()


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
    default, generated = prepare_projects(
        store, config.data_dir, project=config.project, token=config.token
    )
    for line in generated:  # secrets are shown once, when generated
        print(line, flush=True)
    config.project, config.token = default["id"], default["token"]
    outbox = WebhookOutbox(store, signing_key=default["signing_key"])
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
    sip = SipEndpoint(config.sip_host, config.sip_port, user_agent=f"callplane/{__version__}")
    media = MediaEngine(config.sip_host, config.rtp_ports)
    recognizer = _speech_recognizer()
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
            http_base_url=f"http://{_url_host(config.http_host)}:{config.http_port}",
        ),
        store=store,
        outbox=outbox,
        sip=sip,
        media=media,
        tts=DefaultTts(),
        http=http,
        recognizer=recognizer,
    )
    ready = False
    heartbeat: asyncio.Task[None] | None = None
    app = create_app(
        engine,
        tokens=_token_of(store),
        idempotency=StoreIdempotency(store),
        ready=lambda: ready,
        extra_routes=recording_routes(store.get_recording),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.http_host,
            port=config.http_port,
            log_level=config.log_level.lower(),
            lifespan="off",
            access_log=config.log_level.lower() == "debug",
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
            "callplane %s ready: HTTP %s:%d, SIP udp %s:%d, %d project(s), inbound to %s",
            __version__,
            config.http_host,
            config.http_port,
            config.sip_host,
            sip.port,
            len(store.list_projects()),
            config.project,
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
        await media.stop()
        await sip.stop()
        await outbox.stop(flush_timeout=5.0)
        await http.aclose()
        if recognizer is not None:
            recognizer.close()
        store.close()
        log.info("callplane stopped")
