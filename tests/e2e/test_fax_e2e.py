"""SWML `send_fax` / `receive_fax` over real SIP and RTP, and the fax stop commands.

callplane calls itself through a local route: one leg sends a 2-page PDF, the other receives it
(T.30 over G.711 through spandsp on both). The received PDF is downloaded like a recording and
each page, rasterised, is compared with the rasterised source. Fax calls are long (about 30 s for
this document), so the module keeps its round trips to one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from farend import FarEnd
from faxdocs import agreement, fax_tools_available, make_pdf, raster
from harness import Receiver, Server, Sipp, sipp_available, swml, wait_until
from ticks import Emitted, TickSession, tick_call, tick_services

from callplane import AsyncRestClient
from callplane.engine.audio import PlayItemError
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import register
from callplane.engine.operations.fax import FaxOperation, ReceiveFaxOperation, SendFaxOperation
from callplane.engine.operations.play import start_play
from callplane.engine.services import Services
from callplane.media import spandsp
from callplane.media.fax import FaxResult, FaxTerminal, pdf_to_tiff, tiff_to_pdf
from callplane.media.g711 import ulaw_decode, ulaw_encode
from callplane.media.sources import FRAME_SAMPLES

ASSETS = Path(__file__).parent / "fax_assets"
requires_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) missing")
pytestmark = pytest.mark.skipif(
    not fax_tools_available(), reason="libspandsp2, ghostscript or libtiff-tools missing"
)


def report_vars(receiver: Receiver, path: str, prefix: str) -> dict[str, Any]:
    names = ("document", "identity", "remote_identity", "pages", "result_code", "result_text")
    body = {n: "${" + f"{prefix}_{n}" + "}" for n in names}
    body["result"] = "${" + f"{prefix}_result" + "}"
    return {"request": {"url": receiver.url(path), "method": "POST", "body": body}}


def fax_events(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [e["params"] for e in receiver.events(path, "calling.call.fax")]


def finished(receiver: Receiver, path: str) -> dict[str, Any] | None:
    done = [e for e in fax_events(receiver, path) if e["fax"]["type"] == "finished"]
    return done[0]["fax"]["params"] if done else None


async def test_a_two_page_pdf_goes_through_callplane_to_callplane(
    make_server: object, receiver: Receiver, tmp_path: Path
) -> None:
    pdf_url = receiver.serve_file("/doc.pdf", make_pdf(tmp_path), "application/pdf")
    receiver.serve_swml(
        "/faxin",
        swml(
            {"receive_fax": {"status_url": receiver.url("/rx")}},
            report_vars(receiver, "/rx-vars", "receive_fax"),
            # The sender's T.30 ends a little after ours: the sender hangs up.
            {"sleep": -1},
        ),
    )
    server: Server = make_server(routes={"faxin": receiver.url("/faxin")})  # type: ignore[operator]
    sender = swml(
        {
            "send_fax": {
                "document": pdf_url,
                "header_info": "callplane e2e",
                "status_url": receiver.url("/tx"),
            }
        },
        report_vars(receiver, "/tx-vars", "send_fax"),
        {"hangup": {}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to="faxin", swml=sender)
        await asyncio.to_thread(
            wait_until,
            lambda: receiver.events("/tx-vars") and receiver.events("/rx-vars"),
            90,
            "both fax scripts to report",
        )
        await asyncio.to_thread(server.wait_status, leg["id"], "ended", timeout=15)

    tx_vars = receiver.events("/tx-vars")[0]
    rx_vars = receiver.events("/rx-vars")[0]
    assert tx_vars["result"] == "success", tx_vars
    assert rx_vars["result"] == "success", rx_vars
    assert tx_vars["pages"] == rx_vars["pages"] == "2"
    assert tx_vars["result_code"] == rx_vars["result_code"] == "0"
    assert tx_vars["result_text"] == "OK"
    assert tx_vars["document"] == pdf_url
    assert tx_vars["identity"] == "+15551230000"
    assert rx_vars["remote_identity"] == "+15551230000"
    assert tx_vars["remote_identity"] == rx_vars["identity"]

    # Events: started, page 1, page 2, finished on both sides, with one control_id each.
    for path, direction in (("/tx", "send"), ("/rx", "receive")):
        events = fax_events(receiver, path)
        kinds = [(e["fax"]["type"], e["fax"]["params"].get("number")) for e in events]
        assert kinds == [("started", None), ("page", 1), ("page", 2), ("finished", None)]
        assert len({e["control_id"] for e in events}) == 1
        done = events[-1]["fax"]["params"]
        assert done["direction"] == direction and done["success"] is True
        assert done["pages"] == 2 and done["result"] == 0 and done["format"] == "pdf"
    done_rx = finished(receiver, "/rx")
    assert done_rx is not None and done_rx["document"] == rx_vars["document"]

    # The received PDF, downloaded like a recording, has the source's two pages.
    document = str(done_rx["document"])
    path = document.split(server.host, 1)[1]
    response = server.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    received_pdf = tmp_path / "received.pdf"
    received_pdf.write_bytes(response.content)
    received = raster(received_pdf, fit=False)
    source = raster(tmp_path / "doc.pdf", fit=True)
    assert len(received) == len(source) == 2
    for got, sent in zip(received, source, strict=True):
        same, overlap = agreement(got, sent)
        assert same > 0.99 and overlap > 0.95, (same, overlap)


def _started(receiver: Receiver, path: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        for e in fax_events(receiver, path):
            if e["fax"]["type"] == "started":
                return e
        return None

    return wait_until(seen, 30, f"a started fax event on {path}")  # type: ignore[no-any-return]


async def test_send_fax_stop_in_page_one_fails_both_ends_and_the_calls_stay_up(
    make_server: object, receiver: Receiver, tmp_path: Path
) -> None:
    pdf_url = receiver.serve_file("/doc.pdf", make_pdf(tmp_path), "application/pdf")
    receiver.serve_swml(
        "/faxin",
        swml(
            {"receive_fax": {"status_url": receiver.url("/rx")}},
            report_vars(receiver, "/rx-vars", "receive_fax"),
            {"sleep": -1},
        ),
    )
    server: Server = make_server(routes={"faxin": receiver.url("/faxin")})  # type: ignore[operator]
    sender = swml(
        {"send_fax": {"document": pdf_url, "status_url": receiver.url("/tx")}},
        report_vars(receiver, "/tx-vars", "send_fax"),
        {"sleep": -1},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to="faxin", swml=sender)
        started = await asyncio.to_thread(_started, receiver, "/tx")
        # Page 1's image data flows from about 8 s to 19 s after the start.
        await asyncio.sleep(12)
        assert not [e for e in fax_events(receiver, "/tx") if e["fax"]["type"] == "page"]
        response = await asyncio.to_thread(
            server.post,
            {
                "command": "calling.send_fax.stop",
                "id": leg["id"],
                "params": {"control_id": started["control_id"]},
            },
        )
        assert response.status_code == 200, response.text
        await asyncio.to_thread(
            wait_until,
            lambda: receiver.events("/tx-vars") and receiver.events("/rx-vars"),
            60,
            "both scripts to go on after the fax",
        )
        tx, rx = receiver.events("/tx-vars")[0], receiver.events("/rx-vars")[0]
        assert tx["result"] == rx["result"] == "failed"
        assert tx["pages"] == rx["pages"] == "0"
        assert tx["result_code"] != "0" and tx["result_text"]
        assert rx["result_code"] != "0" and rx["result_text"]
        done = finished(receiver, "/tx")
        assert done is not None and done["success"] is False and done["pages"] == 0
        assert done["result_text"] == tx["result_text"]
        # Stopping the fax ended neither call.
        assert server.call_status(leg["id"]) == "answered"
        again = await asyncio.to_thread(
            server.post,
            {
                "command": "calling.send_fax.stop",
                "id": leg["id"],
                "params": {"control_id": started["control_id"]},
            },
        )
        assert again.status_code == 422  # nothing left to stop
        await client.calling.end(leg["id"])


async def test_receive_fax_stop_while_waiting_and_nothing_else_plays_meanwhile(
    make_server: object, receiver: Receiver
) -> None:
    receiver.serve_swml(
        "/faxin",
        swml(
            {"receive_fax": {"status_url": receiver.url("/rx")}},
            report_vars(receiver, "/rx-vars", "receive_fax"),
            {"sleep": -1},
        ),
    )
    server: Server = make_server(routes={"faxin": receiver.url("/faxin")})  # type: ignore[operator]
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to="faxin", swml=swml({"sleep": -1}))
        started = await asyncio.to_thread(_started, receiver, "/rx")
        inbound = started["call_id"]
        play = await asyncio.to_thread(
            server.post,
            {
                "command": "calling.play",
                "id": inbound,
                "params": {"play": [{"type": "silence", "params": {"duration": 1}}]},
            },
        )
        assert play.status_code == 409, play.text
        assert "receive_fax" in play.text
        response = await asyncio.to_thread(
            server.post,
            {
                "command": "calling.receive_fax.stop",
                "id": inbound,
                "params": {"control_id": started["control_id"]},
            },
        )
        assert response.status_code == 200, response.text
        await asyncio.to_thread(wait_until, lambda: receiver.events("/rx-vars"), 15, "rx vars")
        rx = receiver.events("/rx-vars")[0]
        assert rx["result"] == "failed" and rx["pages"] == "0" and rx["document"] == ""
        done = finished(receiver, "/rx")
        assert done is not None and done["success"] is False and done["document"] is None
        assert server.call_status(inbound) == "answered"
        assert server.call_status(leg["id"]) == "answered"
        # Once the fax is over, the leg plays again.
        play = await asyncio.to_thread(
            server.post,
            {
                "command": "calling.play",
                "id": inbound,
                "params": {"play": [{"type": "silence", "params": {"duration": 1}}]},
            },
        )
        assert play.status_code == 200, play.text
        await client.calling.end(leg["id"])


@requires_sipp
async def test_a_person_answering_fails_the_fax_with_the_t30_reason(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    """sipp answers and talks: receive_fax gives up on T.30's terms (its DIS unanswered after
    the permitted retries, or T1 if the talk never pauses), the script goes on and the call
    ends normally."""
    sipp = Sipp(["-sf", str(ASSETS / "uas_speech.xml"), "-m", "1"]).start(tmp_path)
    try:
        script = swml(
            {"receive_fax": {"status_url": receiver.url("/rx")}},
            report_vars(receiver, "/rx-vars", "receive_fax"),
            {"hangup": {}},
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(
                from_="+15551230000", to=f"sip:bob@{sipp.uri_host}", swml=script
            )
            await asyncio.to_thread(wait_until, lambda: receiver.events("/rx-vars"), 50, "vars")
            await asyncio.to_thread(server.wait_status, leg["id"], "ended", timeout=15)
        rx = receiver.events("/rx-vars")[0]
        assert rx["result"] == "failed" and rx["pages"] == "0"
        assert rx["result_code"] in (str(spandsp.ERR_RETRYDCN), str(spandsp.ERR_T1_EXPIRED))
        assert rx["result_text"] == spandsp.completion_text(int(rx["result_code"]))
        done = finished(receiver, "/rx")
        assert done is not None and done["success"] is False
        assert await asyncio.to_thread(sipp.wait, 20) == 0
    finally:
        sipp.stop()


# -- an independent fax terminal: its own RTP, its own T.30 ---------------------------------------


async def fax_far_end(far: FarEnd, terminal: FaxTerminal, seconds: float = 90) -> FaxResult:
    """Runs ``terminal`` on the far end's call: PCMU in from its socket (ordered, a 40 ms
    buffer), PCMU out on an absolute 20 ms schedule. Returns the terminal's result."""
    await asyncio.wait_for(far.answered.wait(), 15)
    queue = np.zeros(0, np.int16)
    seen, started, last_seq = 0, False, None
    start = time.monotonic()
    for n in range(int(seconds * 50)):
        fresh = [p for p in far.packets[seen:] if p.pt == 0]
        seen = len(far.packets)
        for p in sorted(fresh, key=lambda p: p.seq):
            if last_seq is not None and (p.seq - last_seq) % 65536 > 32768:
                continue  # a straggler: its time has passed
            last_seq = p.seq
            queue = np.concatenate([queue, ulaw_decode(p.payload).astype(np.int16)])
        started = started or queue.size >= 2 * FRAME_SAMPLES
        if started and queue.size >= FRAME_SAMPLES:
            frame, queue = queue[:FRAME_SAMPLES], queue[FRAME_SAMPLES:]
        else:
            frame = np.zeros(FRAME_SAMPLES, np.int16)
        far.send_frame(ulaw_encode(terminal.process(frame)).tobytes())
        if terminal.result is not None:
            return terminal.result
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
    return terminal.stop()


async def test_callplane_sends_to_an_independent_fax_terminal(
    server: Server, receiver: Receiver, far_end: FarEnd, tmp_path: Path
) -> None:
    pdf_url = receiver.serve_file("/doc.pdf", make_pdf(tmp_path, pages=1), "application/pdf")
    terminal = FaxTerminal("receive", str(tmp_path / "rx.tif"), identity="+15559870000")
    script = swml(
        {"send_fax": {"document": pdf_url, "status_url": receiver.url("/tx")}},
        report_vars(receiver, "/tx-vars", "send_fax"),
        {"hangup": {}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        result = await fax_far_end(far_end, terminal)
        await asyncio.to_thread(wait_until, lambda: receiver.events("/tx-vars"), 15, "tx vars")
    terminal.close()
    assert result.success and result.pages == 1, result
    assert result.remote_identity == "+15551230000"
    tx = receiver.events("/tx-vars")[0]
    assert tx["result"] == "success" and tx["pages"] == "1"
    assert tx["remote_identity"] == "+15559870000"
    tiff_to_pdf(str(tmp_path / "rx.tif"), str(tmp_path / "rx.pdf"))
    (got,) = raster(tmp_path / "rx.pdf", fit=False)
    (sent,) = raster(tmp_path / "doc.pdf", fit=True)
    same, overlap = agreement(got, sent)
    assert same > 0.99 and overlap > 0.95, (same, overlap)


async def test_an_independent_fax_terminal_sends_to_callplane(
    server: Server, receiver: Receiver, far_end: FarEnd, tmp_path: Path
) -> None:
    make_pdf(tmp_path, pages=1)
    pdf_to_tiff(str(tmp_path / "doc.pdf"), str(tmp_path / "doc.tif"))
    # callplane answers the T.30 session (receive_fax), the far end calls it, as a fax machine
    # that is dialled and sends does.
    terminal = FaxTerminal("send", str(tmp_path / "doc.tif"), identity="+15559870000")
    script = swml(
        {"receive_fax": {"status_url": receiver.url("/rx")}},
        report_vars(receiver, "/rx-vars", "receive_fax"),
        {"sleep": -1},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        result = await fax_far_end(far_end, terminal)
        await asyncio.to_thread(wait_until, lambda: receiver.events("/rx-vars"), 15, "rx vars")
        await client.calling.end(leg["id"])
    terminal.close()
    assert result.success and result.pages == 1, result
    rx = receiver.events("/rx-vars")[0]
    assert rx["result"] == "success" and rx["pages"] == "1"
    assert rx["remote_identity"] == "+15559870000"
    response = server.get(rx["document"].split(server.host, 1)[1])
    assert response.status_code == 200
    (tmp_path / "got.pdf").write_bytes(response.content)
    (got,) = raster(tmp_path / "got.pdf", fit=False)
    (sent,) = raster(tmp_path / "doc.pdf", fit=True)
    same, overlap = agreement(got, sent)
    assert same > 0.99 and overlap > 0.95, (same, overlap)


# -- the operations driven by ticks alone (no sockets, no clock) ----------------------------------


class _Fetch:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def fetch(self, url: str) -> Path:
        return self.path


async def _listening(*sessions: TickSession) -> None:
    """Until every operation attached to its leg (documents are converted in a thread)."""
    for _ in range(500):
        if all(s.listeners for s in sessions):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fax never started")


def _start(
    op_type: type[FaxOperation], services: Services, call: Any, **kwargs: Any
) -> FaxOperation:
    op = op_type(services, call, f"{op_type.kind}-1", None, services.emit, **kwargs)
    register(call, op)
    op.start()
    return op


def _fax_params(emitted: Emitted, kind: str) -> list[dict[str, Any]]:
    return [p["fax"] for p in emitted.params(kind)]


async def test_ticks_send_and_receive_between_two_legs(tmp_path: Path) -> None:
    make_pdf(tmp_path)
    emitted = Emitted()
    services = tick_services(
        emitted, recordings=tmp_path / "recordings", audio=_Fetch(tmp_path / "doc.pdf")
    )
    a, b = TickSession(), TickSession()
    call_a, call_b = tick_call(a), tick_call(b)
    sender = _start(SendFaxOperation, services, call_a, identity="+1555", document="u")
    receiver_op = _start(ReceiveFaxOperation, services, call_b, identity="+1666")
    await _listening(a, b)
    assert a.jitter.fixed and b.jitter.fixed  # fax mode while it runs
    to_b = to_a = None
    for _ in range(50 * 90):
        to_b = a.tick(to_a).outbound.copy()
        to_a = b.tick(to_b).outbound.copy()
        if sender.result is not None or (sender.task and sender.task.done()):
            break
        await asyncio.sleep(0)
    sent, got = await sender.task, await receiver_op.task  # type: ignore[misc]
    assert sent.success and got.success and sent.pages == got.pages == 2
    assert not a.jitter.fixed and not b.jitter.fixed  # back to the adaptive buffer
    assert [f["type"] for f in _fax_params(emitted, "send_fax")] == [
        "started",
        "page",
        "page",
        "finished",
    ]
    done = _fax_params(emitted, "receive_fax")[-1]["params"]
    assert done["remote_identity"] == "+1555" and done["success"] and done["pages"] == 2
    (row,) = services.store.rows.values()  # type: ignore[attr-defined]
    assert row["format"] == "pdf" and done["document"].endswith(row["id"])
    assert len(raster(Path(row["path"]), fit=False)) == 2
    # The working TIFFs are gone: only the stored PDF (and its rasters made just now) remain.
    assert {p.name for p in (tmp_path / "recordings").iterdir() if p.suffix != ".pgm"} == {
        f"{row['id']}.pdf"
    }
    assert not call_a.operations and not call_b.operations


async def test_ticks_a_stop_while_waiting_reports_the_failure(tmp_path: Path) -> None:
    emitted = Emitted()
    services = tick_services(emitted, recordings=tmp_path)
    session = TickSession()
    call = tick_call(session)
    op = _start(ReceiveFaxOperation, services, call, identity="")
    await _listening(session)
    session.silence(2.0)
    # Nothing else may write into the leg's outbound audio while the fax runs.
    with pytest.raises(CommandError) as refused:
        start_play(services, call, control_id="p", items=[], status_url=None)
    assert refused.value.status == 409
    await asyncio.wait_for(op.stop(), 5)
    result = await op.task  # type: ignore[misc]
    assert not result.success
    (done,) = [f["params"] for f in _fax_params(emitted, "receive_fax") if f["type"] == "finished"]
    assert done["success"] is False and done["result"] == result.code != 0
    assert done["result_text"] and done["document"] is None and done["pages"] == 0
    assert not session.listeners and not call.operations
    assert services.store.rows == {}  # type: ignore[attr-defined]


async def test_ticks_a_far_end_that_talks_is_not_a_fax_machine(tmp_path: Path) -> None:
    """Speech-like audio (a warbling vowel) for as long as T.30 waits: a clean failure."""
    emitted = Emitted()
    services = tick_services(emitted, recordings=tmp_path)
    session = TickSession()
    call = tick_call(session)
    op = _start(ReceiveFaxOperation, services, call, identity="")
    await _listening(session)
    t = np.arange(FRAME_SAMPLES) / 8000
    for k in range(50 * 40):
        f0 = 120 + 30 * np.sin(k / 25)
        voice = sum(np.sin(2 * np.pi * f0 * h * (t + k * 0.02)) / h for h in range(1, 8))
        session.tick((3000 * voice).astype(np.int16))
        if op.task is not None and op.task.done():
            break
        await asyncio.sleep(0)
    result = await asyncio.wait_for(op.task, 5)  # type: ignore[arg-type]
    assert result.code == spandsp.ERR_T1_EXPIRED
    assert result.text == "Timed out waiting for the first message"
    (done,) = [f["params"] for f in _fax_params(emitted, "receive_fax") if f["type"] == "finished"]
    assert done["success"] is False and done["result_text"] == result.text


class _BrokenFetch:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def fetch(self, url: str) -> Path:
        await self.release.wait()
        raise PlayItemError(f"cannot fetch {url}: HTTP 404")


async def test_ticks_a_document_that_cannot_be_fetched_fails_the_send(tmp_path: Path) -> None:
    emitted = Emitted()
    fetch = _BrokenFetch()
    services = tick_services(emitted, recordings=tmp_path, audio=fetch)
    session = TickSession()
    call = tick_call(session)
    op = _start(SendFaxOperation, services, call, identity="+1555", document="http://x/doc.pdf")
    fetch.release.set()
    result = await asyncio.wait_for(op.task, 5)  # type: ignore[arg-type]
    assert not result.success and "HTTP 404" in result.text
    (done,) = [f["params"] for f in _fax_params(emitted, "send_fax")]  # no `started`: no fax ran
    assert done["success"] is False and "HTTP 404" in done["result_text"]
    assert done["document"] == "http://x/doc.pdf" and not session.listeners
    assert not call.operations


async def test_ticks_a_stop_while_the_document_is_fetched(tmp_path: Path) -> None:
    emitted = Emitted()
    fetch = _BrokenFetch()
    services = tick_services(emitted, recordings=tmp_path, audio=fetch)
    session = TickSession()
    call = tick_call(session)
    op = _start(SendFaxOperation, services, call, identity="", document="http://x/doc.pdf")
    await asyncio.sleep(0.01)
    await asyncio.wait_for(op.stop(), 5)
    fetch.release.set()
    await asyncio.wait_for(op.task, 5)  # type: ignore[arg-type]
    (done,) = [f["params"] for f in _fax_params(emitted, "send_fax")]
    assert done["success"] is False and done["result"] == spandsp.ERR_CALLDROPPED
    assert not session.listeners and not call.operations
