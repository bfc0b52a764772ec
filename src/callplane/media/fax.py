"""A sans-IO audio fax terminal: 20 ms frames of the far end in, 20 ms frames to send out.

One :class:`FaxTerminal` is one T.30 endpoint (spandsp's ``fax_state_t``) sending a TIFF-F file or
receiving into one. The caller owns the clock: one :meth:`FaxTerminal.process` per tick, which
feeds the inbound frame to the modems and returns the next outbound frame. Pages completed and
the final result are read from :meth:`FaxTerminal.poll`, so nothing is called back into the
caller from inside the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import subprocess
from dataclasses import dataclass
from typing import Literal

import numpy as np

from callplane.media import spandsp
from callplane.media.sources import FRAME_SAMPLES, Frame

Direction = Literal["send", "receive"]

# Ticks (20 ms) without a T.30 negotiation before the terminal gives up as T1 expired (T.30's
# 35 s to identify the far end: the call is already answered when a fax starts). spandsp's own
# timer is T0 (60 s) and only on the calling side; an answering terminal that hears continuous
# sound (a person talking) would wait for silence forever.
NEGOTIATION_TICKS = 35 * 50


@dataclass(frozen=True, slots=True)
class FaxPage:
    number: int


@dataclass(frozen=True, slots=True)
class FaxResult:
    code: int  # T30_ERR_*: 0 = success
    text: str
    pages: int
    remote_identity: str
    bit_rate: int
    ecm: bool

    @property
    def success(self) -> bool:
        return self.code == spandsp.ERR_OK


FaxEvent = FaxPage | FaxResult


class FaxTerminal:
    """One T.30 terminal. ``direction="send"`` transmits ``path`` (a TIFF-F file) and is the
    calling party (it sends CNG); ``"receive"`` writes what it gets to ``path`` and answers
    (CED). Raises :class:`spandsp.SpandspUnavailable` when the library is missing."""

    def __init__(
        self,
        direction: Direction,
        path: str,
        *,
        identity: str = "",
        header_info: str | None = None,
        ecm: bool = True,
        calling: bool | None = None,
    ) -> None:
        lib = spandsp.lib()
        self.direction: Direction = direction
        self._lib = lib
        calling_party = direction == "send" if calling is None else calling
        state = lib.fax_init(None, 1 if calling_party else 0)
        if not state:
            raise RuntimeError("fax_init failed")
        self._state: int | None = state
        t30 = lib.fax_get_t30_state(state)
        self._t30 = t30
        lib.fax_set_transmit_on_idle(state, 1)
        lib.fax_set_tep_mode(state, 1)
        lib.t30_set_supported_modems(
            t30, spandsp.SUPPORT_V17 | spandsp.SUPPORT_V29 | spandsp.SUPPORT_V27TER
        )
        lib.t30_set_ecm_capability(t30, 1 if ecm else 0)
        # T.30 idents are at most 20 printable characters.
        lib.t30_set_tx_ident(t30, _ascii(identity)[:20])
        if header_info:
            lib.t30_set_tx_page_header_info(t30, _ascii(header_info)[:50])
        if direction == "send":
            lib.t30_set_tx_file(t30, path.encode(), -1, -1)
        else:
            lib.t30_set_rx_file(t30, path.encode(), -1)
        self._events: list[FaxEvent] = []
        self._pages = 0
        self.result: FaxResult | None = None
        # The library calls these from inside fax_rx / fax_tx, on this thread: they only record.
        self._negotiated = False
        self._ticks = 0
        self._on_negotiated = spandsp.PhaseBHandler(self._phase_b)
        lib.t30_set_phase_b_handler(t30, self._on_negotiated, None)
        self._on_page = spandsp.PhaseDHandler(self._phase_d)
        self._on_done = spandsp.PhaseEHandler(self._phase_e)
        lib.t30_set_phase_d_handler(t30, self._on_page, None)
        lib.t30_set_phase_e_handler(t30, self._on_done, None)
        self._out: Frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._in: Frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    # -- the tick --------------------------------------------------------------------------

    def process(self, inbound: Frame) -> Frame:
        """Feed one inbound frame, return the outbound frame (silence once finished). The
        returned array is reused by the next call."""
        state = self._state
        out = self._out
        if state is None or self.result is not None:
            out.fill(0)
            return out
        np.copyto(self._in, inbound)
        lib = self._lib
        lib.fax_rx(state, self._in.ctypes.data, FRAME_SAMPLES)
        n = lib.fax_tx(state, out.ctypes.data, FRAME_SAMPLES)
        if n < FRAME_SAMPLES:
            out[max(n, 0) :] = 0
        self._ticks += 1
        if not self._negotiated and self._ticks >= NEGOTIATION_TICKS and self.result is None:
            self._finish(spandsp.ERR_T1_EXPIRED)
            lib.t30_terminate(self._t30)
        return out

    def poll(self) -> list[FaxEvent]:
        """Pages completed and the final result since the last poll."""
        events, self._events = self._events, []
        return events

    @property
    def pages(self) -> int:
        return self._pages

    @property
    def finished(self) -> bool:
        return self.result is not None

    def stop(self) -> FaxResult:
        """End the exchange now (the far end is left waiting); the result says the call dropped
        unless it had already finished."""
        if self.result is None and self._state is not None:
            self._lib.t30_terminate(self._t30)
        if self.result is None:
            self._finish(spandsp.ERR_CALLDROPPED)
        assert self.result is not None
        return self.result

    def close(self) -> None:
        """Free the library state (and close the files it holds)."""
        if self._state is not None:
            if self.result is None:
                self.stop()
            self._lib.fax_free(self._state)
            self._state = None

    def __del__(self) -> None:
        # At interpreter shutdown the library may be gone already.
        with contextlib.suppress(Exception):
            self.close()

    # -- library callbacks -----------------------------------------------------------------

    def _stats(self) -> spandsp.T30Stats:
        stats = spandsp.T30Stats()
        self._lib.t30_get_transfer_statistics(self._t30, ctypes.byref(stats))
        return stats

    def _phase_b(self, _t30: int | None, _user: int | None, _result: int) -> int:
        self._negotiated = True
        return 0

    def _phase_d(self, _t30: int | None, _user: int | None, _result: int) -> int:
        stats = self._stats()
        pages = stats.pages_tx if self.direction == "send" else stats.pages_rx
        while self._pages < pages:
            self._pages += 1
            self._events.append(FaxPage(self._pages))
        return 0

    def _phase_e(self, _t30: int | None, _user: int | None, code: int) -> None:
        if self.result is None:
            self._finish(code)

    def _finish(self, code: int) -> None:
        stats = self._stats()
        pages = stats.pages_tx if self.direction == "send" else stats.pages_rx
        while self._pages < pages:
            self._pages += 1
            self._events.append(FaxPage(self._pages))
        remote = self._lib.t30_get_rx_ident(self._t30)
        self.result = FaxResult(
            code=code,
            text=spandsp.completion_text(code),
            pages=self._pages,
            remote_identity=(remote or b"").decode("ascii", "replace").strip(),
            bit_rate=stats.bit_rate,
            ecm=bool(stats.error_correcting_mode),
        )
        self._events.append(self.result)


def _ascii(text: str) -> bytes:
    return text.encode("ascii", "replace")


# -- documents -------------------------------------------------------------------------------------
# Blocking (subprocesses): callers run them in a thread.

# A fax page at fine resolution: 1728 dots across (the 215 mm scan line of T.4 at 204 dpi) by
# A4's 297 mm at 196 lines per inch. Ghostscript fits each PDF page into it.
PAGE_DOTS = (1728, 2292)
RESOLUTION = (204, 196)


class DocumentError(Exception):
    """A document that cannot be converted (not a PDF, a converter missing)."""


def pdf_to_tiff(pdf: str, tiff: str, *, timeout: float = 60.0) -> None:
    """A PDF as a multi-page TIFF-F (T.4 1-D, 204x196 dpi, A4 pages), with Ghostscript."""
    _run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=tiffg3",
            f"-r{RESOLUTION[0]}x{RESOLUTION[1]}",
            f"-g{PAGE_DOTS[0]}x{PAGE_DOTS[1]}",
            "-dFIXEDMEDIA",
            "-dPDFFitPage",
            f"-sOutputFile={tiff}",
            pdf,
        ],
        timeout,
    )


def tiff_to_pdf(tiff: str, pdf: str, *, timeout: float = 60.0) -> None:
    """Received pages as a PDF, with libtiff's tiff2pdf (the G3/G4 data is kept, not redrawn)."""
    _run(["tiff2pdf", "-o", pdf, tiff], timeout)


def _run(argv: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise DocumentError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise DocumentError(f"{argv[0]} took longer than {timeout:.0f} s") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        raise DocumentError(f"{argv[0]} failed: {detail[-1] if detail else done.returncode}")
