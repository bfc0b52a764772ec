"""SWML `send_fax` / `receive_fax` over real SIP and RTP, and the fax stop commands.

callplane calls itself through a local route: one leg sends a 2-page PDF, the other receives it
(T.30 over G.711 through spandsp on both). The received PDF is downloaded like a recording and
each page, rasterised, is compared with the rasterised source. Fax calls are long (about 30 s for
this document), so the module keeps its round trips to one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faxdocs import agreement, fax_tools_available, make_pdf, raster
from harness import Receiver, Server, wait_until

from callplane import AsyncRestClient

pytestmark = pytest.mark.skipif(
    not fax_tools_available(), reason="libspandsp2, ghostscript or libtiff-tools missing"
)


def swml(*methods: object) -> dict[str, object]:
    return {"version": "1.0.0", "sections": {"main": list(methods)}}


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
