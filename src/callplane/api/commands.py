"""The 42 Calling API commands: envelope rules, per-command params schemas, normalisation.

Input is what any client may send (reference §4-§5 nested shapes *and* the flat shapes of the
client documentation); output is the canonical params the engine contract describes
(docs/architecture.md, "api -> engine").  Defaults are never filled in here — the engine owns
them (REST and SWML defaults differ) — with these deliberate exceptions, all shape-level:

* ``live_transcribe`` / ``live_translate`` flat form (``action="start", lang=...``): ``direction``
  is required by the spec but every client-doc example omits it, so when the *flat* form omits it
  we send ``["remote-caller", "local-caller"]`` (both legs, the SWML default).
* ``tap.type`` is inferred as ``"audio"`` (its only legal value) and ``device.type`` from its keys
  (``addr``/``port`` -> ``rtp``, ``uri`` -> ``ws``), and a refer ``device`` without ``type`` is
  ``"sip"`` — flat SDK-example shapes carry no ``type``.

Leniencies beyond the spec (documented in the module-level table ``LENIENCIES``) never change the
meaning of a request that the spec already accepts.

Canonical shapes the engine can rely on (anything the spec already nests arrives unchanged):

    calling.play        play: [{"type": "audio"|"tts"|"silence"|"ringtone", "params": {...}}]
    calling.record      record: {"audio": {...}}                      (never params.audio)
    calling.detect      detect: {"type": ..., "params"?: {...}}
    calling.tap         tap: {"type": "audio", "params": {"direction"}},
                        device: {"type": "rtp"|"ws", "params": {...}}
    calling.refer       device: {"type": "sip", "params": {"to", ...}}
    live_transcribe     action: "stop" | {"start": {"lang", "direction": [...], ...}}
                                       | {"summarize": {...}}
    live_translate      action: "stop" | {"start": {"from_lang", "to_lang", "direction", ...}}
                                       | {"summarize": {...}} | {"inject": {"message", "direction"}}
    calling.ai_hold     timeout: "<digits>"                           (always a string)
    calling.transfer    dest: str | SWML object
    dial / update       swml: SWML object; dial.to_script: http(s) URL string | SWML object;
                        codecs: ["PCMU", ...] (canonical spelling); url_method: "GET"|"POST";
                        "from" (never "from_"); update: params["id"] is the lowercase call id
    all commands        top-level call id: lowercase uuid; nulls for optional keys removed
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from callplane.api.schema import (
    INVALID,
    Ctx,
    Obj,
    Problem,
    Validator,
    array,
    boolean,
    enum,
    integer,
    is_blank,
    is_number,
    join,
    json_object,
    number,
    obj,
    public_ipv4,
    string,
    swml_document,
    tagged,
    url,
    uuid_like,
)
from callplane.netpolicy import TargetPolicy

LENIENCIES: Final = (
    "control_id is optional on start commands (play, record, collect, detect, tap, stream, "
    "transcribe); the engine generates one (reference §9 #2: the SDK makes it optional)",
    "flat play items {type, text|url|duration|name} -> {type, params}",
    "record(audio=...) -> record.audio",
    "flat live_transcribe/live_translate actions; 'language' -> 'lang', 'source'/'target' -> "
    "'from_lang'/'to_lang'; bare 'summarize' -> {summarize: {}}",
    "ai_hold.timeout as an integer -> numeric string",
    "refer/tap/detect flat devices -> nested params",
    "codecs as CSV string -> list; codec/url_method/ringtone/speech_engine in any letter case",
    "update: status-only (no url/swml); a top-level id is moved into params.id",
    "swml / to_script given as a JSON or YAML string -> object",
    "transfer.dest given as a device object {type: phone|sip, params: {to_number|to}} -> string",
    "dial: from_ -> from",
    "null for an optional parameter = absent; integral floats accepted for integers",
    "unknown keys pass through unchanged",
)

# --------------------------------------------------------------------------- vocabularies

PLAY_DIRECTIONS: Final = ("listen", "speak", "both")
GENDERS: Final = ("male", "female")
LEGS: Final = ("remote-caller", "local-caller")
# fmt: off
RINGTONES: Final = (
    "at", "au", "be", "bg", "br", "ca", "ch", "cl", "cn", "cy", "cz", "de", "dk", "dz", "ee",
    "eg", "es", "fi", "fr", "gr", "hu", "il", "in", "it", "jp", "ko", "lt", "mx", "my", "nl",
    "no", "nz", "ph", "pk", "pl", "pt", "ro", "rs", "ru", "sa", "se", "sg", "th", "tr", "tw",
    "uk", "us", "ve", "za", "bong",
)
# fmt: on
OUTBOUND_CODECS: Final = (
    "OPUS",
    "OPUS@48000H@20I",
    "OPUS@24000H@20I",
    "OPUS@16000H@20I",
    "OPUS@8000H@20I",
    "G722",
    "PCMU",
    "PCMA",
    "G729",
    "VP8",
    "H264",
)
TAP_CODECS: Final = ("PCMA", "PCMU", "pcma", "pcmu", "OPUS", "opus")
TRANSLATION_FILTERS: Final = ("polite", "rude", "professional", "shakespeare", "gen-z")
RESERVED_VARIABLE_PREFIXES: Final = ("signalwire_", "sw_", "rtc_", "internal_")

DTMF_SET: Final = re.compile(r"[0-9A-Da-d*#]*")
SEND_DIGITS: Final = re.compile(r"[0-9A-Da-d*#w,]+")
# Spec: letters, digits, '.' and '-'. We also allow '_' and ':' which real provider voice names
# use (e.g. "amazon.Joanna:neural"); the TTS provider rejects names it does not know.
VOICE_NAME: Final = re.compile(r"[A-Za-z0-9._:\-]+")
VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SIP_URI: Final = re.compile(r"(?is)sip:.+")
# The host of a sip:/sips: URI: after the userinfo, before the port, params or headers.
SIP_HOST: Final = re.compile(r"(?is)(sips?):(?:[^@;?]*@)?(\[[^\]]*\]|[^:;?>]*)(?::(\d{1,5}))?")
FILTER_PROMPT: Final = re.compile(r"(?s)prompt:.+")
HOLD_SECONDS: Final = re.compile(r"\s*\d+\s*")

# --------------------------------------------------------------------------- shared validators

CONTROL_ID: Final = string(nonblank=True)
HTTP_URL: Final = url()
TEXT: Final = string()
FLAG: Final = boolean()
TERMINATORS: Final = string(pattern=DTMF_SET, rule="may only contain the digits 0-9, A-D, * and #")
VOICE: Final = string(
    pattern=VOICE_NAME, rule="may only contain letters, digits, '.', '-', '_' and ':'"
)
STRINGS: Final = array(string(), strings=True)


CONTROL_ONLY: Final = obj({"control_id": CONTROL_ID}, required=["control_id"])
EMPTY: Final = obj()


def legs(*, both_required: bool = False) -> Validator:
    """``direction`` as a list of call legs; a single string is accepted and wrapped."""
    as_list = array(enum(LEGS), min_items=1, strings=True, unique=True)

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        out = as_list([value] if isinstance(value, str) else value, path, ctx)
        if out is not INVALID and both_required and len(out) < 2:
            return ctx.fail(
                "invalid_parameter", path, "must include both remote-caller and local-caller"
            )
        return out

    return check


def codecs(value: Any, path: str, ctx: Ctx) -> Any:
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        return ctx.fail(
            "invalid_codecs_format", path, "must be an array of codec names or a CSV string"
        )
    if not names or any(not n for n in names):
        return ctx.fail(
            "invalid_codecs_format", path, "must list at least one codec, without empty entries"
        )
    check = enum(OUTBOUND_CODECS, fold_case=True)
    out = [check(n, join(path, i), ctx) for i, n in enumerate(names)]
    return INVALID if INVALID in out else out


def custom_variables(value: Any, path: str, ctx: Ctx) -> Any:
    if not isinstance(value, dict):
        return ctx.fail("must_be_object", path, "must be an object of string values")
    if len(value) > 20:
        return ctx.fail("too_many_custom_variables", path, "may hold at most 20 variables")
    failed = False
    for key, item in value.items():
        where = join(path, key)
        if not VARIABLE_NAME.fullmatch(key):
            ctx.fail(
                "invalid_custom_variable_name",
                where,
                "must start with a letter or underscore and contain only letters, digits, _",
            )
            failed = True
        elif key.lower().startswith(RESERVED_VARIABLE_PREFIXES):
            ctx.fail(
                "reserved_custom_variable_name",
                where,
                "must not start with signalwire_, sw_, rtc_ or internal_",
            )
            failed = True
        if not isinstance(item, str) or not item:
            ctx.fail("invalid_custom_variable_value", where, "must be a non-empty string")
            failed = True
        elif len(item.encode("utf-8")) > 1024:
            ctx.fail("custom_variable_value_too_long", where, "must be at most 1024 bytes")
            failed = True
    return INVALID if failed else dict(value)


def to_script(value: Any, path: str, ctx: Ctx) -> Any:
    """A URL returning SWML stays a string; inline SWML (object, JSON or YAML) becomes an object."""
    if isinstance(value, str) and re.match(r"(?i)\s*https?://", value):
        return HTTP_URL(value, path, ctx)
    return swml_document()(value, path, ctx)


def region(value: Any, path: str, ctx: Ctx) -> Any:
    if isinstance(value, list):
        return array(string(nonblank=True), min_items=1, strings=True)(value, path, ctx)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return ctx.fail("invalid_parameter", path, "must be a region name or an array of them")


def hold_timeout(value: Any, path: str, ctx: Ctx) -> Any:
    """Spec: a numeric *string* of seconds; the SDK types it ``int`` -> we emit the string."""
    if is_number(value) and float(value).is_integer() and value >= 0:
        return str(int(value))
    if isinstance(value, str) and HOLD_SECONDS.fullmatch(value):
        return value.strip()
    return ctx.fail("invalid_parameter", path, 'must be a whole number of seconds, e.g. "300"')


def ptime(value: Any, path: str, ctx: Ctx) -> Any:
    if is_number(value) and float(value).is_integer() and int(value) in range(10, 121, 10):
        return int(value)
    return ctx.fail("invalid_parameter", path, "must be a multiple of 10 between 10 and 120")


def translation_filter(value: Any, path: str, ctx: Ctx) -> Any:
    if not isinstance(value, str):
        return ctx.fail("not_a_string", path, "must be a string")
    if value in TRANSLATION_FILTERS or FILTER_PROMPT.fullmatch(value):
        return value
    return ctx.fail(
        "invalid_parameter",
        path,
        "must be one of polite, rude, professional, shakespeare, gen-z or 'prompt:<text>'",
    )


def unsafe_sip_target(value: str, path: str, ctx: Ctx) -> bool:
    """With private targets denied, a sip: URI whose host is a non-public literal or a local
    name is ``url_is_unsafe`` (names are resolved and checked again when dialling)."""
    match = SIP_HOST.match(value.strip())
    if match is None:
        return False
    port = int(match.group(3) or (5061 if match.group(1).lower() == "sips" else 5060))
    reason = ctx.targets.refusal(match.group(2), port)
    if reason is None:
        return False
    ctx.fail("url_is_unsafe", path, f"must not point to a private or local network ({reason})")
    return True


def transfer_dest(value: Any, path: str, ctx: Ctx) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return ctx.fail("missing_required_parameter", path, "is required")
        if value.strip().lower().startswith(("http://", "https://")):
            return HTTP_URL(value, path, ctx)
        if unsafe_sip_target(value, path, ctx):
            return INVALID
        return value.strip()
    if isinstance(value, dict) and "sections" in value:
        return swml_document()(value, path, ctx)
    if isinstance(value, dict) and isinstance(value.get("params"), dict):
        # [sdk-docs] example: {"type": "phone", "params": {"to_number": ...}} (reference §9 #15).
        inner = value["params"]
        for key in ("to_number", "to"):
            if isinstance(inner.get(key), str) and inner[key].strip():
                return inner[key].strip()
    return ctx.fail(
        "invalid_parameter", path, "must be a destination string or an inline SWML object"
    )


def ai_prompt(value: Any, path: str, ctx: Ctx) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and any(k in value for k in ("text", "pom", "file")):
        return value
    return ctx.fail(
        "invalid_parameter", path, "must be a string or an object with text, pom or file"
    )


# --------------------------------------------------------------------------- dial / update


def _dial_pre(raw: dict[str, Any], path: str, ctx: Ctx) -> dict[str, Any]:
    # Python callers sometimes leak the SDK keyword name through ``extras``.
    if "from_" in raw:
        alias = raw.pop("from_")
        raw.setdefault("from", alias)
    return raw


def _url_or_swml(raw: dict[str, Any], ctx: Ctx, *, status_ok: bool) -> None:
    has_url = not is_blank(raw.get("url"))
    has_swml = not is_blank(raw.get("swml"))
    if has_url and has_swml:
        ctx.fail("incompatible_parameters", "swml", "cannot be combined with url")
    elif not has_url and not has_swml and not (status_ok and not is_blank(raw.get("status"))):
        ctx.fail(
            "inline_swml_or_swml_webhook_required",
            "url",
            "or swml is required (either url or swml must be included)",
        )


def _dial_post(out: dict[str, Any], raw: dict[str, Any], path: str, ctx: Ctx) -> None:
    _url_or_swml(raw, ctx, status_ok=False)
    if isinstance(out.get("to"), str):
        unsafe_sip_target(out["to"], join(path, "to"), ctx)
    if is_blank(raw.get("to")):
        if is_blank(raw.get("to_script")):
            ctx.fail("missing_required_parameter", "to", "is required (unless to_script is given)")
        out.pop("to", None)


def _update_post(out: dict[str, Any], raw: dict[str, Any], path: str, ctx: Ctx) -> None:
    _url_or_swml(raw, ctx, status_ok=True)


DIAL: Final = obj(
    {
        "from": TEXT,
        "to": TEXT,
        "url": HTTP_URL,
        "swml": swml_document(),
        "username": TEXT,
        "password": TEXT,
        "to_script": to_script,
        "caller_id": TEXT,
        "fallback_url": HTTP_URL,
        "status_url": HTTP_URL,
        "status_events": array(
            enum(("created", "ringing", "answered", "ended")), strings=True, unique=True
        ),
        "url_method": enum(("GET", "POST"), fold_case=True),
        "codecs": codecs,
        "timeout": integer(ge=1, le=600),
        "max_price_per_minute": number(ge=0),
        "send_digits": string(pattern=SEND_DIGITS, rule="may only contain 0-9, A-D, *, #, w and ,"),
        "region": region,
        "custom_variables": custom_variables,
    },
    required=["from"],
    pre=_dial_pre,
    post=_dial_post,
)

UPDATE: Final = obj(
    {
        "id": uuid_like(),
        "url": HTTP_URL,
        "swml": swml_document(),
        "fallback_url": HTTP_URL,
        "status": enum(("canceled", "completed")),
        "status_url": HTTP_URL,
    },
    required=["id"],
    post=_update_post,
)

# --------------------------------------------------------------------------- play

PLAY_ITEM: Final = tagged(
    {
        "audio": obj({"url": HTTP_URL}, required=["url"]),
        "tts": obj(
            {"text": TEXT, "language": TEXT, "gender": enum(GENDERS), "voice": VOICE},
            required=["text"],
        ),
        "silence": obj({"duration": number(gt=0)}, required=["duration"]),
        "ringtone": obj(
            {"name": enum(RINGTONES, fold_case=True), "duration": number(gt=0)},
            required=["name"],
        ),
    }
)

PLAY: Final = obj(
    {
        "control_id": CONTROL_ID,
        "play": array(PLAY_ITEM, min_items=1),
        "volume": number(ge=-40, le=40),
        "direction": enum(PLAY_DIRECTIONS),
        "loop": integer(ge=0),
        "language": TEXT,
        "voice": VOICE,
        "gender": enum(GENDERS),
        "status_url": HTTP_URL,
    },
    required=["play"],
)

PLAY_VOLUME: Final = obj(
    {"control_id": CONTROL_ID, "volume": number(ge=-40, le=40)},
    required=["control_id", "volume"],
)

# --------------------------------------------------------------------------- record

RECORD_AUDIO: Final = obj(
    {
        "beep": FLAG,
        "format": enum(("mp3", "wav", "mp4"), fold_case=True),
        "stereo": FLAG,
        "direction": enum(PLAY_DIRECTIONS),
        "initial_timeout": number(ge=0),
        "end_silence_timeout": number(ge=0),
        "max_length": integer(ge=0),
        "terminators": TERMINATORS,
        "input_sensitivity": number(ge=0, le=100),
    }
)


def _record_pre(raw: dict[str, Any], path: str, ctx: Ctx) -> dict[str, Any]:
    """SDK ``record(audio={...})`` sends ``params.audio``; the wire has ``params.record.audio``."""
    if "audio" not in raw:
        return raw
    flat = raw.pop("audio")
    if flat is None:
        return raw
    if not isinstance(flat, dict):
        ctx.fail("must_be_object", "audio", "must be an object")
        raw.setdefault("record", {"audio": {}})
        return raw
    record = raw.get("record")
    if record is None:
        raw["record"] = {"audio": flat}
    elif isinstance(record, dict):
        nested = record.get("audio")
        if nested is None:
            raw["record"] = {**record, "audio": flat}
        elif isinstance(nested, dict):
            raw["record"] = {**record, "audio": {**flat, **nested}}  # nested wins
    return raw


RECORD: Final = obj(
    {
        "control_id": CONTROL_ID,
        "record": obj({"audio": RECORD_AUDIO}, required=["audio"]),
        "status_url": HTTP_URL,
    },
    required=["record"],
    pre=_record_pre,
)

RECORD_PAUSE: Final = obj(
    {"control_id": CONTROL_ID, "behavior": enum(("skip", "silence"))}, required=["control_id"]
)

# --------------------------------------------------------------------------- collect / detect


def _collect_post(out: dict[str, Any], raw: dict[str, Any], path: str, ctx: Ctx) -> None:
    if raw.get("digits") is None and raw.get("speech") is None:
        # The spec makes this one a 400 (not a 422).
        ctx.fail("missing_required_parameter", "digits", "or speech is required", status=400)


COLLECT: Final = obj(
    {
        "control_id": CONTROL_ID,
        "initial_timeout": number(gt=0),
        "digits": obj(
            {"max": integer(gt=0), "terminators": TERMINATORS, "digit_timeout": number(gt=0)},
            required=["max"],
        ),
        "speech": obj(
            {
                "end_silence_timeout": number(gt=0),
                "speech_timeout": number(gt=0),
                "language": TEXT,
                "hints": STRINGS,
                "model": TEXT,
                "engine": enum(("Google", "Google.V2", "Deepgram")),
            }
        ),
        "continuous": FLAG,
        "partial_results": FLAG,
        "send_start_of_input": FLAG,
        "start_input_timers": FLAG,
        "status_url": HTTP_URL,
    },
    post=_collect_post,
)

DETECT: Final = obj(
    {
        "control_id": CONTROL_ID,
        "detect": tagged(
            {
                "machine": obj(
                    {
                        "initial_timeout": number(ge=0),
                        "end_silence_timeout": number(ge=0),
                        "machine_ready_timeout": number(ge=0),
                        "machine_voice_threshold": number(ge=0),
                        "machine_words_threshold": integer(ge=0),
                        "detect_interruptions": FLAG,
                        "detect_message_end": FLAG,
                    }
                ),
                "fax": obj({"tone": enum(("CNG", "CED", "cng", "ced"))}),
                "digit": obj({"digits": TERMINATORS}),
            },
            params_required=False,
        ),
        "timeout": number(ge=0),
        "status_url": HTTP_URL,
    },
    required=["detect"],
)

# --------------------------------------------------------------------------- tap / stream


def _device_type(params: dict[str, Any]) -> str | None:
    if "addr" in params or "port" in params:
        return "rtp"
    if "uri" in params:
        return "ws"
    return None


TAP: Final = obj(
    {
        "control_id": CONTROL_ID,
        "tap": tagged(
            {"audio": obj({"direction": enum(PLAY_DIRECTIONS)}, required=["direction"])},
            infer_type=lambda params: "audio",
        ),
        "device": tagged(
            {
                "rtp": obj(
                    {
                        "addr": public_ipv4(),
                        "port": integer(ge=1, le=65535),
                        "codec": enum(TAP_CODECS),
                        "ptime": ptime,
                    },
                    required=["addr", "port"],
                ),
                "ws": obj(
                    {
                        "uri": url(schemes=("ws", "wss"), code="invalid_parameter"),
                        "codec": enum(TAP_CODECS),
                    },
                    required=["uri"],
                ),
            },
            infer_type=_device_type,
        ),
        "status_url": HTTP_URL,
    },
    required=["tap", "device"],
)

STREAM: Final = obj(
    {
        "control_id": CONTROL_ID,
        "url": url(schemes=("wss",), code="invalid_parameter"),
        "name": TEXT,
        "codec": TEXT,
        "track": enum(("inbound_track", "outbound_track", "both_tracks")),
        "authorization_bearer_token": TEXT,
        "custom_parameters": json_object(),
        "status_url": HTTP_URL,
        "status_url_method": enum(("GET", "POST"), fold_case=True),
    },
    required=["url"],
)

# --------------------------------------------------------------------------- AI


def _ai_message_post(out: dict[str, Any], raw: dict[str, Any], path: str, ctx: Ctx) -> None:
    if all(is_blank(raw.get(k)) for k in ("message_text", "reset", "global_data")):
        ctx.fail("missing_required_parameter", "message_text", "is required unless reset is given")


AI_MESSAGE: Final = obj(
    {
        "role": enum(("system", "user", "assistant")),
        "message_text": TEXT,
        "reset": obj({"full_reset": FLAG, "user_prompt": TEXT, "system_prompt": TEXT}),
        "global_data": json_object(),
    },
    post=_ai_message_post,
)

AI_HOLD: Final = obj({"timeout": hold_timeout, "prompt": TEXT})
AI_UNHOLD: Final = obj({"prompt": TEXT})  # spec: {}; SDK and [rpc] send prompt (§9 #7)
AI_STOP: Final = obj({"control_id": TEXT})  # optional and ignored (§9 #8)

SPEECH_ENGINE: Final = enum(("deepgram", "google"), fold_case=True)

_LIVE_COMMON: Final[dict[str, Validator]] = {
    "direction": legs(),
    "webhook": HTTP_URL,
    "live_events": FLAG,
    "ai_summary": FLAG,
    "ai_summary_prompt": TEXT,
    "speech_engine": SPEECH_ENGINE,
    "speech_timeout": integer(ge=0),
    "vad_silence_ms": integer(ge=0),
    "vad_thresh": integer(ge=0, le=1800),
    "debug_level": integer(ge=0, le=2),
}
SUMMARIZE: Final = obj({"webhook": HTTP_URL, "prompt": TEXT})
TRANSCRIBE_START: Final = obj({"lang": string(), **_LIVE_COMMON}, required=["lang", "direction"])
TRANSLATE_START: Final = obj(
    {
        "from_lang": TEXT,
        "to_lang": TEXT,
        "from_voice": VOICE,
        "to_voice": VOICE,
        "filter_from": translation_filter,
        "filter_to": translation_filter,
        **_LIVE_COMMON,
    },
    required=["from_lang", "to_lang", "direction"],
)
TRANSLATE_INJECT: Final = obj(
    {"message": TEXT, "direction": enum(LEGS)}, required=["message", "direction"]
)

_START_ALIASES: Final[dict[str, dict[str, str]]] = {
    # §9 #16: SDK/RELAY examples spell these differently from the spec.
    "transcribe": {"language": "lang"},
    "translate": {"source": "from_lang", "target": "to_lang"},
}


def _rename(body: dict[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    out = dict(body)
    for alias, name in aliases.items():
        if alias in out and name not in out:
            out[name] = out.pop(alias)
    return out


def _live_pre(kind: str, actions: tuple[str, ...]) -> Any:
    aliases = _START_ALIASES[kind]

    def pre(raw: dict[str, Any], path: str, ctx: Ctx) -> dict[str, Any]:
        action = raw.get("action")
        if isinstance(action, str) and action in actions and action != "stop":
            # Flat client form: live_transcribe(action="start", lang="en", ...).
            body = {k: raw.pop(k) for k in list(raw) if k not in ("action", "status_url")}
            if action == "start":
                body = _rename(body, aliases)
                body.setdefault("direction", list(LEGS))
            raw["action"] = {action: body}
        elif isinstance(action, dict) and isinstance(action.get("start"), dict):
            raw["action"] = {**action, "start": _rename(action["start"], aliases)}
        return raw

    return pre


def live_action(variants: Mapping[str, Obj]) -> Validator:
    names = ", ".join(("stop", *variants))

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if value == "stop" or (isinstance(value, dict) and set(value) == {"stop"}):
            return "stop"
        if not isinstance(value, dict):
            return ctx.fail("invalid_parameter", path, f"must be one of: {names}")
        present = [k for k in value if k in variants]
        if len(present) != 1:
            return ctx.fail("invalid_parameter", path, f"must hold exactly one of: {names}")
        name = present[0]
        body = variants[name](value[name], join(path, name), ctx)
        if body is INVALID:
            return INVALID
        return {**{k: v for k, v in value.items() if k != name}, name: body}

    return check


LIVE_TRANSCRIBE: Final = obj(
    {"action": live_action({"start": TRANSCRIBE_START, "summarize": SUMMARIZE})},
    required=["action"],
    pre=_live_pre("transcribe", ("start", "summarize", "stop")),
)
LIVE_TRANSLATE: Final = obj(
    {
        "action": live_action(
            {"start": TRANSLATE_START, "summarize": SUMMARIZE, "inject": TRANSLATE_INJECT}
        ),
        "status_url": HTTP_URL,
    },
    required=["action"],
    pre=_live_pre("translate", ("start", "summarize", "inject", "stop")),
)

AI_SIDECAR: Final = obj(
    {
        "lang": TEXT,
        "prompt": ai_prompt,
        "model": TEXT,
        "direction": legs(both_required=True),
        "customer_role": enum(LEGS),
        "url": HTTP_URL,
        "SWAIG": json_object(),
        "permissions": obj(
            {
                "swaig_allow_swml": FLAG,
                "swaig_allow_settings": FLAG,
                "swaig_set_global_data": FLAG,
            }
        ),
        "global_data": json_object(),
        "hints": array(string(), min_items=1, strings=True),
        "params": obj(
            {
                "idle_timeout_ms": integer(ge=50, le=5000),
                "min_interval_ms": integer(ge=0, le=60000),
                "max_iters_per_tick": integer(ge=1, le=20),
                "max_history_tokens": integer(ge=1000, le=200000),
                "act_on_channel": FLAG,
                "final_summary": FLAG,
                "ai_summary": FLAG,
                "ai_summary_prompt": TEXT,
                "summary_model": TEXT,
                "live_events": FLAG,
                "verbose_utterances": FLAG,
                "speech_engine": SPEECH_ENGINE,
                "speech_timeout": integer(ge=0, le=600000),
                "vad_silence_ms": integer(ge=0, le=60000),
                "vad_thresh": integer(ge=0, le=10000),
                "debug_level": integer(ge=0, le=100),
                "debug": FLAG,
                "transcribe_prompt": TEXT,
            }
        ),
        "action": obj({"summarize": SUMMARIZE}, required=["summarize"]),
    },
    required=["lang"],
)
SIDECAR_TEXT: Final = obj({"text": TEXT}, required=["text"])

# --------------------------------------------------------------------------- refer / misc

REFER: Final = obj(
    {
        "device": tagged(
            {
                "sip": obj(
                    {
                        "to": string(pattern=SIP_URI, rule="must start with sip:"),
                        "from": string(pattern=SIP_URI, rule="must start with sip:"),
                        "username": TEXT,
                        "password": TEXT,
                    },
                    required=["to"],
                )
            },
            infer_type=lambda params: "sip",
        ),
        "status_url": HTTP_URL,
    },
    required=["device"],
)

# --------------------------------------------------------------------------- the table

IdAt = Literal["top", "params", "none"]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    id_at: IdAt
    params: Obj


COMMANDS: Final[dict[str, CommandSpec]] = {
    spec.name: spec
    for spec in (
        CommandSpec("dial", "none", DIAL),
        CommandSpec("update", "params", UPDATE),
        CommandSpec(
            "calling.end",
            "top",
            obj({"reason": enum(("hangup", "cancel", "busy", "noAnswer", "decline", "error"))}),
        ),
        CommandSpec("calling.transfer", "top", obj({"dest": transfer_dest}, required=["dest"])),
        CommandSpec("calling.disconnect", "top", EMPTY),
        CommandSpec("calling.play", "top", PLAY),
        CommandSpec("calling.play.pause", "top", CONTROL_ONLY),
        CommandSpec("calling.play.resume", "top", CONTROL_ONLY),
        CommandSpec("calling.play.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.play.volume", "top", PLAY_VOLUME),
        CommandSpec("calling.record", "top", RECORD),
        CommandSpec("calling.record.pause", "top", RECORD_PAUSE),
        CommandSpec("calling.record.resume", "top", CONTROL_ONLY),
        CommandSpec("calling.record.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.collect", "top", COLLECT),
        CommandSpec("calling.collect.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.collect.start_input_timers", "top", CONTROL_ONLY),
        CommandSpec("calling.detect", "top", DETECT),
        CommandSpec("calling.detect.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.tap", "top", TAP),
        CommandSpec("calling.tap.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.stream", "top", STREAM),
        CommandSpec("calling.stream.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.denoise", "top", EMPTY),
        CommandSpec("calling.denoise.stop", "top", EMPTY),
        CommandSpec(
            "calling.transcribe", "top", obj({"control_id": CONTROL_ID, "status_url": HTTP_URL})
        ),
        CommandSpec("calling.transcribe.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.ai_message", "top", AI_MESSAGE),
        CommandSpec("calling.ai_hold", "top", AI_HOLD),
        CommandSpec("calling.ai_unhold", "top", AI_UNHOLD),
        CommandSpec("calling.ai.stop", "top", AI_STOP),
        CommandSpec("calling.live_transcribe", "top", LIVE_TRANSCRIBE),
        CommandSpec("calling.live_translate", "top", LIVE_TRANSLATE),
        CommandSpec("calling.send_fax.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.receive_fax.stop", "top", CONTROL_ONLY),
        CommandSpec("calling.refer", "top", REFER),
        CommandSpec("calling.user_event", "top", obj({"event": json_object()}, required=["event"])),
        CommandSpec("calling.ai_sidecar", "top", AI_SIDECAR),
        CommandSpec("calling.ai_sidecar.poke", "top", SIDECAR_TEXT),
        CommandSpec("calling.ai_sidecar.ask", "top", SIDECAR_TEXT),
        CommandSpec("calling.ai_sidecar.stop", "top", EMPTY),
        CommandSpec("calling.ai_sidecar.status", "top", EMPTY),
    )
}

# --------------------------------------------------------------------------- the envelope


@dataclass(frozen=True)
class Command:
    """A validated command in the engine's canonical form."""

    command: str
    call_id: str | None
    params: dict[str, Any]


def validate_request(body: Any, *, targets: TargetPolicy | None = None) -> Command | list[Problem]:
    """Validate one request body (already parsed JSON). Returns the command or every problem.

    Problems come in reading order: ``command``, ``id``, ``params``, then inside ``params``.
    """
    ctx = Ctx(targets=targets or TargetPolicy())
    if not isinstance(body, dict):
        ctx.fail("must_be_object", "", "must be a JSON object", status=400)
        return ctx.problems

    name = body.get("command")
    spec: CommandSpec | None = None
    if is_blank(name):
        ctx.fail("missing_required_parameter", "command", "is required")
    elif not isinstance(name, str):
        ctx.fail("not_a_string", "command", "must be a string")
    else:
        spec = COMMANDS.get(name.strip())
        if spec is None:
            shown = name if len(name) <= 64 else name[:61] + "..."
            ctx.problems.append(
                Problem(
                    "invalid_command_attempted",
                    f"command '{shown}' is not a supported command",
                    "command",
                )
            )

    call_id: str | None = None
    raw_id = body.get("id")
    if spec is not None and spec.id_at == "top":
        if is_blank(raw_id):
            ctx.fail("missing_required_parameter", "id", "is required")
        else:
            checked = uuid_like()(raw_id, "id", ctx)
            call_id = None if checked is INVALID else checked

    params = body.get("params")
    if params is None:
        ctx.fail("missing_required_parameter", "params", "is required (send {} when empty)")
        return ctx.problems
    if not isinstance(params, dict):
        ctx.fail("must_be_object", "params", "must be an object")
        return ctx.problems
    if spec is None:
        return ctx.problems
    if spec.id_at == "params" and is_blank(params.get("id")) and not is_blank(raw_id):
        # update keeps the call id in params; tolerate it at the top level too.
        params = {**params, "id": raw_id}

    canonical = spec.params(params, "", ctx)
    if ctx.problems or canonical is INVALID:
        return ctx.problems
    return Command(spec.name, call_id, canonical)


__all__ = ["COMMANDS", "LENIENCIES", "Command", "CommandSpec", "validate_request"]
