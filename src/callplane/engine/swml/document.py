"""Loading and structural validation of SWML documents (calling flavour).

A document is ``{"version": "1.0.0", "sections": {"main": [method, ...], "<name>": [...]}}`` where
every method is an object with exactly one key (the method name) whose value holds its parameters.

Validation here is *structural*: shapes, required parameters and parameter types, with a path to
the offending node. Values that are SWML variables (``"${...}"`` / ``"%{...}"``) are accepted where
the schema allows a number or a boolean, because their real value is only known at execution time;
the interpreter re-checks those after expansion.

Unknown method names are, by default, **not** a load error: the interpreter fails the script with a
clear log line when (and only if) execution reaches one. Reasons: that is the behaviour the issue
asks for, a script with a newer method in a branch that is never taken keeps working, and "unknown"
and "known but not implemented by this engine" then share one failure path. Callers that want the
sealed-schema behaviour (reject before anything runs, e.g. to answer REST ``dial`` with 422) pass
``strict_methods=True``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import SwmlError

__all__ = [
    "ALL_METHODS",
    "CALL_METHODS",
    "FLOW_METHODS",
    "SwmlDocument",
    "is_swml_var",
    "load_document",
    "validate_document",
    "validate_method",
]

#: Methods the interpreter executes itself (flow control and data).
FLOW_METHODS: frozenset[str] = frozenset(
    {
        "cond",
        "execute",
        "goto",
        "label",
        "request",
        "return",
        "set",
        "sleep",
        "switch",
        "transfer",
        "unset",
    }
)

#: Call-facing methods, delegated to ``SwmlHost.run_method``.
CALL_METHODS: frozenset[str] = frozenset(
    {
        "ai",
        "ai_sidecar",
        "amazon_bedrock",
        "answer",
        "connect",
        "denoise",
        "detect_machine",
        "enter_queue",
        "hangup",
        "join_conference",
        "join_room",
        "live_transcribe",
        "live_translate",
        "pay",
        "play",
        "prompt",
        "receive_fax",
        "record",
        "record_call",
        "send_digits",
        "send_fax",
        "send_sms",
        "sip_refer",
        "stop_denoise",
        "stop_record_call",
        "stop_stream",
        "stop_tap",
        "stream",
        "tap",
        "transcribe",
        "transcribe_stop",
        "user_event",
    }
)

#: All 43 methods of the calling schema (``$defs/SWMLMethod``).
ALL_METHODS: frozenset[str] = FLOW_METHODS | CALL_METHODS

_SWML_VAR = re.compile(r"^[$%]\{.*\}$", re.DOTALL)


def is_swml_var(value: Any) -> bool:
    """True for a string the schema's ``SWMLVar`` accepts in place of a number/boolean."""
    return isinstance(value, str) and _SWML_VAR.match(value) is not None


@dataclass
class SwmlDocument:
    """A loaded, structurally valid document. ``sections`` always contains ``main``."""

    sections: dict[str, list[dict[str, Any]]]
    version: str = "1.0.0"
    #: Where it came from (URL, "inline", ...), for log lines only.
    origin: str = "inline"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "sections": self.sections}


# --------------------------------------------------------------------------- loading


def _parse_text(text: str, content_type: str | None) -> Any:
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    wants_yaml = ctype in ("application/yaml", "text/x-yaml", "text/yaml", "application/x-yaml")
    stripped = text.lstrip()
    if not stripped:
        raise SwmlError("empty SWML document")
    if not wants_yaml and stripped[0] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            # JSON-looking text with a JSON error: report the JSON error rather than whatever the
            # YAML parser makes of it, which is what the author most likely meant to write.
            if ctype == "application/json":
                raise SwmlError(f"invalid JSON: {exc}") from exc
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError:
                raise SwmlError(f"invalid JSON: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SwmlError(f"invalid YAML: {exc}") from exc


def load_document(
    source: Mapping[str, Any] | str | bytes | SwmlDocument,
    *,
    content_type: str | None = None,
    origin: str = "inline",
    strict_methods: bool = False,
) -> SwmlDocument:
    """Load and validate a document from a dict, a JSON string or a YAML string.

    Raises `SwmlError` with a path (``sections.main[2].play``) on the first structural problem.
    """
    if isinstance(source, SwmlDocument):
        validate_document(source.to_dict(), strict_methods=strict_methods)
        return source
    data: Any
    if isinstance(source, bytes):
        try:
            data = _parse_text(source.decode("utf-8"), content_type)
        except UnicodeDecodeError as exc:
            raise SwmlError(f"SWML document is not UTF-8: {exc}") from exc
    elif isinstance(source, str):
        data = _parse_text(source, content_type)
    else:
        data = source
    if not isinstance(data, Mapping):
        raise SwmlError(f"a SWML document must be an object, got {_type_name(data)}")
    data = dict(data)
    validate_document(data, strict_methods=strict_methods)
    version = data.get("version", "1.0.0")
    return SwmlDocument(
        sections={name: list(methods) for name, methods in data["sections"].items()},
        version=str(version),
        origin=origin,
        raw=data,
    )


# --------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def validate_document(data: Mapping[str, Any], *, strict_methods: bool = False) -> None:
    """Check the document shape; raise `SwmlError` naming the first offending path."""
    for key in data:
        if key not in ("version", "sections"):
            raise SwmlError(f"unknown top-level property {key!r}", str(key))
    if "version" in data and data["version"] != "1.0.0":
        raise SwmlError(f"version must be '1.0.0', got {data['version']!r}", "version")
    if "sections" not in data:
        raise SwmlError("'sections' is required", "sections")
    sections = data["sections"]
    if not isinstance(sections, Mapping):
        raise SwmlError(f"must be an object, got {_type_name(sections)}", "sections")
    if "main" not in sections:
        raise SwmlError("'main' section is required", "sections.main")
    for name, methods in sections.items():
        _validate_methods(methods, f"sections.{name}", strict_methods)


def _validate_methods(methods: Any, path: str, strict: bool) -> None:
    if not isinstance(methods, list):
        raise SwmlError(f"must be an array of methods, got {_type_name(methods)}", path)
    for index, method in enumerate(methods):
        validate_method(method, f"{path}[{index}]", strict_methods=strict)


def _method_name(method: Any, path: str) -> str:
    if not isinstance(method, Mapping):
        raise SwmlError(
            f"a method must be an object with one key, got {_type_name(method)}",
            path,
        )
    if len(method) != 1:
        keys = ", ".join(repr(k) for k in method) or "none"
        raise SwmlError(f"a method must have exactly one key, got {len(method)} ({keys})", path)
    name = next(iter(method))
    if not isinstance(name, str):
        raise SwmlError("method name must be a string", path)
    return name


def validate_method(method: Any, path: str, *, strict_methods: bool = False) -> None:
    """Validate one ``{name: params}`` entry (and any nested method lists it carries)."""
    name = _method_name(method, path)
    mpath = f"{path}.{name}"
    spec = _SPECS.get(name)
    if spec is None:
        if strict_methods:
            raise SwmlError(f"unknown SWML method {name!r}", mpath)
        return
    spec(method[name], mpath, strict_methods)


# Per-method checkers. Each receives the method's value, its path and the strictness flag.

_Checker = Any  # Callable[[Any, str, bool], None]; kept loose so the table below stays readable.


def _expect_object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SwmlError(f"parameters must be an object, got {_type_name(value)}", path)
    return value


_KIND_CHECKS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    # kind: (python types, SWMLVar string accepted)
    "str": (str, False),
    "int": (int, True),
    "number": ((int, float), True),
    "bool": (bool, True),
    "object": (Mapping, False),
    "array": (list, False),
    "str_or_array": ((str, list), False),
    "str_or_object": ((str, Mapping), False),
    "str_or_number": ((str, int, float), False),
    "str_or_bool": ((str, bool), False),
}


_KIND_WORDS = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
    "str_or_array": "a string or an array",
    "str_or_object": "a string or an object",
    "str_or_number": "a string or a number",
    "str_or_bool": "a string or a boolean",
}


def _check_field(params: Mapping[str, Any], key: str, kind: str, path: str) -> None:
    if key not in params:
        return
    value = params[key]
    fpath = f"{path}.{key}"
    types, var_ok = _KIND_CHECKS[kind]
    if var_ok and is_swml_var(value):
        return
    # bool is an int subclass in Python; JSON true is never a valid integer here.
    if kind in ("int", "number") and isinstance(value, bool):
        raise SwmlError(f"must be {_KIND_WORDS[kind]}, got boolean", fpath)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return
    if not isinstance(value, types):
        raise SwmlError(f"must be {_KIND_WORDS[kind]}, got {_type_name(value)}", fpath)


def _object_checker(
    required: tuple[str, ...] = (),
    fields: Mapping[str, str] | None = None,
    one_of: tuple[str, ...] = (),
    methods: tuple[str, ...] = (),
    results: tuple[str, ...] = (),
    enums: Mapping[str, tuple[str, ...]] | None = None,
) -> _Checker:
    """Build a checker for an object-valued method.

    `one_of`: exactly one of these keys must be present (``play.url``/``play.urls``).
    `methods`: keys holding an array of methods. `results`: keys holding a switch object or a
    cond array (``execute.result``, ``connect.result``).
    """

    def check(value: Any, path: str, strict: bool) -> None:
        params = _expect_object({} if value is None else value, path)
        for key in required:
            if key not in params:
                raise SwmlError(f"missing required parameter {key!r}", f"{path}.{key}")
        if one_of:
            present = [k for k in one_of if k in params]
            if len(present) != 1:
                alternatives = " or ".join(repr(k) for k in one_of)
                raise SwmlError(
                    f"exactly one of {alternatives} is required"
                    + (f", got {len(present)}" if present else ""),
                    path,
                )
        for key, kind in (fields or {}).items():
            _check_field(params, key, kind, path)
        for key, allowed in (enums or {}).items():
            if key in params and not is_swml_var(params[key]) and params[key] not in allowed:
                raise SwmlError(
                    f"must be one of {', '.join(allowed)}, got {params[key]!r}", f"{path}.{key}"
                )
        for key in methods:
            if key in params:
                _validate_methods(params[key], f"{path}.{key}", strict)
        for key in results:
            if key in params:
                _validate_result(params[key], f"{path}.{key}", strict)

    return check


def _validate_switch_body(value: Any, path: str, strict: bool, *, need_variable: bool) -> None:
    params = _expect_object(value, path)
    for key in params:
        if key not in ("variable", "case", "default"):
            raise SwmlError(f"unknown parameter {key!r}", f"{path}.{key}")
    if need_variable and "variable" not in params:
        raise SwmlError("missing required parameter 'variable'", f"{path}.variable")
    if "variable" in params and not isinstance(params["variable"], str):
        raise SwmlError("must be a string", f"{path}.variable")
    if "case" not in params:
        raise SwmlError("missing required parameter 'case'", f"{path}.case")
    cases = params["case"]
    if not isinstance(cases, Mapping):
        raise SwmlError(f"must be an object, got {_type_name(cases)}", f"{path}.case")
    for case_value, body in cases.items():
        _validate_methods(body, f"{path}.case.{case_value}", strict)
    if "default" in params:
        _validate_methods(params["default"], f"{path}.default", strict)


def _validate_cond_body(value: Any, path: str, strict: bool) -> None:
    # The schema says array; a single condition object is accepted as a one-element array because
    # hand-written scripts do that and the meaning is unambiguous.
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list):
        raise SwmlError(f"must be an array of conditions, got {_type_name(value)}", path)
    for index, item in enumerate(items):
        ipath = f"{path}[{index}]" if isinstance(value, list) else path
        if not isinstance(item, Mapping):
            raise SwmlError(f"a condition must be an object, got {_type_name(item)}", ipath)
        for key in item:
            if key not in ("when", "then", "else"):
                raise SwmlError(f"unknown parameter {key!r}", f"{ipath}.{key}")
        if "when" in item:
            if not isinstance(item["when"], str | bool | int | float):
                raise SwmlError("must be a JavaScript condition string", f"{ipath}.when")
            if "then" not in item:
                raise SwmlError("missing required parameter 'then'", f"{ipath}.then")
        elif "else" not in item:
            raise SwmlError("a condition needs 'when' + 'then', or 'else'", ipath)
        elif "then" in item:
            raise SwmlError("'then' without 'when'", f"{ipath}.then")
        for key in ("then", "else"):
            if key in item:
                _validate_methods(item[key], f"{ipath}.{key}", strict)


def _validate_result(value: Any, path: str, strict: bool) -> None:
    if isinstance(value, list):
        _validate_cond_body(value, path, strict)
    elif isinstance(value, Mapping):
        _validate_switch_body(value, path, strict, need_variable=False)
    else:
        raise SwmlError(f"must be a switch object or a cond array, got {_type_name(value)}", path)


def _check_switch(value: Any, path: str, strict: bool) -> None:
    _validate_switch_body(value, path, strict, need_variable=True)


def _check_cond(value: Any, path: str, strict: bool) -> None:
    _validate_cond_body(value, path, strict)


def _check_label(value: Any, path: str, strict: bool) -> None:
    if not isinstance(value, str) or not value:
        raise SwmlError(f"label must be a non-empty string, got {_type_name(value)}", path)


def _check_unset(value: Any, path: str, strict: bool) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return
    raise SwmlError("must be a variable name or an array of variable names", path)


def _check_return(value: Any, path: str, strict: bool) -> None:
    return  # any JSON value


def _check_sleep(value: Any, path: str, strict: bool) -> None:
    duration = value.get("duration") if isinstance(value, Mapping) else value
    if isinstance(value, Mapping):
        if "duration" not in value:
            raise SwmlError("missing required parameter 'duration'", f"{path}.duration")
        extra = [k for k in value if k != "duration"]
        if extra:
            raise SwmlError(f"unknown parameter {extra[0]!r}", f"{path}.{extra[0]}")
        path = f"{path}.duration"
    if is_swml_var(duration):
        return
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise SwmlError(f"must be an integer (ms), got {_type_name(duration)}", path)
    if duration < -1:
        raise SwmlError("must be >= -1 (ms; -1 sleeps forever)", path)


def _check_goto(value: Any, path: str, strict: bool) -> None:
    _object_checker(required=("label",), fields={"label": "str", "when": "str", "max": "int"})(
        value, path, strict
    )
    max_ = value.get("max")
    if isinstance(max_, int | float) and not isinstance(max_, bool) and not 1 <= max_ <= 100:
        raise SwmlError("must be between 1 and 100", f"{path}.max")


def _check_set(value: Any, path: str, strict: bool) -> None:
    _expect_object(value, path)


def _check_request(value: Any, path: str, strict: bool) -> None:
    _object_checker(
        required=("url", "method"),
        fields={
            "url": "str",
            "method": "str",
            "headers": "object",
            "body": "str_or_object",
            "timeout": "number",
            "connect_timeout": "number",
            "save_variables": "bool",
        },
    )(value, path, strict)
    method = value["method"]
    if not is_swml_var(method) and method.upper() not in ("GET", "POST", "PUT", "DELETE"):
        raise SwmlError(f"must be GET, POST, PUT or DELETE, got {method!r}", f"{path}.method")


def _check_hangup(value: Any, path: str, strict: bool) -> None:
    _object_checker(fields={"reason": "str"}, enums={"reason": ("hangup", "busy", "decline")})(
        value, path, strict
    )


def _check_any_object(value: Any, path: str, strict: bool) -> None:
    _expect_object({} if value is None else value, path)


def _check_live_action(value: Any, path: str, strict: bool) -> None:
    params = _expect_object(value, path)
    if "action" not in params:
        raise SwmlError("missing required parameter 'action'", f"{path}.action")
    if not isinstance(params["action"], str | Mapping):
        raise SwmlError("must be a string or an object", f"{path}.action")


_STATUS = {"status_url": "str"}

_SPECS: dict[str, _Checker] = {
    # flow control, executed by the interpreter
    "cond": _check_cond,
    "execute": _object_checker(
        required=("dest",),
        fields={"dest": "str", "params": "object", "meta": "object"},
        methods=("on_return",),
        results=("result",),
    ),
    "goto": _check_goto,
    "label": _check_label,
    "request": _check_request,
    "return": _check_return,
    "set": _check_set,
    "sleep": _check_sleep,
    "switch": _check_switch,
    "transfer": _object_checker(
        required=("dest",), fields={"dest": "str", "params": "object", "meta": "object"}
    ),
    "unset": _check_unset,
    # call-facing, delegated to the host: required params and the types the engine relies on
    "answer": _object_checker(
        fields={"max_duration": "int", "codecs": "str", "username": "str", "password": "str"}
    ),
    "hangup": _check_hangup,
    "play": _object_checker(
        one_of=("url", "urls"),
        fields={"url": "str", "urls": "array", "volume": "number", "auto_answer": "bool"} | _STATUS,
    ),
    "prompt": _object_checker(
        required=("play",),
        fields={
            "play": "str_or_array",
            "volume": "number",
            "max_digits": "int",
            "terminators": "str",
            "digit_timeout": "number",
            "initial_timeout": "number",
            "speech_timeout": "number",
            "speech_end_timeout": "number",
            "speech_language": "str",
            "speech_hints": "array",
            "speech_engine": "str",
        }
        | _STATUS,
    ),
    "record": _object_checker(
        fields={
            "stereo": "bool",
            "format": "str",
            "direction": "str",
            "terminators": "str",
            "beep": "bool",
            "input_sensitivity": "number",
            "initial_timeout": "number",
            "end_silence_timeout": "number",
            "max_length": "number",
        }
        | _STATUS,
        enums={"format": ("wav", "mp3", "mp4"), "direction": ("speak", "listen")},
    ),
    "record_call": _object_checker(
        fields={
            "control_id": "str",
            "stereo": "bool",
            "format": "str",
            "direction": "str",
            "terminators": "str",
            "beep": "bool",
            "input_sensitivity": "number",
            "initial_timeout": "number",
            "end_silence_timeout": "number",
            "max_length": "number",
        }
        | _STATUS,
        enums={"format": ("wav", "mp3", "mp4"), "direction": ("speak", "listen", "both")},
    ),
    "stop_record_call": _object_checker(fields={"control_id": "str"}),
    "send_digits": _object_checker(required=("digits",), fields={"digits": "str"}),
    "denoise": _check_any_object,
    "stop_denoise": _check_any_object,
    "detect_machine": _object_checker(
        fields={
            "detectors": "str",
            "initial_timeout": "number",
            "end_silence_timeout": "number",
            "machine_ready_timeout": "number",
            "machine_voice_threshold": "number",
            "machine_words_threshold": "number",
            "detect_message_end": "bool",
            "timeout": "number",
            "tone": "str",
            "wait": "bool",
        }
        | _STATUS
    ),
    "tap": _object_checker(
        required=("uri",),
        fields={
            "uri": "str",
            "control_id": "str",
            "direction": "str",
            "codec": "str",
            "rtp_ptime": "int",
        }
        | _STATUS,
    ),
    "stop_tap": _object_checker(fields={"control_id": "str"}),
    "stream": _object_checker(
        required=("url",),
        fields={"url": "str", "control_id": "str", "name": "str", "custom_parameters": "object"}
        | _STATUS,
    ),
    "stop_stream": _object_checker(fields={"control_id": "str"}),
    "transcribe": _object_checker(fields=_STATUS),
    "transcribe_stop": _check_any_object,
    "live_transcribe": _check_live_action,
    "live_translate": _check_live_action,
    "sip_refer": _object_checker(
        required=("to_uri",),
        fields={"to_uri": "str", "username": "str", "password": "str"} | _STATUS,
    ),
    "send_fax": _object_checker(required=("document",), fields={"document": "str"} | _STATUS),
    "receive_fax": _object_checker(fields=_STATUS),
    "pay": _object_checker(
        required=("payment_connector_url",), fields={"payment_connector_url": "str"} | _STATUS
    ),
    "user_event": _object_checker(required=("event",)),
    "send_sms": _object_checker(
        required=("to_number", "from_number"),
        one_of=("body", "media"),
        fields={"to_number": "str", "from_number": "str", "body": "str", "media": "array"},
    ),
    "connect": _object_checker(
        one_of=("to", "serial", "parallel", "serial_parallel"),
        fields={
            "to": "str",
            "serial": "array",
            "parallel": "array",
            "serial_parallel": "array",
            "headers": "array",
            "timeout": "number",
            "max_duration": "int",
            "answer_on_bridge": "bool",
        },
        results=("result",),
    ),
    "join_conference": _object_checker(
        required=("name",), fields={"name": "str"}, results=("result",)
    ),
    "enter_queue": _object_checker(
        required=("queue_name", "transfer_after_bridge"),
        fields={"queue_name": "str", "transfer_after_bridge": "str", "wait_time": "int"} | _STATUS,
    ),
    "join_room": _object_checker(required=("name",), fields={"name": "str"}),
    "ai": _object_checker(required=("prompt",), fields={"prompt": "object"}),
    "ai_sidecar": _object_checker(required=("lang",), fields={"lang": "str"}),
    "amazon_bedrock": _object_checker(required=("prompt",), fields={"prompt": "object"}),
}

assert set(_SPECS) == ALL_METHODS, set(_SPECS) ^ ALL_METHODS
