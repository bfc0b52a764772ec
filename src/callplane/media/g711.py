"""G.711 µ-law (PCMU) and A-law (PCMA), vectorised with lookup tables.

The tables are computed once at import from the segment/quantisation rules of ITU-T G.711 (the
same rules as the classic Sun reference implementation that Python's ``audioop`` uses), for all
65536 int16 inputs and all 256 codes. Encoding is then one fancy-index: ``LUT[samples.view(u16)]``,
which works on any shape, so the media clock encodes every session's frame in one call.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]


def _segment(values: npt.NDArray[np.int64], ends: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Index of the first segment end >= value (8 when above every end)."""
    return np.searchsorted(np.asarray(ends, dtype=np.int64), values, side="left").astype(np.int64)


def _build_ulaw_encode() -> UInt8Array:
    # Index i of the table is the uint16 bit pattern of an int16 sample.
    lin = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16).astype(np.int64)
    val = lin >> 2  # G.711 µ-law works on 14-bit magnitudes
    mask = np.where(val < 0, 0x7F, 0xFF)
    val = np.minimum(np.abs(val), 8159) + 33  # clip, then add the bias (0x84 >> 2)
    seg = _segment(val, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = (seg << 4) | ((val >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code) ^ mask
    return code.astype(np.uint8)


def _build_ulaw_decode() -> Int16Array:
    u = ~np.arange(256, dtype=np.int64) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_encode() -> UInt8Array:
    lin = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16).astype(np.int64)
    val = lin >> 3  # A-law works on 13-bit values
    mask = np.where(val >= 0, 0xD5, 0x55)
    val = np.where(val >= 0, val, -val - 1)
    seg = _segment(val, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((val >> shift) & 0x0F)
    out: UInt8Array = (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)
    return out


def _build_alaw_decode() -> Int16Array:
    a = np.arange(256, dtype=np.int64) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW_ENCODE: UInt8Array = _build_ulaw_encode()
ULAW_DECODE: Int16Array = _build_ulaw_decode()
ALAW_ENCODE: UInt8Array = _build_alaw_encode()
ALAW_DECODE: Int16Array = _build_alaw_decode()

#: µ-law table followed by the A-law table: index ``sample_u16 + 65536 * is_alaw`` encodes a mix
#: of PCMU and PCMA sessions in one gather.
COMBINED_ENCODE: UInt8Array = np.concatenate([ULAW_ENCODE, ALAW_ENCODE])
#: Same idea for decoding: ``code + 256 * is_alaw``.
COMBINED_DECODE: Int16Array = np.concatenate([ULAW_DECODE, ALAW_DECODE])

#: The code of digital silence (sample 0) in each law.
ULAW_SILENCE = int(ULAW_ENCODE[0])
ALAW_SILENCE = int(ALAW_ENCODE[0])


def _as_u16(samples: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, got {arr.dtype}")
    return arr.view(np.uint16)


def ulaw_encode(samples: npt.ArrayLike) -> UInt8Array:
    """int16 samples (any shape) -> µ-law codes of the same shape."""
    return ULAW_ENCODE[_as_u16(samples)]


def alaw_encode(samples: npt.ArrayLike) -> UInt8Array:
    """int16 samples (any shape) -> A-law codes of the same shape."""
    return ALAW_ENCODE[_as_u16(samples)]


def _as_codes(data: bytes | bytearray | memoryview | npt.ArrayLike) -> UInt8Array:
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def ulaw_decode(data: bytes | bytearray | memoryview | npt.ArrayLike) -> Int16Array:
    """µ-law codes (bytes or uint8 array) -> int16 samples."""
    return ULAW_DECODE[_as_codes(data)]


def alaw_decode(data: bytes | bytearray | memoryview | npt.ArrayLike) -> Int16Array:
    """A-law codes (bytes or uint8 array) -> int16 samples."""
    return ALAW_DECODE[_as_codes(data)]


def encode(samples: npt.ArrayLike, payload_type: int) -> UInt8Array:
    """Encode for RTP payload type 0 (PCMU) or 8 (PCMA)."""
    if payload_type == 0:
        return ulaw_encode(samples)
    if payload_type == 8:
        return alaw_encode(samples)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def decode(data: bytes | bytearray | memoryview | npt.ArrayLike, payload_type: int) -> Int16Array:
    """Decode RTP payload type 0 (PCMU) or 8 (PCMA)."""
    if payload_type == 0:
        return ulaw_decode(data)
    if payload_type == 8:
        return alaw_decode(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")
