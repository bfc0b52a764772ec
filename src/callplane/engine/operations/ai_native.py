"""The AI agent's local helpers: SWAIG ``native_functions`` answered without a web hook, and
``ai.hints``. Pure functions, no I/O.

Native functions (schema ``SWAIGNativeFunction``) offered to the model as tools:

* ``check_time``: the current date and time in ``params.local_tz`` (an IANA zone, default
  ``US/Central`` as in the reference), or in a zone the model names.
* ``wait_seconds``: the agent pauses for ``seconds`` (1-300; counted in media ticks by the
  agent) before the model goes on; what the caller says meanwhile waits for its turn.
* ``wait_for_user``: the model's turn ends there and the agent waits for the caller, without
  the attention timeout prompting it.
* ``adjust_response_latency`` is accepted and not offered (callplane has no such setting).

Hints (schema ``Hint``): plain strings and the ``hint`` of hint objects are listed in the
system prompt as words the caller may use. They are not handed to the recognizer: its
``hints`` are a closed grammar (collect's semantics: only those phrases can be recognised),
which would stop the agent hearing anything else. A hint object's ``pattern`` (a regular
expression, ``ignore_case``) is replaced by its ``replace`` in every recognised utterance.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_TZ",
    "NATIVE_FUNCTIONS",
    "Hints",
    "check_time",
    "native_tools",
    "time_zone",
    "wait_seconds_argument",
]

DEFAULT_TZ = "US/Central"
MAX_WAIT_SECONDS = 300
NATIVE_FUNCTIONS = frozenset(
    {"check_time", "wait_seconds", "wait_for_user", "adjust_response_latency"}
)
_OFFERED = ("check_time", "wait_seconds", "wait_for_user")

_TOOLS: dict[str, dict[str, Any]] = {
    "check_time": {
        "description": "Get the current local date and time.",
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "An IANA time zone; the agent's own zone when left out.",
                }
            },
        },
    },
    "wait_seconds": {
        "description": "Wait quietly for a number of seconds, e.g. when the caller asks for "
        "a moment.",
        "parameters": {
            "type": "object",
            "properties": {
                "seconds": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_WAIT_SECONDS,
                    "description": "How long to wait.",
                }
            },
            "required": ["seconds"],
        },
    },
    "wait_for_user": {
        "description": "Say nothing more and wait until the caller speaks.",
        "parameters": {"type": "object", "properties": {}},
    },
}


def native_tools(names: Any) -> list[dict[str, Any]]:
    """Tool definitions for ``SWAIG.native_functions``; raises ValueError on a name the
    schema does not define."""
    if names is None:
        return []
    if not isinstance(names, list):
        raise ValueError("SWAIG.native_functions must be a list")
    tools = []
    for name in names:
        if name not in NATIVE_FUNCTIONS:
            raise ValueError(f"SWAIG.native_functions: no native function {name!r}")
        if name in _OFFERED:
            tools.append({"type": "function", "function": {"name": name, **_TOOLS[name]}})
    return tools


def time_zone(name: Any) -> zoneinfo.ZoneInfo:
    """``params.local_tz``; raises ValueError naming the zone when it is unknown."""
    try:
        return zoneinfo.ZoneInfo(str(name or DEFAULT_TZ))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"params.local_tz: unknown time zone {name!r}") from exc


def check_time(zone: zoneinfo.ZoneInfo, now: datetime.datetime | None = None) -> str:
    """The tool result of ``check_time``: date, time, zone name and UTC offset."""
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(zone)
    offset = moment.strftime("%z")
    return (
        f"It is {moment.strftime('%A, %d %B %Y, %H:%M:%S')} in {zone.key} "
        f"({moment.tzname()}, UTC{offset[:3]}:{offset[3:]})."
    )


def wait_seconds_argument(arguments: Mapping[str, Any]) -> int:
    """``seconds`` of a ``wait_seconds`` call, within 1..300 (a model may send a string)."""
    try:
        seconds = round(float(arguments.get("seconds", 0)))
    except (TypeError, ValueError):
        seconds = 0
    return max(1, min(MAX_WAIT_SECONDS, seconds))


class Hints:
    """``ai.hints``: words for the prompt and pattern replacements for the transcripts."""

    def __init__(self, hints: Any) -> None:
        self.words: list[str] = []
        self._rules: list[tuple[re.Pattern[str], str]] = []
        if hints is None:
            return
        if not isinstance(hints, list):
            raise ValueError("hints must be a list")
        for i, hint in enumerate(hints):
            if isinstance(hint, str):
                if hint.strip():
                    self.words.append(hint.strip())
                continue
            if not isinstance(hint, Mapping) or not all(
                isinstance(hint.get(k), str) for k in ("hint", "pattern", "replace")
            ):
                raise ValueError(f"hints[{i}] must be a string or {{hint, pattern, replace}}")
            ignore = hint.get("ignore_case") is True or str(hint.get("ignore_case")) == "true"
            try:
                rule = re.compile(hint["pattern"], re.IGNORECASE if ignore else 0)
            except re.error as exc:
                raise ValueError(f"hints[{i}].pattern is not a regular expression: {exc}") from exc
            self.words.append(hint["hint"])
            self._rules.append((rule, hint["replace"]))

    def prompt(self) -> str:
        if not self.words:
            return ""
        return "The caller may use these words (speech recognition may mishear them): " + ", ".join(
            self.words
        )

    def apply(self, text: str) -> str:
        for rule, replacement in self._rules:
            # A literal replacement: backslashes in it are not group references.
            text = rule.sub(replacement.replace("\\", "\\\\"), text)
        return text
