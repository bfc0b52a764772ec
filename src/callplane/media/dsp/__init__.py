"""Sans-IO signal detectors for 8 kHz mono int16 audio fed in 160-sample (20 ms) frames.

Every detector is a plain object: ``feed(frame, t)`` takes one frame and the time (seconds, any
monotonic clock chosen by the caller) of its first sample, and returns the events that frame
completed. No detector reads a clock, sleeps or does I/O, so they are driven identically by the
media clock, by tests and by offline tools.

* :mod:`.dtmf`  in-band DTMF receiver (ITU-T Q.24 limits) and generator (Q.23 frequencies)
* :mod:`.tones` fax CNG / CED (ANSam) and answering-machine beep detectors
* :mod:`.vad`   voice activity (webrtcvad + energy floor + hangover)
* :mod:`.amd`   answering-machine detection (reference §5.4, SWML ``detect_machine``)
"""

from __future__ import annotations

from callplane.media.dsp.amd import AmdDetector, AmdEvent
from callplane.media.dsp.dtmf import (
    DtmfBatchDetector,
    DtmfDetector,
    DtmfKeyDown,
    DtmfKeyUp,
    dtmf_digits,
    dtmf_tone,
)
from callplane.media.dsp.tones import (
    BeepDetector,
    CedDetector,
    CngDetector,
    FaxToneDetector,
    ToneDetected,
    ToneEnded,
)
from callplane.media.dsp.vad import SpeechEnd, SpeechStart, Vad

__all__ = [
    "AmdDetector",
    "AmdEvent",
    "BeepDetector",
    "CedDetector",
    "CngDetector",
    "DtmfBatchDetector",
    "DtmfDetector",
    "DtmfKeyDown",
    "DtmfKeyUp",
    "FaxToneDetector",
    "SpeechEnd",
    "SpeechStart",
    "ToneDetected",
    "ToneEnded",
    "Vad",
    "dtmf_digits",
    "dtmf_tone",
]
