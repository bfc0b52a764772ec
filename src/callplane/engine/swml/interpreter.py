"""The SWML interpreter: runs a document against a call through the `SwmlHost` protocol.

The interpreter is sans-IO with respect to the call: it owns flow control (sections,
``goto``/``label``, ``execute``/``return``, ``transfer``, ``switch``/``cond``, ``set``/``unset``,
``request``, ``sleep``) and variable expansion, and hands every call-facing method (``answer``,
``play``, ``prompt``, ``connect``, ...) to ``await host.run_method(name, params)`` with the
parameters already expanded. The host returns the variables that method sets (``{"prompt_result":
"match_digits", "prompt_value": "12"}``); they are merged into ``vars``.

Control flow inside the interpreter uses private exceptions (`_ReturnSignal`, `_GotoSignal`, ...)
because ``return``/``goto``/``transfer``/``hangup`` may sit several nested blocks deep (inside a
``cond.then`` inside a ``switch.case``) and must unwind exactly to the construct that owns them.

Cancellation: `run()` executes the script in an inner task. `replace()` (REST ``update`` with new
SWML) cancels that task, which cancels whatever host awaitable is in flight, waits until it has
actually stopped, then `run()` continues with the new document and the same ``vars``. Cancelling
the task that awaits `run()` stops everything and propagates `CancelledError` as usual.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from .document import CALL_METHODS, SwmlDocument, load_document
from .errors import SwmlError, SwmlMethodNotSupported
from .expressions import (
    Scope,
    evaluate,
    evaluate_condition,
    expand,
    expand_string,
    has_placeholders,
    js_to_string,
    to_template_string,
)
from .web import HttpSwmlFetcher, SwmlFetcher, build_fetch_body, perform_request

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_STEPS",
    "OutcomeKind",
    "SwmlHost",
    "SwmlInterpreter",
    "SwmlOutcome",
]

log = logging.getLogger("callplane.engine.swml")

DEFAULT_MAX_DEPTH = 64
#: Methods executed per run (across transfers) before the script is declared runaway. Generous:
#: a goto loop is capped at 100 jumps, but nested loops and subroutines multiply.
DEFAULT_MAX_STEPS = 100_000
_YIELD_EVERY = 64

OutcomeKind = Literal["completed", "hangup", "returned", "error"]

#: Call-facing methods whose ``result`` (switch object or cond array) the interpreter runs after
#: the host returns, switching on ``<method>_result`` unless a variable is named.
_RESULT_METHODS = frozenset({"connect", "join_conference"})


class SwmlHost(Protocol):
    """What the engine implements to let a script act on its call."""

    async def run_method(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run call-facing method `name` with expanded `params`; return the variables it sets.

        Raise `SwmlMethodNotSupported(name)` for methods the engine does not implement; the
        script then ends with outcome ``error``. Any other exception also ends it with ``error``.
        Must be cancellation-safe: the interpreter cancels it on ``update``/``replace``.
        """
        ...


@dataclass
class SwmlOutcome:
    """How a script ended.

    * ``completed``: ran off the end of the top-level section;
    * ``hangup``: a ``hangup`` method ran (after the host hung up);
    * ``returned``: ``return`` at top level (``return_value`` holds its value, None if none);
    * ``error``: ``error`` holds the message (``path`` the method, ``method`` the unsupported
      method name when that was the cause).
    """

    kind: OutcomeKind
    return_value: Any = None
    error: str | None = None
    path: str | None = None
    method: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)


class _Signal(Exception):  # control flow, not an error
    pass


class _ReturnSignal(_Signal):
    def __init__(self, value: Any, has_value: bool) -> None:
        super().__init__()
        self.value = value
        self.has_value = has_value


class _HangupSignal(_Signal):
    pass


class _TransferSignal(_Signal):
    def __init__(self, document: SwmlDocument, section: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.document = document
        self.section = section
        self.params = params


class _GotoSignal(_Signal):
    def __init__(self, frame: _Frame, index: int) -> None:
        super().__init__()
        self.frame = frame
        self.index = index


@dataclass(eq=False)
class _Frame:
    """One running section (top level, or the callee of an ``execute``)."""

    document: SwmlDocument
    section: str
    params: dict[str, Any]
    labels: dict[str, int]
    # Jumps taken per goto statement (keyed by the identity of its params object), local to this
    # invocation so a subroutine's retry loop starts afresh every time it is executed.
    goto_counts: dict[int, int] = field(default_factory=dict)

    @property
    def base_path(self) -> str:
        prefix = "" if self.document.origin == "inline" else f"{self.document.origin}#"
        return f"{prefix}sections.{self.section}"


def _labels(methods: list[dict[str, Any]]) -> dict[str, int]:
    labels: dict[str, int] = {}
    for index, method in enumerate(methods):
        if isinstance(method, Mapping) and "label" in method and len(method) == 1:
            labels.setdefault(str(method["label"]), index)  # first occurrence wins
    return labels


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise SwmlError(f"{what} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise SwmlError(f"{what} must be an integer, got {value!r}")


_OPAQUE_KEYS = frozenset({"SWAIG"})
# `${global_data.x}` in an AI agent's params is the agent's to expand, with its global_data.
_AI_METHODS = frozenset({"ai", "ai_sidecar", "amazon_bedrock"})
_AI_KEPT = frozenset({"global_data"})


def _expand_call_params(value: Any, scope: Scope, keep: frozenset[str] = frozenset()) -> Any:
    """Expand a call-facing method's params, leaving alone what is not ours to expand.

    ``SWAIG`` (AI functions: their ``data_map`` templates use ``${args.*}`` expanded by the AI
    engine at function time) and inline ``confirm`` method lists (run later, on the callee leg,
    with that leg's variables) are passed through untouched.
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in _OPAQUE_KEYS or (key == "confirm" and isinstance(item, list)):
                out[key] = copy.deepcopy(item)
            else:
                out[key] = _expand_call_params(item, scope, keep)
        return out
    if isinstance(value, list):
        return [_expand_call_params(item, scope, keep) for item in value]
    return expand(value, scope, keep)


def _case_key(key: Any) -> str:
    return key if isinstance(key, str) else js_to_string(key)


class SwmlInterpreter:
    """Runs one SWML script for one call.

    `call` is the read-only ``call`` scope (reference §7.5 ``call`` object), `vars` the initial
    script variables (copied; read them back with `.vars`), `envs` the project variables merged
    with ``custom_variables``, `params` the initial ``params`` scope. `fetcher` fetches URL
    destinations of ``execute``/``transfer`` (default: `HttpSwmlFetcher`). `http_client` is used
    by the ``request`` method (default: a short-lived client per request).
    """

    def __init__(
        self,
        document: SwmlDocument | Mapping[str, Any] | str,
        host: SwmlHost,
        *,
        call: Mapping[str, Any],
        vars: Mapping[str, Any] | None = None,
        envs: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        fetcher: SwmlFetcher | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        self._document = _as_document(document)
        self._host = host
        self._call: dict[str, Any] = dict(call)
        self._vars: dict[str, Any] = dict(vars or {})
        self._envs: dict[str, Any] = dict(envs or {})
        self._params: dict[str, Any] = dict(params or {})
        self._fetcher: SwmlFetcher = fetcher or HttpSwmlFetcher()
        self._http_client = http_client
        self._max_depth = max_depth
        self._max_steps = max_steps
        self._depth = 0
        self._steps = 0
        self._started = False
        self._finished = False
        self._body: asyncio.Task[SwmlOutcome] | None = None
        self._replacement: tuple[SwmlDocument, dict[str, Any]] | None = None
        self._handlers: dict[str, Callable[[Any, _Frame, str], Awaitable[None]]] = {
            "cond": self._do_cond,
            "execute": self._do_execute,
            "goto": self._do_goto,
            "label": self._do_label,
            "request": self._do_request,
            "return": self._do_return,
            "set": self._do_set,
            "sleep": self._do_sleep,
            "switch": self._do_switch,
            "transfer": self._do_transfer,
            "unset": self._do_unset,
        }

    # ------------------------------------------------------------------ public API

    @property
    def vars(self) -> dict[str, Any]:
        """The live script variables (carry them into a new interpreter if you create one)."""
        return self._vars

    @property
    def document(self) -> SwmlDocument:
        """The document currently running (changes on ``transfer`` to a URL and on `replace`)."""
        return self._document

    @property
    def running(self) -> bool:
        return self._started and not self._finished

    async def run(self) -> SwmlOutcome:
        """Run the script to its end; see `SwmlOutcome`. May be called once."""
        if self._started:
            raise RuntimeError("SwmlInterpreter.run() may only be called once")
        self._started = True
        document, section, params = self._document, "main", self._params
        try:
            while True:
                body = asyncio.create_task(self._run_script(document, section, params))
                self._body = body
                outcome: SwmlOutcome | None = None
                try:
                    outcome = await body
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    external = current is not None and current.cancelling() > 0
                    if external or self._replacement is None:
                        body.cancel()
                        raise
                if self._replacement is not None:
                    # The old body finished or was cancelled by replace(): start the new script.
                    document, params = self._replacement
                    self._replacement = None
                    self._document, section = document, "main"
                    continue
                assert outcome is not None
                return outcome
        finally:
            self._finished = True
            self._body = None

    async def replace(
        self,
        document: SwmlDocument | Mapping[str, Any] | str,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> bool:
        """Stop the running script promptly and continue `run()` with `document` (same vars).

        Validates the document first (raising `SwmlError` without disturbing the running script),
        cancels the method in flight and waits until it has stopped. Returns False when `run()`
        has already finished (then create a new interpreter, passing `.vars`).
        """
        new = _as_document(document)
        if not self._started:
            self._document, self._params = new, dict(params or {})
            return True
        body = self._body
        if self._finished or body is None or body.done():
            return False
        self._replacement = (new, dict(params or {}))
        body.cancel()
        await asyncio.wait({body})
        return True

    # ------------------------------------------------------------------ script loop

    def _outcome(self, kind: OutcomeKind, **extra: Any) -> SwmlOutcome:
        return SwmlOutcome(kind=kind, vars=copy.deepcopy(self._vars), **extra)

    async def _run_script(
        self, document: SwmlDocument, section: str, params: dict[str, Any]
    ) -> SwmlOutcome:
        call_id = self._call.get("call_id")
        while True:
            self._depth = 0
            self._document = document
            try:
                await self._run_section(self._new_frame(document, section, params))
                return self._outcome("completed")
            except _TransferSignal as transfer:
                log.debug("SWML call %s: transfer to %s", call_id, transfer.section)
                document, section, params = transfer.document, transfer.section, transfer.params
            except _ReturnSignal as ret:
                self._set_return_value(ret)
                return self._outcome("returned", return_value=ret.value if ret.has_value else None)
            except _HangupSignal:
                return self._outcome("hangup")
            except SwmlMethodNotSupported as exc:
                log.warning("%s (call %s, at %s); script stopped", exc.message, call_id, exc.path)
                return self._outcome("error", error=str(exc), path=exc.path, method=exc.method)
            except SwmlError as exc:
                log.warning("SWML script failed (call %s): %s", call_id, exc)
                return self._outcome("error", error=str(exc), path=exc.path)
            except _GotoSignal:  # pragma: no cover - a section runner always catches its gotos
                return self._outcome("error", error="goto escaped its section")
            except Exception as exc:
                # A host method failed in a way it did not describe: end the script, keep the
                # traceback for the operator.
                log.exception("SWML host method failed (call %s)", call_id)
                return self._outcome("error", error=f"{type(exc).__name__}: {exc}")

    def _new_frame(self, document: SwmlDocument, section: str, params: dict[str, Any]) -> _Frame:
        methods = document.sections.get(section)
        if methods is None:
            raise SwmlError(f"no section named {section!r}")
        return _Frame(document, section, params, _labels(methods))

    def _scope(self, frame: _Frame) -> Scope:
        return Scope(call=self._call, vars=self._vars, envs=self._envs, params=frame.params)

    async def _run_section(self, frame: _Frame) -> None:
        methods = frame.document.sections[frame.section]
        base = frame.base_path
        index = 0
        while index < len(methods):
            try:
                await self._run_method(methods[index], frame, f"{base}[{index}]")
            except _GotoSignal as jump:
                if jump.frame is not frame:
                    raise
                index = jump.index + 1  # the label itself does nothing
                continue
            index += 1

    async def _run_block(self, methods: Any, frame: _Frame, path: str) -> None:
        if not isinstance(methods, list):
            raise SwmlError("must be an array of methods", path)
        for index, method in enumerate(methods):
            await self._run_method(method, frame, f"{path}[{index}]")

    async def _run_method(self, method: Any, frame: _Frame, path: str) -> None:
        self._steps += 1
        if self._steps > self._max_steps:
            raise SwmlError(
                f"more than {self._max_steps} methods executed; stopping a runaway script", path
            )
        if self._steps % _YIELD_EVERY == 0:
            # Pure flow-control loops never await; let other calls (and cancellation) in.
            await asyncio.sleep(0)
        if not isinstance(method, Mapping) or len(method) != 1:
            raise SwmlError("a method must be an object with exactly one key", path)
        name = next(iter(method))
        value = method[name]
        mpath = f"{path}.{name}"
        try:
            handler = self._handlers.get(name)
            if handler is not None:
                await handler(value, frame, mpath)
            elif name in CALL_METHODS:
                await self._run_call_method(name, value, frame, mpath)
            else:
                raise SwmlMethodNotSupported(name, "not a method of the SWML calling schema")
        except SwmlError as exc:
            if exc.path is None:
                exc.path = mpath
            raise

    # ------------------------------------------------------------------ call-facing methods

    async def _run_call_method(self, name: str, value: Any, frame: _Frame, path: str) -> None:
        raw = {} if value is None else value
        if not isinstance(raw, Mapping):
            raise SwmlError("parameters must be an object")
        result_spec: Any = None
        if name in _RESULT_METHODS and "result" in raw:
            raw = dict(raw)
            result_spec = raw.pop("result")
        # Expanded right before the method runs so that earlier `set`s and method outputs count.
        keep = _AI_KEPT if name in _AI_METHODS else frozenset()
        params = _expand_call_params(raw, self._scope(frame), keep)
        log.debug("SWML call %s: %s %s", self._call.get("call_id"), name, params)
        returned = await self._host.run_method(name, params)
        if returned:
            self._vars.update(returned)
        if name == "hangup":
            raise _HangupSignal()
        if result_spec is not None:
            await self._run_result(result_spec, f"{name}_result", frame, f"{path}.result")

    # ------------------------------------------------------------------ flow control

    async def _do_label(self, value: Any, frame: _Frame, path: str) -> None:
        return None

    async def _do_set(self, value: Any, frame: _Frame, path: str) -> None:
        if not isinstance(value, Mapping):
            raise SwmlError("set takes an object of variable name -> value")
        for key, item in value.items():
            # One at a time, so a later entry may use an earlier one.
            self._vars[str(key)] = copy.deepcopy(expand(item, self._scope(frame)))

    async def _do_unset(self, value: Any, frame: _Frame, path: str) -> None:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            raise SwmlError("unset takes a variable name or an array of names")
        for name in names:
            self._vars.pop(str(expand(name, self._scope(frame))), None)

    async def _do_sleep(self, value: Any, frame: _Frame, path: str) -> None:
        raw = value.get("duration") if isinstance(value, Mapping) else value
        millis = _as_int(expand(raw, self._scope(frame)), "sleep duration")
        if millis == -1:
            # Forever: only a hangup, an update or cancellation ends it.
            await asyncio.get_running_loop().create_future()
        elif millis < -1:
            raise SwmlError(f"sleep duration must be >= -1 ms, got {millis}")
        else:
            await asyncio.sleep(millis / 1000)

    async def _do_goto(self, value: Any, frame: _Frame, path: str) -> None:
        if not isinstance(value, Mapping) or "label" not in value:
            raise SwmlError("goto needs a 'label'")
        scope = self._scope(frame)
        label = to_template_string(expand(value["label"], scope))
        when = value.get("when")
        if when is not None and not evaluate_condition(when, scope):
            return
        limit = _as_int(expand(value.get("max", 100), scope), "goto.max")
        if not 1 <= limit <= 100:
            raise SwmlError(f"goto.max must be between 1 and 100, got {limit}")
        target = frame.labels.get(label)
        if target is None:
            raise SwmlError(f"no label {label!r} in section {frame.section!r}")
        key = id(value)
        taken = frame.goto_counts.get(key, 0)
        if taken >= limit:
            return  # exhausted: fall through to the next method
        frame.goto_counts[key] = taken + 1
        raise _GotoSignal(frame, target)

    def _variable_value(self, variable: Any, scope: Scope) -> Any:
        if not isinstance(variable, str):
            return variable
        if has_placeholders(variable):
            return expand_string(variable, scope)
        try:
            return evaluate(variable, scope)
        except SwmlError:
            # Not an expression (a name like "my-var"): look it up literally.
            return scope.lookup(variable)

    async def _run_switch(
        self, current: Any, cases: Any, default: Any, frame: _Frame, path: str
    ) -> None:
        if not isinstance(cases, Mapping):
            raise SwmlError("switch.case must be an object", f"{path}.case")
        text = to_template_string(current)
        for key, body in cases.items():
            if _case_key(key) == text:
                await self._run_block(body, frame, f"{path}.case.{key}")
                return
        if default is not None:
            await self._run_block(default, frame, f"{path}.default")

    async def _do_switch(self, value: Any, frame: _Frame, path: str) -> None:
        if not isinstance(value, Mapping) or "variable" not in value:
            raise SwmlError("switch needs 'variable' and 'case'")
        current = self._variable_value(value["variable"], self._scope(frame))
        await self._run_switch(current, value.get("case"), value.get("default"), frame, path)

    async def _do_cond(self, value: Any, frame: _Frame, path: str) -> None:
        single = isinstance(value, Mapping)
        items = [value] if single else value
        if not isinstance(items, list):
            raise SwmlError("cond takes an array of conditions")
        fallback: tuple[Any, str] | None = None
        for index, item in enumerate(items):
            ipath = path if single else f"{path}[{index}]"
            if not isinstance(item, Mapping):
                raise SwmlError("a condition must be an object", ipath)
            if "when" in item:
                if evaluate_condition(item["when"], self._scope(frame)):
                    await self._run_block(item.get("then", []), frame, f"{ipath}.then")
                    return
                if "else" in item and fallback is None:
                    fallback = (item["else"], f"{ipath}.else")
            elif "else" in item:
                if fallback is None:
                    fallback = (item["else"], f"{ipath}.else")
                break  # a bare else closes the chain
        # `else` runs "when none of the other conditions evaluate to true": the first one wins.
        if fallback is not None:
            await self._run_block(fallback[0], frame, fallback[1])

    async def _run_result(self, result: Any, variable: str, frame: _Frame, path: str) -> None:
        if isinstance(result, list):
            await self._do_cond(result, frame, path)
        elif isinstance(result, Mapping):
            name = result.get("variable") or variable
            current = self._variable_value(name, self._scope(frame))
            await self._run_switch(current, result.get("case"), result.get("default"), frame, path)
        else:
            raise SwmlError("result must be a switch object or a cond array", path)

    def _set_return_value(self, ret: _ReturnSignal) -> None:
        if ret.has_value:
            self._vars["return_value"] = ret.value
        else:
            self._vars.pop("return_value", None)

    async def _do_return(self, value: Any, frame: _Frame, path: str) -> None:
        result = copy.deepcopy(expand(value, self._scope(frame)))
        # `return: {}` is the documented "return with no value".
        has_value = not (result is None or (isinstance(result, Mapping) and not result))
        raise _ReturnSignal(result, has_value)

    def _dest_and_params(self, value: Any, frame: _Frame, what: str) -> tuple[str, dict[str, Any]]:
        if not isinstance(value, Mapping) or "dest" not in value:
            raise SwmlError(f"{what} needs a 'dest'")
        scope = self._scope(frame)
        raw = value["dest"]
        # Inline SWML is a script of its own: its placeholders belong to it (they are expanded
        # when its methods run, with its params), not to the caller.
        dest = raw if isinstance(raw, str) and _is_inline_swml(raw) else expand(raw, scope)
        if not isinstance(dest, str) or not dest.strip():
            raise SwmlError(f"{what}.dest must be a non-empty string, got {dest!r}")
        params = expand(value.get("params") or {}, scope)
        if not isinstance(params, Mapping):
            raise SwmlError(f"{what}.params must be an object")
        return dest.strip(), copy.deepcopy(dict(params))

    async def _resolve_dest(
        self, dest: str, frame: _Frame, params: dict[str, Any], what: str
    ) -> tuple[SwmlDocument, str]:
        lowered = dest.lower()
        if lowered.startswith(("http://", "https://")):
            body = build_fetch_body(self._call, self._vars, self._envs, params)
            return await self._fetcher.fetch(dest, body, method="POST"), "main"
        if _is_inline_swml(dest):
            return load_document(dest, origin="inline"), "main"
        if lowered.startswith("relay:"):
            raise SwmlMethodNotSupported(what, f"relay: destinations ({dest})")
        if dest in frame.document.sections:
            return frame.document, dest
        raise SwmlError(f"{what}.dest {dest!r} is not a section, an http(s) URL or inline SWML")

    async def _do_execute(self, value: Any, frame: _Frame, path: str) -> None:
        dest, params = self._dest_and_params(value, frame, "execute")
        if self._depth >= self._max_depth:
            raise SwmlError(f"execute nested deeper than {self._max_depth} levels")
        document, section = await self._resolve_dest(dest, frame, params, "execute")
        callee = self._new_frame(document, section, params)
        self._depth += 1
        try:
            await self._run_section(callee)
        except _ReturnSignal as ret:
            self._set_return_value(ret)
        else:
            self._vars.pop("return_value", None)  # ran off the end: nothing returned
        finally:
            self._depth -= 1
        if value.get("on_return") is not None:
            await self._run_block(value["on_return"], frame, f"{path}.on_return")
        if value.get("result") is not None:
            await self._run_result(value["result"], "return_value", frame, f"{path}.result")

    async def _do_transfer(self, value: Any, frame: _Frame, path: str) -> None:
        dest, params = self._dest_and_params(value, frame, "transfer")
        document, section = await self._resolve_dest(dest, frame, params, "transfer")
        raise _TransferSignal(document, section, params)

    async def _do_request(self, value: Any, frame: _Frame, path: str) -> None:
        if not isinstance(value, Mapping) or "url" not in value or "method" not in value:
            raise SwmlError("request needs 'url' and 'method'")
        params = expand(value, self._scope(frame))
        result = await perform_request(params, client=self._http_client)
        # Drop the previous request's response so that nothing stale survives a failure.
        for key in (
            "request_response",
            "request_response_code",
            "request_response_body",
            "request_response_headers",
        ):
            self._vars.pop(key, None)
        self._vars.update(result)


def _is_inline_swml(dest: str) -> bool:
    text = dest.lstrip()
    return text.startswith("{") or ("\n" in text and "sections" in text)


def _as_document(document: SwmlDocument | Mapping[str, Any] | str) -> SwmlDocument:
    if isinstance(document, SwmlDocument):
        return document
    return load_document(document)
