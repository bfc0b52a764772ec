"""Typed shapes of the nested command parameters (reference §4-§5).

Where the client docs use a flat shortcut (``{"type": "tts", "text": "Hi"}`` instead of
``{"type": "tts", "params": {"text": "Hi"}}``), the TypedDict admits both: the server accepts
both, and the client sends whichever was written.
"""

from __future__ import annotations

from typing import Literal, Required, TypedDict

Direction = Literal["listen", "speak", "both"]
Gender = Literal["male", "female"]
CallerSide = Literal["local-caller", "remote-caller"]
SpeechEngine = Literal["deepgram", "google"]
EndReason = Literal["hangup", "cancel", "busy", "noAnswer", "decline", "error"]
StatusEvent = Literal["created", "ringing", "answered", "ended"]
HttpMethod = Literal["GET", "POST"]
AiRole = Literal["system", "user", "assistant"]
StreamTrack = Literal["inbound_track", "outbound_track", "both_tracks"]


class PlayItemParams(TypedDict, total=False):
    """Payload of a play item: ``audio``: url; ``tts``: text, language, gender, voice;
    ``silence``: duration; ``ringtone``: name, duration (seconds)."""

    url: str
    text: str
    language: str
    gender: Gender
    voice: str
    duration: float
    name: str


class PlayItem(PlayItemParams, total=False):
    """One item of ``play(play=[...])``: ``{"type": "tts", "params": {"text": "Hello!"}}``.

    The flat form ``{"type": "tts", "text": "Hello!"}`` is accepted as well.
    """

    type: Required[Literal["audio", "tts", "silence", "ringtone"]]
    params: PlayItemParams


class RecordAudio(TypedDict, total=False):
    """Audio recording settings. Server defaults: mp3, mono, direction speak,
    initial_timeout 4.0 s, end_silence_timeout 0.5 s, max_length 0 (unlimited),
    terminators ``#``, input_sensitivity 44."""

    beep: bool
    format: Literal["mp3", "wav", "mp4"]
    stereo: bool
    direction: Direction
    initial_timeout: float
    end_silence_timeout: float
    max_length: int
    terminators: str
    input_sensitivity: float


class RecordConfig(TypedDict, total=False):
    """``record(record={"audio": {...}})``; only ``audio`` exists."""

    audio: RecordAudio


class CollectDigits(TypedDict, total=False):
    """DTMF collection: ``max`` digits, optional ``terminators`` (``""`` disables) and
    inter-digit ``digit_timeout`` in seconds."""

    max: Required[int]
    terminators: str
    digit_timeout: float


class CollectSpeech(TypedDict, total=False):
    """Speech collection. ``language`` is BCP-47 or ``engine:tag`` (``Deepgram:en-US``)."""

    end_silence_timeout: float
    speech_timeout: float
    language: str
    hints: list[str]
    model: str
    engine: Literal["Google", "Google.V2", "Deepgram"]


class DetectParams(TypedDict, total=False):
    """Detector settings. ``machine``: the timeouts/thresholds and ``detect_*`` flags;
    ``fax``: ``tone``; ``digit``: ``digits`` to match (``""`` = any)."""

    initial_timeout: float
    end_silence_timeout: float
    machine_ready_timeout: float
    machine_voice_threshold: float
    machine_words_threshold: int
    detect_interruptions: bool
    detect_message_end: bool
    tone: Literal["CNG", "CED", "cng", "ced"]
    digits: str


class DetectConfig(TypedDict, total=False):
    """``{"type": "machine" | "fax" | "digit", "params": {...}}``."""

    type: Required[Literal["machine", "fax", "digit"]]
    params: DetectParams


class TapParams(TypedDict, total=False):
    direction: Direction


class TapConfig(TapParams, total=False):
    """``{"type": "audio", "params": {"direction": "both"}}`` (flat ``direction`` accepted)."""

    type: Required[Literal["audio"]]
    params: TapParams


class TapDeviceParams(TypedDict, total=False):
    """``rtp``: addr, port, codec, ptime; ``ws``: uri, codec."""

    addr: str
    port: int
    codec: str
    ptime: int
    uri: str


class TapDevice(TapDeviceParams, total=False):
    """``{"type": "rtp", "params": {"addr": "203.0.113.5", "port": 1234}}`` or
    ``{"type": "ws", "params": {"uri": "wss://…"}}`` (flat params accepted)."""

    type: Required[Literal["rtp", "ws"]]
    params: TapDeviceParams


# "from" is a keyword, hence the functional form.
ReferDeviceParams = TypedDict(
    "ReferDeviceParams",
    {"to": str, "from": str, "username": str, "password": str},
    total=False,
)


class ReferDevice(ReferDeviceParams, total=False):
    """``{"type": "sip", "params": {"to": "sip:…", "from"?, "username"?, "password"?}}``;
    the short form ``{"to": "sip:…"}`` is accepted as well."""

    type: Literal["sip"]
    params: ReferDeviceParams


class AiReset(TypedDict, total=False):
    full_reset: bool
    user_prompt: str
    system_prompt: str


class Summarize(TypedDict, total=False):
    webhook: str
    prompt: str


class LiveTranscribeStart(TypedDict, total=False):
    lang: Required[str]
    direction: Required[list[CallerSide]]
    webhook: str
    live_events: bool
    ai_summary: bool
    ai_summary_prompt: str
    speech_engine: SpeechEngine
    speech_timeout: int
    vad_silence_ms: int
    vad_thresh: int
    debug_level: int


class LiveTranscribeAction(TypedDict, total=False):
    """Exactly one of ``start`` / ``summarize`` (or pass the string ``"stop"``)."""

    start: LiveTranscribeStart
    summarize: Summarize


class LiveTranslateStart(TypedDict, total=False):
    from_lang: Required[str]
    to_lang: Required[str]
    direction: Required[list[CallerSide]]
    from_voice: str
    to_voice: str
    filter_from: str
    filter_to: str
    webhook: str
    live_events: bool
    ai_summary: bool
    ai_summary_prompt: str
    speech_engine: SpeechEngine
    speech_timeout: int
    vad_silence_ms: int
    vad_thresh: int
    debug_level: int


class TranslateInject(TypedDict):
    message: str
    direction: CallerSide


class LiveTranslateAction(TypedDict, total=False):
    """Exactly one of ``start`` / ``summarize`` / ``inject`` (or pass the string ``"stop"``)."""

    start: LiveTranslateStart
    summarize: Summarize
    inject: TranslateInject


class SidecarPermissions(TypedDict, total=False):
    swaig_allow_swml: bool
    swaig_allow_settings: bool
    swaig_set_global_data: bool


class SidecarParams(TypedDict, total=False):
    idle_timeout_ms: int
    min_interval_ms: int
    max_iters_per_tick: int
    max_history_tokens: int
    act_on_channel: bool
    final_summary: bool
    ai_summary: bool
    ai_summary_prompt: str
    summary_model: str
    live_events: bool
    verbose_utterances: bool
    speech_engine: SpeechEngine
    speech_timeout: int
    vad_silence_ms: int
    vad_thresh: int
    debug_level: int
    debug: bool
    transcribe_prompt: str


class SidecarAction(TypedDict, total=False):
    summarize: Summarize
