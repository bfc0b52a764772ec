"""The AI agent's prompts (swml.md §2.4, schema ``AIPrompt*``, ``POM``, ``Contexts``): pure
functions and one small state machine, no I/O.

* **POM** (Prompt Object Model): a list of sections (``title``, ``body``, ``bullets``,
  ``subsections``, ``numbered``, ``numberedBullets``) rendered to markdown (headings ``##``,
  ``###``, ... by depth; numbered sections ``## 1. Title``, ``### 1.1. Title``) or to XML
  (``params.pom_format: xml``), the text the model reads as its system prompt.
* **Contexts**: ``prompt.contexts`` names conversation contexts (``default`` first), each a
  list of steps (``text`` or ``pom``, ``step_criteria``, ``valid_steps``, ``valid_contexts``,
  ``functions``, ``end``). :class:`ConversationFlow` holds where the conversation is, renders
  the current context and step into the system prompt and offers the model two tools,
  ``next_step`` and ``change_context``, limited to the moves the step allows; SWAIG actions
  ``change_step`` / ``change_context`` take the same paths. A step's ``functions`` limit the
  SWAIG functions offered while it is current; entering an ``isolated`` context drops the
  conversation so far. A context's ``exit_fillers`` / ``enter_fillers`` (phrases by language
  code, ``FunctionFillers``) are what the agent says when the conversation leaves / enters it;
  a step with ``skip_user_turn`` moves on to its next step once the agent has had its turn,
  without waiting for the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["ConversationFlow", "FlowError", "prompt_text", "render_pom"]


class FlowError(ValueError):
    """A prompt, POM or contexts object the agent cannot use (the message names the part)."""


# ---------------------------------------------------------------------------------------- POM


def render_pom(sections: Any, fmt: str = "markdown", where: str = "pom") -> str:
    """A POM section list as markdown (default) or XML text. Raises FlowError on a malformed
    section (neither ``body`` nor ``bullets``, wrong types)."""
    if fmt not in ("markdown", "xml"):
        raise FlowError(f"params.pom_format must be markdown or xml, not {fmt!r}")
    checked = _check_sections(sections, where)
    if fmt == "xml":
        return "<prompt>\n" + "".join(_xml(s, 1) for s in checked) + "</prompt>"
    return "\n\n".join(_markdown(checked, 2, "")).strip()


def _check_sections(sections: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(sections, list) or not sections:
        raise FlowError(f"{where} must be a non-empty list of sections")
    for i, s in enumerate(sections):
        at = f"{where}[{i}]"
        if not isinstance(s, Mapping):
            raise FlowError(f"{at} must be an object")
        body, bullets = s.get("body"), s.get("bullets")
        if body is None and bullets is None:
            raise FlowError(f"{at} needs a body or bullets")
        if body is not None and not isinstance(body, str):
            raise FlowError(f"{at}.body must be a string")
        if bullets is not None and (
            not isinstance(bullets, list) or not all(isinstance(b, str) for b in bullets)
        ):
            raise FlowError(f"{at}.bullets must be a list of strings")
        if s.get("title") is not None and not isinstance(s.get("title"), str):
            raise FlowError(f"{at}.title must be a string")
        if s.get("subsections") is not None:
            _check_sections(s["subsections"], f"{at}.subsections")
    return sections


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _markdown(sections: Sequence[Mapping[str, Any]], level: int, prefix: str) -> list[str]:
    parts: list[str] = []
    number = 0
    for s in sections:
        lines: list[str] = []
        title = s.get("title")
        label = prefix
        if _flag(s.get("numbered")):
            number += 1
            label = f"{prefix}{number}."
        if title:
            lines.append(f"{'#' * min(level, 6)} {f'{label} ' if label else ''}{title}")
        if s.get("body"):
            lines.append(str(s["body"]))
        bullets = s.get("bullets") or []
        if bullets:
            numbered = _flag(s.get("numberedBullets"))
            lines.append(
                "\n".join(
                    f"{k}. {b}" if numbered else f"- {b}" for k, b in enumerate(bullets, start=1)
                )
            )
        parts.append("\n\n".join(lines))
        if s.get("subsections"):
            parts.extend(_markdown(s["subsections"], level + 1, label))
    return parts


def _xml(s: Mapping[str, Any], depth: int) -> str:
    pad = "  " * depth
    out = [f"{pad}<section>\n"]
    if s.get("title"):
        out.append(f"{pad}  <title>{escape(str(s['title']))}</title>\n")
    if s.get("body"):
        out.append(f"{pad}  <body>{escape(str(s['body']))}</body>\n")
    if s.get("bullets"):
        out.append(f"{pad}  <bullets>\n")
        out.extend(f"{pad}    <bullet>{escape(str(b))}</bullet>\n" for b in s["bullets"])
        out.append(f"{pad}  </bullets>\n")
    if s.get("subsections"):
        out.append(f"{pad}  <subsections>\n")
        out.extend(_xml(sub, depth + 2) for sub in s["subsections"])
        out.append(f"{pad}  </subsections>\n")
    out.append(f"{pad}</section>\n")
    return "".join(out)


def prompt_text(prompt: Any, fmt: str = "markdown", where: str = "prompt") -> str:
    """The instructions of a ``prompt`` / ``post_prompt`` / context / step object: its
    ``text``, or its ``pom`` rendered. A bare string is its own text."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, Mapping):
        raise FlowError(f"{where} must be an object")
    if prompt.get("pom") is not None:
        return render_pom(prompt["pom"], fmt, f"{where}.pom")
    text = prompt.get("text")
    if text is not None and not isinstance(text, str):
        raise FlowError(f"{where}.text must be a string")
    return text or ""


# ----------------------------------------------------------------------------------- contexts


class ConversationFlow:
    """Where the conversation is among ``prompt.contexts``: a context and one of its steps.

    Sans-IO: the agent asks for the prompt text and the tools, and hands over the model's (or a
    SWAIG action's) moves; each move answers the text the model gets as the tool's result.
    """

    def __init__(self, contexts: Any, fmt: str = "markdown") -> None:
        if not isinstance(contexts, Mapping) or "default" not in contexts:
            raise FlowError("prompt.contexts must be an object with a 'default' context")
        self._fmt = fmt
        self._contexts: dict[str, Mapping[str, Any]] = {}
        self._texts: dict[str, str] = {}
        self._steps: dict[str, list[Mapping[str, Any]]] = {}
        self._step_texts: dict[tuple[str, str], str] = {}
        for name, ctx in contexts.items():
            where = f"prompt.contexts.{name}"
            if not isinstance(ctx, Mapping):
                raise FlowError(f"{where} must be an object")
            steps = ctx.get("steps")
            if not isinstance(steps, list) or not steps:
                raise FlowError(f"{where}.steps must be a non-empty list")
            for kind in ("enter_fillers", "exit_fillers"):
                _check_fillers(ctx.get(kind), f"{where}.{kind}")
            self._contexts[str(name)] = ctx
            self._texts[str(name)] = prompt_text(
                {k: ctx[k] for k in ("text", "pom") if k in ctx}, fmt, where
            )
            seen: list[Mapping[str, Any]] = []
            for i, step in enumerate(steps):
                at = f"{where}.steps[{i}]"
                if not isinstance(step, Mapping) or not isinstance(step.get("name"), str):
                    raise FlowError(f"{at} must be an object with a name")
                if step["name"] == "next" or any(s["name"] == step["name"] for s in seen):
                    raise FlowError(f"{at}.name {step['name']!r} is reserved or repeated")
                if step.get("text") is None and step.get("pom") is None:
                    raise FlowError(f"{at} needs a text or a pom")
                self._step_texts[(str(name), step["name"])] = prompt_text(step, fmt, at)
                seen.append(step)
            self._steps[str(name)] = seen
        for name, steps in self._steps.items():
            names = {s["name"] for s in steps}
            for i, step in enumerate(steps):
                at = f"prompt.contexts.{name}.steps[{i}]"
                for target in step.get("valid_steps") or []:
                    if target != "next" and target not in names:
                        raise FlowError(f"{at}.valid_steps names no step: {target!r}")
                for target in step.get("valid_contexts") or []:
                    if target not in self._contexts:
                        raise FlowError(f"{at}.valid_contexts names no context: {target!r}")
        self.context = "default"
        self.step = self._steps["default"][0]["name"]

    # -- where we are --------------------------------------------------------------------

    def _current(self) -> Mapping[str, Any]:
        return next(s for s in self._steps[self.context] if s["name"] == self.step)

    def next_steps(self) -> list[str]:
        """The steps the current one may move to: its ``valid_steps`` (``next`` = the following
        step), else the following step; none after an ``end`` step."""
        step = self._current()
        if _flag(step.get("end")):
            return []
        names = [s["name"] for s in self._steps[self.context]]
        following = names[names.index(self.step) + 1 :][:1]
        valid = step.get("valid_steps") or []
        if not valid:
            return following
        out: list[str] = []
        for target in valid:
            for name in following if target == "next" else [target]:
                if name not in out:
                    out.append(name)
        return out

    def next_contexts(self) -> list[str]:
        return [str(c) for c in self._current().get("valid_contexts") or []]

    def allowed_functions(self) -> set[str] | None:
        """The SWAIG functions the current step allows (None: all of them)."""
        functions = self._current().get("functions")
        return None if functions is None else {str(f) for f in functions}

    def skips_user_turn(self) -> bool:
        return _flag(self._current().get("skip_user_turn"))

    def fillers(self, context: str, kind: str, language: str) -> list[str]:
        """A context's ``enter_fillers`` / ``exit_fillers`` for `language` (``en-US``): that
        code's, else its primary language's (``en``), else ``auto``'s (said as written: there
        is no translation here), else ``default``'s."""
        fillers = self._contexts[context].get(kind)
        if not fillers:
            return []
        for key in (language, language.split("-")[0], "auto", "default"):
            if fillers.get(key):
                return [str(f) for f in fillers[key]]
        return []

    def prompt(self) -> str:
        """The current context and step, as a section of the system prompt."""
        parts: list[str] = []
        if self._texts[self.context]:
            parts.append(self._texts[self.context])
        step = self._current()
        parts.append(
            f"## Current step: {self.step}\n\n{self._step_texts[(self.context, self.step)]}"
        )
        moves: list[str] = []
        if step.get("step_criteria"):
            moves.append(f"This step is complete when: {step['step_criteria']}")
        if self.next_steps():
            moves.append(
                "When it is complete, call next_step with one of: "
                + ", ".join(self.next_steps())
                + "."
            )
        if self.next_contexts():
            moves.append(
                "To change the subject, call change_context with one of: "
                + ", ".join(self.next_contexts())
                + "."
            )
        if moves:
            parts.append("\n".join(moves))
        return "\n\n".join(parts)

    def tools(self) -> list[dict[str, Any]]:
        """``next_step`` / ``change_context`` tool definitions for the moves allowed now."""
        tools: list[dict[str, Any]] = []
        if self.next_steps():
            tools.append(
                _tool(
                    "next_step",
                    "Move the conversation to the next step once the current step is complete.",
                    "step",
                    self.next_steps(),
                )
            )
        if self.next_contexts():
            tools.append(
                _tool(
                    "change_context",
                    "Switch the conversation to another context.",
                    "context",
                    self.next_contexts(),
                )
            )
        return tools

    # -- moves ---------------------------------------------------------------------------

    def move_step(self, name: str, *, forced: bool = False) -> str:
        """To step `name` of the current context (``next``: the following one). `forced`
        (a SWAIG ``change_step`` action) may go to any step; the model only to allowed ones."""
        if name == "next":
            following = self.next_steps()[:1]
            if not following:
                raise FlowError("there is no next step")
            name = following[0]
        names = [s["name"] for s in self._steps[self.context]]
        if name not in names or (not forced and name not in self.next_steps()):
            raise FlowError(f"step {name!r} cannot be reached from step {self.step!r}")
        self.step = name
        return f"Now in step {name!r}. Follow its instructions."

    def move_context(self, name: str, *, forced: bool = False) -> tuple[str, bool]:
        """To context `name` (its first step); returns the tool's answer and whether the
        context is ``isolated`` (the conversation so far is to be dropped)."""
        if name not in self._contexts or (not forced and name not in self.next_contexts()):
            raise FlowError(f"context {name!r} cannot be reached from step {self.step!r}")
        self.context = name
        self.step = self._steps[name][0]["name"]
        isolated = _flag(self._contexts[name].get("isolated"))
        return f"Now in context {name!r}, step {self.step!r}.", isolated

    def answer(self, tool: str, arguments: str) -> tuple[str, bool]:
        """Apply the model's ``next_step`` / ``change_context`` call (JSON arguments); returns
        the tool result and whether the conversation is to be reset."""
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            args = {}
        if not isinstance(args, Mapping):
            args = {}
        try:
            if tool == "next_step":
                return self.move_step(str(args.get("step") or "next")), False
            return self.move_context(str(args.get("context") or ""))
        except FlowError as exc:
            return f"error: {exc}", False


def _check_fillers(fillers: Any, where: str) -> None:
    if fillers is None:
        return
    if not isinstance(fillers, Mapping) or not all(
        isinstance(v, list) and all(isinstance(f, str) for f in v) for v in fillers.values()
    ):
        raise FlowError(f"{where} must be an object of language code -> list of phrases")


def _tool(name: str, description: str, arg: str, choices: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {arg: {"type": "string", "enum": choices}},
                "required": [arg],
            },
        },
    }
