"""G.711 tables against Python 3.11's stdlib audioop for every input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from callplane.media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_audioop_for_all_65536_inputs() -> None:
    expected = np.frombuffer(audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2), dtype=np.uint8)
    assert np.array_equal(g711.ulaw_encode(ALL_SAMPLES), expected)


def test_alaw_encode_matches_audioop_for_all_65536_inputs() -> None:
    expected = np.frombuffer(audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2), dtype=np.uint8)
    assert np.array_equal(g711.alaw_encode(ALL_SAMPLES), expected)


def test_ulaw_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(g711.ulaw_decode(ALL_CODES), expected)


def test_alaw_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(g711.alaw_decode(ALL_CODES), expected)


def test_encode_keeps_shape_for_stacked_frames() -> None:
    frames = np.random.default_rng(1).integers(-32768, 32767, (7, 160)).astype(np.int16)
    codes = g711.encode(frames, 0)
    assert codes.shape == (7, 160) and codes.dtype == np.uint8
    assert np.array_equal(codes[3], g711.ulaw_encode(frames[3]))


def test_combined_table_encodes_mixed_laws_in_one_gather() -> None:
    frames = np.random.default_rng(2).integers(-32768, 32767, (4, 160)).astype(np.int16)
    offsets = np.array([[0], [65536], [0], [65536]])
    codes = g711.COMBINED_ENCODE[frames.view(np.uint16) + offsets]
    assert np.array_equal(codes[0], g711.ulaw_encode(frames[0]))
    assert np.array_equal(codes[1], g711.alaw_encode(frames[1]))


def test_round_trip_error_is_small() -> None:
    x = (np.sin(np.arange(8000) * 2 * np.pi * 1000 / 8000) * 10000).astype(np.int16)
    for pt in (0, 8):
        y = g711.decode(g711.encode(x, pt), pt)
        snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((x - y.astype(float)) ** 2))
        assert snr > 30  # G.711 gives ~38 dB on a loud sine


def test_silence_codes() -> None:
    assert g711.ULAW_SILENCE == 0xFF
    assert g711.ALAW_SILENCE == 0xD5


def test_rejects_non_int16_and_unknown_payload_type() -> None:
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError):
        g711.encode(np.zeros(10, dtype=np.int16), 18)
    with pytest.raises(ValueError):
        g711.decode(b"\x00", 9)
