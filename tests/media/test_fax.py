"""The sans-IO fax terminal: two spandsp T.30 terminals wired back to back, frame by frame."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from callplane.media import spandsp
from callplane.media.fax import (
    NEGOTIATION_TICKS,
    DocumentError,
    FaxPage,
    FaxResult,
    FaxTerminal,
    pdf_to_tiff,
    tiff_to_pdf,
)
from callplane.media.sources import FRAME_SAMPLES

pytestmark = pytest.mark.skipif(
    not (spandsp.available() and shutil.which("gs") and shutil.which("tiff2pdf")),
    reason="libspandsp2, ghostscript or libtiff-tools missing",
)

PS = b"""%!PS
/Helvetica findfont 40 scalefont setfont
72 700 moveto (one) show 100 100 300 300 rectfill showpage
72 700 moveto (two) show 8 setlinewidth 72 72 moveto 500 700 lineto stroke showpage
72 700 moveto (three) show showpage
"""


@pytest.fixture(scope="module")
def tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fax")
    (d / "doc.ps").write_bytes(PS)
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=pdfwrite",
            f"-sOutputFile={d / 'doc.pdf'}",
            str(d / "doc.ps"),
        ],
        check=True,
    )
    pdf_to_tiff(str(d / "doc.pdf"), str(d / "doc.tif"))
    return d / "doc.tif"


def exchange(
    a: FaxTerminal, b: FaxTerminal, seconds: float = 120
) -> tuple[list[tuple[int, object]], list[tuple[int, object]]]:
    """Run both until they finish; returns each one's (tick, event) list."""
    to_a = np.zeros(FRAME_SAMPLES, np.int16)
    to_b = np.zeros(FRAME_SAMPLES, np.int16)
    ea: list[tuple[int, object]] = []
    eb: list[tuple[int, object]] = []
    for tick in range(int(seconds * 50)):
        out_a = a.process(to_a).copy()
        out_b = b.process(to_b).copy()
        to_a, to_b = out_b, out_a
        ea += [(tick, e) for e in a.poll()]
        eb += [(tick, e) for e in b.poll()]
        if a.finished and b.finished:
            break
    return ea, eb


def test_three_pages_at_14400_with_ecm(tiff: Path, tmp_path: Path) -> None:
    a = FaxTerminal("send", str(tiff), identity="+15551230000", header_info="unit test")
    b = FaxTerminal("receive", str(tmp_path / "rx.tif"), identity="+15559870000")
    ea, eb = exchange(a, b)
    for events in (ea, eb):
        assert [e.number for _, e in events if isinstance(e, FaxPage)] == [1, 2, 3]
        assert isinstance(events[-1][1], FaxResult)
    ra, rb = a.result, b.result
    assert ra is not None and rb is not None
    assert ra.success and rb.success and ra.text == "OK"
    assert ra.pages == rb.pages == 3
    assert ra.bit_rate == 14400 and ra.ecm
    assert rb.remote_identity == "+15551230000" and ra.remote_identity == "+15559870000"
    # Pages arrive in order as they complete, about 10 s apart at most for these pages.
    ticks = [t for t, e in eb if isinstance(e, FaxPage)]
    assert ticks == sorted(ticks) and ticks[-1] < 60 * 50
    a.close()
    b.close()
    tiff_to_pdf(str(tmp_path / "rx.tif"), str(tmp_path / "rx.pdf"))
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=pgmraw",
            "-r10",
            f"-sOutputFile={tmp_path / 'page-%d.pgm'}",
            str(tmp_path / "rx.pdf"),
        ],
        check=True,
    )
    assert len(list(tmp_path.glob("page-*.pgm"))) == 3


def test_the_terminal_is_silent_once_finished_and_stop_is_idempotent(tiff: Path) -> None:
    a = FaxTerminal("send", str(tiff))
    out = a.process(np.zeros(FRAME_SAMPLES, np.int16))
    assert out.shape == (FRAME_SAMPLES,) and out.dtype == np.int16
    first = a.stop()
    assert not first.success and first.code == spandsp.ERR_CALLDROPPED and first.text
    assert a.stop() is first
    assert not a.process(np.zeros(FRAME_SAMPLES, np.int16)).any()
    assert [type(e) for e in a.poll()] == [FaxResult]
    a.close()
    a.close()


def test_an_answering_terminal_hearing_only_speech_gives_up_at_t1(tmp_path: Path) -> None:
    b = FaxTerminal("receive", str(tmp_path / "rx.tif"))
    t = np.arange(FRAME_SAMPLES) / 8000
    for k in range(NEGOTIATION_TICKS + 10):
        b.process((3000 * np.sin(2 * np.pi * 180 * (t + k * 0.02))).astype(np.int16))
        if b.finished:
            break
    assert b.result is not None and b.result.code == spandsp.ERR_T1_EXPIRED
    assert k == NEGOTIATION_TICKS - 1


def test_a_document_that_is_not_a_pdf_is_a_document_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"<html>not a pdf</html>")
    with pytest.raises(DocumentError, match="gs failed"):
        pdf_to_tiff(str(bad), str(tmp_path / "out.tif"))
    with pytest.raises(DocumentError, match="tiff2pdf failed"):
        tiff_to_pdf(str(bad), str(tmp_path / "out.pdf"))
