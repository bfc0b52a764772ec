"""Fax test documents: a 2-page PDF made with Ghostscript, and rasterised pages to compare."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from callplane.media import spandsp
from callplane.media.fax import PAGE_DOTS, RESOLUTION

TWO_PAGES_PS = b"""%!PS
/Helvetica findfont 40 scalefont setfont
72 700 moveto (callplane fax: page one) show
6 setlinewidth 72 72 moveto 520 640 lineto stroke
72 400 moveto 300 400 lineto 300 200 lineto closepath fill
showpage
/Helvetica findfont 40 scalefont setfont
72 700 moveto (page two: the end) show
100 100 400 300 rectfill
1 setgray 150 150 moveto (white on black) show
showpage
"""


def fax_tools_available() -> bool:
    return spandsp.available() and all(shutil.which(t) for t in ("gs", "tiff2pdf"))


def make_pdf(directory: Path, pages: int = 2) -> bytes:
    """``doc.pdf`` in ``directory``: the first ``pages`` (1 or 2) pages of TWO_PAGES_PS."""
    ps = directory / "doc.ps"
    pdf = directory / "doc.pdf"
    text = TWO_PAGES_PS if pages == 2 else TWO_PAGES_PS.split(b"showpage")[0] + b"showpage\n"
    ps.write_bytes(text)
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=pdfwrite",
            "-sPAPERSIZE=a4",
            f"-sOutputFile={pdf}",
            str(ps),
        ],
        check=True,
    )
    return pdf.read_bytes()


def raster(pdf: Path, *, fit: bool) -> list[np.ndarray]:
    """Each page as a boolean array (True = black) at the fax resolution; ``fit`` scales pages
    into a fax page as send_fax does, otherwise the PDF's own page size is kept."""
    out = pdf.with_suffix("")
    geometry = [f"-g{PAGE_DOTS[0]}x{PAGE_DOTS[1]}", "-dFIXEDMEDIA", "-dPDFFitPage"] if fit else []
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=pgmraw",
            f"-r{RESOLUTION[0]}x{RESOLUTION[1]}",
            *geometry,
            f"-sOutputFile={out}-%d.pgm",
            str(pdf),
        ],
        check=True,
    )
    pages = []
    for path in sorted(
        out.parent.glob(f"{out.name}-*.pgm"), key=lambda p: int(p.stem.rsplit("-")[-1])
    ):
        pages.append(_pgm(path.read_bytes()) < 128)
    return pages


def _pgm(data: bytes) -> np.ndarray:
    fields = re.match(rb"P5\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s", data)
    assert fields is not None, "not a binary PGM"
    width, height = int(fields[1]), int(fields[2])
    pixels = np.frombuffer(data, np.uint8, width * height, fields.end())
    return pixels.reshape(height, width)


def agreement(received: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """(share of pixels that agree, intersection over union of the black ones), the received
    page's header lines (at its top) left out. The second one fails a blank page, which the
    first one, on mostly white paper, would not."""
    assert received.shape[1] == source.shape[1], (received.shape, source.shape)
    header = received.shape[0] - source.shape[0]
    assert 0 <= header <= 64, received.shape
    body = received[header:]
    union = int((body | source).sum())
    return float((body == source).mean()), int((body & source).sum()) / max(union, 1)
