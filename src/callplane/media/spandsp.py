"""ctypes signatures over Debian's ``libspandsp2`` (0.0.6): the audio fax terminal (T.30 over
V.17 / V.29 / V.27ter, ECM). No Python binding exists, and the library is all we need of it:
``fax_init`` allocates the state when given NULL, so no struct layout but ``t30_stats_t`` (from
``spandsp/t30.h``) is mirrored here. Only the runtime library is needed, not the -dev headers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

# spandsp/t30.h enums (T30_SUPPORT_*), as 0.0.6 defines them.
SUPPORT_V27TER = 0x01
SUPPORT_V29 = 0x02
SUPPORT_V17 = 0x04
# T30_ERR_* values used by callers.
ERR_OK = 0
ERR_T0_EXPIRED = 2
ERR_T1_EXPIRED = 3
ERR_RETRYDCN = 48
ERR_CALLDROPPED = 49


class T30Stats(ctypes.Structure):
    """``t30_stats_t`` of spandsp 0.0.6 (fifteen ints)."""

    _fields_ = [
        ("bit_rate", ctypes.c_int),
        ("error_correcting_mode", ctypes.c_int),
        ("pages_tx", ctypes.c_int),
        ("pages_rx", ctypes.c_int),
        ("pages_in_file", ctypes.c_int),
        ("x_resolution", ctypes.c_int),
        ("y_resolution", ctypes.c_int),
        ("width", ctypes.c_int),
        ("length", ctypes.c_int),
        ("image_size", ctypes.c_int),
        ("encoding", ctypes.c_int),
        ("bad_rows", ctypes.c_int),
        ("longest_bad_row_run", ctypes.c_int),
        ("error_correcting_mode_retries", ctypes.c_int),
        ("current_status", ctypes.c_int),
    ]


# void (*)(t30_state_t *s, void *user_data, int completion_code)
PhaseEHandler = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
# int (*)(t30_state_t *s, void *user_data, int result), for phases B and D
PhaseBHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
PhaseDHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)

_P = ctypes.c_void_p
_I = ctypes.c_int
_S = ctypes.c_char_p

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "fax_init": (_P, [_P, _I]),
    "fax_free": (_I, [_P]),
    "fax_rx": (_I, [_P, _P, _I]),
    "fax_tx": (_I, [_P, _P, _I]),
    "fax_set_transmit_on_idle": (None, [_P, _I]),
    "fax_set_tep_mode": (None, [_P, _I]),
    "fax_get_t30_state": (_P, [_P]),
    "t30_set_tx_file": (None, [_P, _S, _I, _I]),
    "t30_set_rx_file": (None, [_P, _S, _I]),
    "t30_set_tx_ident": (_I, [_P, _S]),
    "t30_get_rx_ident": (_S, [_P]),
    "t30_set_tx_page_header_info": (_I, [_P, _S]),
    "t30_set_ecm_capability": (_I, [_P, _I]),
    "t30_set_supported_modems": (_I, [_P, _I]),
    "t30_set_phase_b_handler": (None, [_P, PhaseBHandler, _P]),
    "t30_set_phase_d_handler": (None, [_P, PhaseDHandler, _P]),
    "t30_set_phase_e_handler": (None, [_P, PhaseEHandler, _P]),
    "t30_terminate": (None, [_P]),
    "t30_get_transfer_statistics": (None, [_P, ctypes.POINTER(T30Stats)]),
    "t30_completion_code_to_str": (_S, [_I]),
}


class SpandspUnavailable(RuntimeError):
    """libspandsp2 is not installed (fax answers 501)."""


@cache
def lib() -> ctypes.CDLL:
    """The loaded library with typed signatures; raises SpandspUnavailable when absent."""
    name = ctypes.util.find_library("spandsp") or "libspandsp.so.2"
    try:
        cdll = ctypes.CDLL(name)
    except OSError as exc:
        raise SpandspUnavailable(f"libspandsp2 is not installed: {exc}") from exc
    for fn, (restype, argtypes) in _SIGNATURES.items():
        f = getattr(cdll, fn)
        f.restype = restype
        f.argtypes = argtypes
    return cdll


def available() -> bool:
    try:
        lib()
    except SpandspUnavailable:
        return False
    return True


def completion_text(code: int) -> str:
    text = lib().t30_completion_code_to_str(code)
    return text.decode("ascii", "replace") if text else f"T.30 error {code}"
