"""SWML `send_fax` / `receive_fax` and `calling.send_fax.stop` / `calling.receive_fax.stop`
(swml.md §2.1, reference §4.27 and §7.3 `calling.call.fax`).

A fax is an audio T.30 exchange (``media.fax.FaxTerminal``) driven by the call's ticks: each
tick's inbound frame goes in, the frame it answers is pushed to a live playback and leaves on the
next tick. While it runs the leg is in fax mode: its jitter buffer keeps a fixed delay (no
shrinking, no timeline shifts, which modems cannot follow) and no other operation may write into
its outbound audio (``Operation.exclusive_audio``). States: ``running`` -> ``finished``; events
are ``started`` (a callplane extension: it carries the control_id that the stop commands need),
``page`` (each page done) and one ``finished`` with the §7.3 shape, also after a stop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.audio import PlayItemError
from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import Emit, Operation, lookup, register
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.media import fax as faxmedia
from callplane.media import spandsp
from callplane.media.sources import LiveSource
from callplane.store import RecordingRow

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback, TickFrames

log = logging.getLogger("callplane.engine.fax")

# Fax mode's jitter-buffer delay: 60 ms absorbs loopback and LAN jitter without re-anchoring.
FAX_JITTER_FRAMES = 3
# T.30's own timers end a silent exchange (T1 = 35 s); this only bounds a wedged one.
MAX_FAX_SECONDS = 3600.0
# Result code when the document could not be fetched or converted (spandsp's "file error").
_DOCUMENT_ERROR = -1


class FaxOperation(Operation):
    event_type = "calling.call.fax"
    initial_state = "running"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {"running": frozenset({"finished"})}
    exclusive_audio = True
    writes_audio = True
    direction: ClassVar[faxmedia.Direction]

    def __init__(
        self,
        services: Services,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        identity: str,
        header_info: str | None = None,
        document: str | None = None,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self._services = services
        self.identity = identity
        self.header_info = header_info
        self.document_url = document  # send: the source PDF; receive: the stored PDF's URL
        self.result: faxmedia.FaxResult | None = None
        self._terminal: faxmedia.FaxTerminal | None = None
        self._live: LiveSource | None = None
        self._playback: Playback | None = None
        self._ended: asyncio.Event = asyncio.Event()
        self.task: asyncio.Task[faxmedia.FaxResult] | None = None
        # Pages are documents of the project: they stay in the (owner-only) data directory.
        recordings = services.config.recordings_dir
        recordings.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix=".fax-", dir=recordings))

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        # Its own task, so that a cancelled script still lets the exchange end and report.
        self.task = asyncio.create_task(self.run(), name=f"{self.kind}-{self.control_id}")

    async def run(self) -> faxmedia.FaxResult:
        try:
            return await self._run()
        finally:
            self._detach()
            await asyncio.to_thread(_remove_tree, self._workdir)

    async def _run(self) -> faxmedia.FaxResult:
        path = self._workdir / "fax.tif"
        try:
            if self.direction == "send":
                await self._prepare(path)
            terminal = faxmedia.FaxTerminal(
                self.direction, str(path), identity=self.identity, header_info=self.header_info
            )
        except (PlayItemError, faxmedia.DocumentError, spandsp.SpandspUnavailable) as exc:
            log.warning("fax %s on call %s: %s", self.control_id, self.call.id, exc)
            return self._complete(_failure(_DOCUMENT_ERROR, str(exc)))
        if self.is_terminal:  # stopped while the document was prepared
            terminal.close()
            return self._complete(self.result or _failure(spandsp.ERR_CALLDROPPED, ""))
        session = self.call.media
        if session is None:
            terminal.close()
            return self._complete(_failure(spandsp.ERR_CALLDROPPED, "the call has no media"))
        self._terminal = terminal
        jitter = session.jitter
        previous_target = jitter.target_frames
        jitter.set_fixed(FAX_JITTER_FRAMES)
        self._live = LiveSource(f"fax-{self.control_id}", max_frames=5)
        self._playback = session.play(self._live)
        session.add_listener(self._on_tick)
        # Not in §7.3: the only way a REST client learns the control_id that the stop commands
        # need before the first page is done.
        self.report({"fax": {"type": "started", "params": {"direction": self.direction}}})
        try:
            try:
                await asyncio.wait_for(self._ended.wait(), MAX_FAX_SECONDS)
            except TimeoutError:
                terminal.stop()
                self._drain()
        finally:
            session.remove_listener(self._on_tick)
            jitter.set_fixed(previous_target)
            jitter.set_fixed(None)
        result = terminal.result or terminal.stop()
        terminal.close()
        if self.direction == "receive" and result.pages > 0:
            self.document_url = await self._store_pdf(path)
        return self._complete(result)

    async def _prepare(self, tiff: Path) -> None:
        if not self.document_url:
            raise faxmedia.DocumentError("send_fax needs a document")
        pdf = await self._services.audio.fetch(self.document_url)
        await asyncio.to_thread(faxmedia.pdf_to_tiff, str(pdf), str(tiff))

    def _on_tick(self, frames: TickFrames) -> None:
        terminal, live = self._terminal, self._live
        if terminal is None or live is None:
            return
        live.push(terminal.process(frames.inbound))
        self._drain()

    def _drain(self) -> None:
        terminal = self._terminal
        if terminal is None:
            return
        for event in terminal.poll():
            if isinstance(event, faxmedia.FaxPage):
                self.report(
                    {
                        "fax": {
                            "type": "page",
                            "params": {"direction": self.direction, "number": event.number},
                        }
                    }
                )
            else:
                self._ended.set()

    def _detach(self) -> None:
        if self._playback is not None:
            self._playback.stop()
            self._playback = None
        if self._live is not None:
            self._live.close()
            self._live = None

    async def _store_pdf(self, tiff: Path) -> str | None:
        recording_id = str(uuid.uuid4())
        config = self._services.config
        pdf = config.recordings_dir / f"{recording_id}.pdf"
        try:
            await asyncio.to_thread(pdf.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(faxmedia.tiff_to_pdf, str(tiff), str(pdf))
            size = (await asyncio.to_thread(pdf.stat)).st_size
        except (faxmedia.DocumentError, OSError) as exc:
            log.warning("fax %s: cannot store the received pages: %s", self.control_id, exc)
            return None
        # A received fax is stored and served like a recording: same directory, same
        # project-scoped download endpoint.
        self._services.store.save_recording(
            RecordingRow(
                id=recording_id,
                call_id=self.call.id,
                control_id=self.control_id,
                path=str(pdf),
                format="pdf",
                duration=None,
                size=size,
                created_at=time.time(),
            )
        )
        return config.recording_url(recording_id)

    def _complete(self, result: faxmedia.FaxResult) -> faxmedia.FaxResult:
        self.result = result
        if not self.is_terminal:
            self.report({"fax": {"type": "finished", "params": self.outcome()}})
            self.finish("finished")
        return result

    def outcome(self) -> dict[str, Any]:
        result = self.result or _failure(spandsp.ERR_CALLDROPPED, "")
        return {
            "direction": self.direction,
            "identity": self.identity,
            "remote_identity": result.remote_identity,
            "document": self.document_url,
            "pages": result.pages,
            "success": result.success,
            "result": result.code,
            "result_text": result.text,
            "format": "pdf",
        }

    async def stop(self) -> None:
        """`calling.*_fax.stop`, or the call ending: the exchange ends as a dropped call."""
        if self.is_terminal and self._terminal is None:
            return
        if self._terminal is not None and self._terminal.result is None:
            self._terminal.stop()
            self._drain()
        elif self._terminal is None:
            self.result = _failure(spandsp.ERR_CALLDROPPED, "")
            self._ended.set()
            self._complete(self.result)
        await asyncio.shield(self.done)


class SendFaxOperation(FaxOperation):
    kind = "send_fax"
    direction = "send"


class ReceiveFaxOperation(FaxOperation):
    kind = "receive_fax"
    direction = "receive"


def _failure(code: int, detail: str) -> faxmedia.FaxResult:
    text = detail
    if code >= 0:
        base = spandsp.completion_text(code) if spandsp.available() else "call dropped"
        text = f"{base}: {detail}" if detail else base
    return faxmedia.FaxResult(code, text, 0, "", 0, False)


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink(missing_ok=True)
    path.rmdir()


def _number(uri: str) -> str:
    """A T.30 ident from an address: the user part of a SIP URI, the characters T.30 allows."""
    user = re.sub(r"^(sips?|tel):", "", uri).split("@", 1)[0]
    return re.sub(r"[^0-9+ ]", "", user)[:20]


async def _run_swml(
    services: Services, call: Call, op_type: type[FaxOperation], params: dict[str, Any]
) -> dict[str, Any]:
    if not spandsp.available():
        raise SwmlError(f"{op_type.kind} needs libspandsp2, which is not installed")
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    if call.media is None:
        raise SwmlError(f"{op_type.kind} needs an answered call with media")
    if call.bridge is not None:
        raise SwmlError(f"{op_type.kind} cannot run on a bridged call")
    direction = op_type.direction
    identity = params.get("identity")
    if identity is None:
        identity = _number(call.from_ if direction == "send" else call.to)
    op = op_type(
        services,
        call,
        f"swml-{op_type.kind}-{uuid.uuid4()}",
        params.get("status_url"),
        services.emit,
        identity=str(identity),
        header_info=params.get("header_info"),
        document=params.get("document") if direction == "send" else None,
    )
    try:
        register(call, op)
    except CommandError as exc:
        raise SwmlError(exc.message) from exc
    op.start()
    assert op.task is not None
    try:
        await asyncio.shield(op.task)
    finally:
        await op.stop()
    out = op.outcome()
    prefix = f"{op_type.kind}_"
    return {
        f"{prefix}document": out["document"] or "",
        f"{prefix}identity": out["identity"],
        f"{prefix}remote_identity": out["remote_identity"],
        f"{prefix}pages": str(out["pages"]),
        f"{prefix}result_code": str(out["result"]),
        f"{prefix}result_text": out["result_text"],
        f"{prefix}result": "success" if out["success"] else "failed",
    }


async def swml_send_fax(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    return await _run_swml(services, call, SendFaxOperation, params)


async def swml_receive_fax(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    return await _run_swml(services, call, ReceiveFaxOperation, params)


async def _send_stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, SendFaxOperation, p).stop()


async def _receive_stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, ReceiveFaxOperation, p).stop()


COMMANDS: dict[str, CommandHandler] = {
    "calling.send_fax.stop": _send_stop,
    "calling.receive_fax.stop": _receive_stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "send_fax": swml_send_fax,
    "receive_fax": swml_receive_fax,
}
