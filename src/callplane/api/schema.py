"""A small validating-and-normalising schema language for the Calling API command params.

Why not pydantic models (one per command)?  We tried the trade-off on paper and chose a compact
hand-written combinator table, because what the reference asks of this layer is unusual:

* Error *codes* are the reference's §6.2 vocabulary (``not_a_string``, ``not_an_http_url``,
  ``invalid_codecs_format``, ``reserved_custom_variable_name`` ...), one code per rule.  With
  pydantic every rule would need a ``PydanticCustomError`` plus a translation table from
  pydantic's own error types, and union/``anyOf`` fields (play items, live actions, tap devices)
  would report one error per failed branch instead of one precise error.
* Normalisation ("liberal in, exact out") rewrites shapes *while* validating (flat play items,
  ``record.audio``, flat live_transcribe actions, refer/tap devices, CSV codecs, SWML strings).
  Doing that in ``mode="before"`` validators and then dumping the model back out loses the
  pass-through of unknown keys at every nesting level and reorders/fills fields; here each node
  simply returns its canonical value.
* Every problem in a request must be reported at once, with a dotted ``attribute`` path inside
  ``params`` — a single accumulator (``Ctx``) threaded through the walk does exactly that.

A validator is any callable ``(value, path, ctx) -> canonical value``.  It records problems in
``ctx`` and returns *something* (``INVALID`` when the value is unusable) so the walk can go on
and collect further problems.  Objects pass unknown keys through untouched (the published schema
is sealed, but the SDK's ``extras`` deliberately forwards keywords we may not know).  ``null`` for
an optional known key is treated as "absent" and dropped; for a required key it is
``missing_required_parameter`` (the SDK sends ``null`` only for ``extras`` entries).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from callplane.netpolicy import TargetPolicy, is_public

ERROR_DOCS_URL: Final = "https://signalwire.com/docs/apis/error-codes"


class _Invalid:
    """Marker returned for values that failed validation (never reaches the engine)."""

    _instance: _Invalid | None = None

    def __new__(cls) -> _Invalid:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


@dataclass(frozen=True)
class Problem:
    """One validation failure. ``status`` is 422 except for the few rules the spec makes a 400."""

    code: str
    message: str
    attribute: str | None
    status: int = 422

    def as_item(self) -> dict[str, Any]:
        return {
            "type": "validation_error",
            "code": self.code,
            "message": self.message,
            "attribute": self.attribute,
            "url": ERROR_DOCS_URL,
        }


@dataclass
class Ctx:
    """Accumulates problems; carries the app options some rules depend on."""

    targets: TargetPolicy = field(default_factory=TargetPolicy)
    problems: list[Problem] = field(default_factory=list)

    def fail(self, code: str, path: str, rule: str, *, status: int = 422) -> _Invalid:
        name = path or "params"
        self.problems.append(Problem(code, f"{name} {rule}", path or None, status))
        return INVALID


Validator = Callable[[Any, str, Ctx], Any]


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def is_number(value: Any) -> bool:
    # bool is an int subclass in Python but never a JSON number.
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --------------------------------------------------------------------------- scalars


def string(
    *,
    pattern: re.Pattern[str] | None = None,
    rule: str = "",
    code: str = "invalid_parameter",
    nonblank: bool = False,
) -> Validator:
    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            return ctx.fail("not_a_string", path, "must be a string")
        if nonblank and not value.strip():
            return ctx.fail("missing_required_parameter", path, "must not be blank")
        if pattern is not None and not pattern.fullmatch(value):
            return ctx.fail(code, path, rule)
        return value

    return check


def boolean() -> Validator:
    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, bool):
            return ctx.fail("not_a_boolean", path, "must be a boolean (true or false)")
        return value

    return check


def _range_rule(ge: float | None, le: float | None, gt: float | None) -> str:
    parts = []
    if gt is not None:
        parts.append(f"greater than {gt:g}")
    if ge is not None:
        parts.append(f"at least {ge:g}")
    if le is not None:
        parts.append(f"at most {le:g}")
    return " and ".join(parts)


def number(
    *, ge: float | None = None, le: float | None = None, gt: float | None = None
) -> Validator:
    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not is_number(value) or not math.isfinite(value):
            return ctx.fail("invalid_parameter", path, "must be a number")
        if (
            (ge is not None and value < ge)
            or (le is not None and value > le)
            or (gt is not None and value <= gt)
        ):
            return ctx.fail("invalid_parameter", path, "must be " + _range_rule(ge, le, gt))
        return value

    return check


def integer(*, ge: int | None = None, le: int | None = None, gt: int | None = None) -> Validator:
    def check(value: Any, path: str, ctx: Ctx) -> Any:
        # 30.0 is an integer on the wire for many JSON encoders: accept it, emit 30.
        if is_number(value) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return ctx.fail("invalid_parameter", path, "must be an integer")
        if (
            (ge is not None and value < ge)
            or (le is not None and value > le)
            or (gt is not None and value <= gt)
        ):
            return ctx.fail("invalid_parameter", path, "must be " + _range_rule(ge, le, gt))
        return value

    return check


def enum(values: Iterable[str], *, fold_case: bool = False) -> Validator:
    """String enum. With ``fold_case`` any casing is accepted and the canonical spelling emitted."""
    allowed = tuple(values)
    folded = {v.lower(): v for v in allowed}
    listing = ", ".join(allowed)

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            return ctx.fail("not_a_string", path, f"must be a string, one of: {listing}")
        if value in allowed:
            return value
        if fold_case and value.lower() in folded:
            return folded[value.lower()]
        return ctx.fail("invalid_parameter", path, f"must be one of: {listing}")

    return check


def json_object() -> Validator:
    """Free-form object (global_data, custom_parameters, user_event.event ...)."""

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, dict):
            return ctx.fail("must_be_object", path, "must be an object")
        return value

    return check


# --------------------------------------------------------------------------- URLs and addresses


def url(
    *, schemes: tuple[str, ...] = ("http", "https"), code: str = "not_an_http_url"
) -> Validator:
    """An absolute URL with one of ``schemes`` and a host.

    When the app's target policy denies private targets (``--private-targets deny``) a host
    that is a non-public address in any spelling, or a localhost name, is ``url_is_unsafe``
    (`callplane.netpolicy.TargetPolicy.refusal`; names are checked again, resolved, when
    callplane connects). A self-hosted callplane allows them by default because its
    webhooks and SWML servers usually live next door.
    """
    shown = " or ".join(f"{s}://" for s in schemes)

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            return ctx.fail("not_a_string", path, "must be a string")
        try:
            parts = urlsplit(value.strip())
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for an out-of-range port
        except ValueError:
            return ctx.fail("url_failed_to_parse", path, "could not be parsed as a URL")
        if parts.scheme.lower() not in schemes or not host:
            if code == "not_an_http_url":
                return ctx.fail(code, path, "must be a valid http or https url")
            return ctx.fail(code, path, f"must be a valid url starting with {shown}")
        default_port = 443 if parts.scheme.lower() in ("https", "wss") else 80
        reason = ctx.targets.refusal(host, parts.port or default_port)
        if reason is not None:
            rule = f"must not point to a private or local network ({reason})"
            return ctx.fail("url_is_unsafe", path, rule)
        return value.strip()

    return check


def public_ipv4() -> Validator:
    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            return ctx.fail("not_a_string", path, "must be a string")
        try:
            address = ipaddress.IPv4Address(value.strip())
        except ValueError:
            return ctx.fail("invalid_parameter", path, "must be an IPv4 address")
        if not ctx.targets.allow_private and not is_public(address):
            return ctx.fail(
                "invalid_parameter", path, "must be a public IPv4 address (private/reserved)"
            )
        return str(address)

    return check


# --------------------------------------------------------------------------- containers


def array(
    item: Validator,
    *,
    min_items: int = 0,
    strings: bool = False,
    unique: bool = False,
) -> Validator:
    """A JSON array; ``strings`` picks the ``not_an_array_of_strings`` code for the wrong type."""

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, list):
            if strings:
                return ctx.fail("not_an_array_of_strings", path, "must be an array of strings")
            return ctx.fail("invalid_parameter", path, "must be an array")
        if len(value) < min_items:
            return ctx.fail("invalid_parameter", path, f"must contain at least {min_items} item(s)")
        before = len(ctx.problems)
        out = [item(v, join(path, i), ctx) for i, v in enumerate(value)]
        if len(ctx.problems) > before:
            return INVALID
        if unique:
            seen: list[Any] = []
            for v in out:
                if v not in seen:
                    seen.append(v)
            out = seen
        return out

    return check


@dataclass(frozen=True)
class Obj:
    """An object with known fields; unknown keys pass through untouched.

    ``pre`` rewrites the raw dict before field validation (shape normalisation);
    ``post`` sees the canonical dict and adds cross-field problems.
    """

    fields: Mapping[str, Validator] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    pre: Callable[[dict[str, Any], str, Ctx], dict[str, Any]] | None = None
    post: Callable[[dict[str, Any], dict[str, Any], str, Ctx], None] | None = None
    code: str = "must_be_object"

    def __call__(self, value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, dict):
            return ctx.fail(self.code, path, "must be an object")
        if self.pre is not None:
            value = self.pre(dict(value), path, ctx)
        out: dict[str, Any] = {}
        before = len(ctx.problems)
        for key, raw in value.items():
            validator = self.fields.get(key)
            if validator is None:
                out[key] = raw  # unknown key: lenient pass-through
                continue
            if raw is None or (key in self.required and is_blank(raw)):
                continue  # null = absent; a blank required value is reported below, once
            canonical = validator(raw, join(path, key), ctx)
            if canonical is not INVALID:
                out[key] = canonical
        for key in sorted(self.required):
            if is_blank(value.get(key)):
                ctx.fail("missing_required_parameter", join(path, key), "is required")
        if self.post is not None:
            # Cross-field rules look at the raw presence of keys (``value``) so that a key
            # which failed its own check is not reported a second time as "missing".
            self.post(out, value, path, ctx)
        return out if len(ctx.problems) == before else INVALID


def obj(
    fields: Mapping[str, Validator] | None = None,
    *,
    required: Iterable[str] = (),
    pre: Callable[[dict[str, Any], str, Ctx], dict[str, Any]] | None = None,
    post: Callable[[dict[str, Any], dict[str, Any], str, Ctx], None] | None = None,
) -> Obj:
    return Obj(dict(fields or {}), frozenset(required), pre, post)


def flatten_into_params(raw: dict[str, Any], path: str, ctx: Ctx) -> dict[str, Any]:
    """``{"type": t, k: v}`` -> ``{"type": t, "params": {k: v}}`` (nested ``params`` wins)."""
    flat = {k: v for k, v in raw.items() if k not in ("type", "params")}
    if not flat:
        return raw
    nested = raw.get("params")
    if nested is not None and not isinstance(nested, dict):
        return raw  # let the params validator report the wrong type
    merged = {**flat, **(nested or {})}
    return {"type": raw.get("type"), "params": merged} if "type" in raw else {"params": merged}


def tagged(
    variants: Mapping[str, Obj],
    *,
    flat: bool = True,
    params_required: bool = True,
    infer_type: Callable[[dict[str, Any]], str | None] | None = None,
) -> Validator:
    """``{"type": <tag>, "params": {...}}`` with per-tag params; accepts the flat form too."""
    tag_check = enum(variants)

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, dict):
            return ctx.fail("must_be_object", path, "must be an object")
        raw = flatten_into_params(value, path, ctx) if flat else dict(value)
        if "type" not in raw and infer_type is not None:
            nested = raw.get("params")
            guessed = infer_type(nested if isinstance(nested, dict) else {})
            if guessed is not None:
                raw = {"type": guessed, **raw}
        if is_blank(raw.get("type")):
            return ctx.fail("missing_required_parameter", join(path, "type"), "is required")
        tag = tag_check(raw["type"], join(path, "type"), ctx)
        if tag is INVALID:
            return INVALID
        out = {k: v for k, v in raw.items() if k not in ("type", "params")}
        params = raw.get("params")
        if params is None:
            if not params_required:
                return {"type": tag, **out}
            # Validate an empty body so the error names the missing field ("params.url").
            params = {}
        canonical = variants[tag](params, join(path, "params"), ctx)
        if canonical is INVALID:
            return INVALID
        return {"type": tag, "params": canonical, **out}

    return check


# --------------------------------------------------------------------------- SWML


def _parse_swml_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return INVALID


def swml_document() -> Validator:
    """A SWML document: an object, or a JSON/YAML string of one (normalised to the object).

    Only the outer shape (``sections.main`` is an array; ``version`` a string) is checked here;
    the SWML interpreter validates the methods when it loads the document.
    """

    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if isinstance(value, str):
            value = _parse_swml_text(value)
            if not isinstance(value, dict):
                return ctx.fail(
                    "not_json_or_yaml", path, "must be a SWML object or a JSON/YAML string of one"
                )
        if not isinstance(value, dict):
            return ctx.fail("must_be_object", path, "must be a SWML object")
        sections = value.get("sections")
        if not isinstance(sections, dict):
            return ctx.fail(
                "invalid_parameter", join(path, "sections"), "must be an object of sections"
            )
        if not isinstance(sections.get("main"), list):
            return ctx.fail(
                "invalid_parameter", join(path, "sections.main"), "must be an array of SWML methods"
            )
        for name, body in sections.items():
            if not isinstance(body, list):
                return ctx.fail(
                    "invalid_parameter", join(path, f"sections.{name}"), "must be an array"
                )
        version = value.get("version")
        if version is not None and not isinstance(version, str):
            return ctx.fail("not_a_string", join(path, "version"), "must be a string")
        return value

    return check


UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def uuid_like() -> Validator:
    def check(value: Any, path: str, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            return ctx.fail("not_a_string", path, "must be a string (a call uuid)")
        if not UUID_RE.fullmatch(value.strip()):
            return ctx.fail("invalid_parameter", path, "must be a valid uuid")
        # Engine ids are lowercase uuid4 strings; canonical case makes lookups exact.
        return value.strip().lower()

    return check
