"""Language models: any OpenAI-compatible chat-completions endpoint (Ollama, llama.cpp's
server, vLLM, hosted services), streamed.

``LanguageModel.stream(messages, tools=..., model=...)`` yields :class:`TextDelta` pieces as the
reply streams (server-sent events, ``stream: true``) and ends with one :class:`Reply` holding
the whole text and the tool calls, whose ``arguments`` arrive in fragments and are only complete
at the end. Errors (connection, non-2xx, a malformed stream) raise :class:`LlmError`; the
caller decides what a failed turn means (the AI agent tells the caller and keeps the call).

The HTTP client is handed in: the server builds it through the outbound target policy
(``TargetPolicy.http_client``), so the model's address is vetted like every other target.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

# A reply that takes longer than this between two pieces is treated as a failed turn.
READ_TIMEOUT = 60.0
MAX_REPLY_CHARS = 200_000


class LlmError(RuntimeError):
    """The model could not answer (unreachable, refused, malformed stream)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


LlmEvent = TextDelta | Reply


@dataclass(frozen=True)
class LlmSettings:
    """The server's model: ``url`` is the API base (``http://127.0.0.1:11434/v1``)."""

    url: str
    model: str
    key: str | None = None


class LanguageModel(Protocol):
    model: str

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        model: str | None = None,
    ) -> AsyncIterator[LlmEvent]: ...


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAiChat:
    """Chat completions over ``POST {url}/chat/completions`` with ``stream: true``."""

    def __init__(self, settings: LlmSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.model = settings.model
        self._http = http
        self._endpoint = settings.url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.settings.key:
            headers["Authorization"] = f"Bearer {self.settings.key}"
        return headers

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        model: str | None = None,
    ) -> AsyncIterator[LlmEvent]:
        body: dict[str, Any] = {
            "model": model or self.model,
            "messages": list(messages),
            "stream": True,
        }
        if tools:
            body["tools"] = list(tools)
        text: list[str] = []
        size = 0
        calls: dict[int, _PartialCall] = {}
        finish: str | None = None
        try:
            async with self._http.stream(
                "POST",
                self._endpoint,
                json=body,
                headers=self._headers(),
                timeout=httpx.Timeout(READ_TIMEOUT, connect=5.0),
            ) as response:
                if response.status_code // 100 != 2:
                    detail = (await response.aread())[:300].decode("utf-8", "replace")
                    raise LlmError(f"the model answered {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    chunk = _sse_data(line)
                    if chunk is None:
                        continue
                    if chunk == "[DONE]":
                        break
                    for choice in _choices(chunk):
                        delta = choice.get("delta") or choice.get("message") or {}
                        piece = delta.get("content")
                        if isinstance(piece, str) and piece:
                            size += len(piece)
                            if size > MAX_REPLY_CHARS:
                                raise LlmError("the model's reply is too long")
                            text.append(piece)
                            yield TextDelta(piece)
                        for tc in delta.get("tool_calls") or ():
                            _merge_tool_call(calls, tc)
                        finish = choice.get("finish_reason") or finish
        except httpx.HTTPError as exc:
            raise LlmError(f"the model is unreachable: {exc!r}") from exc
        tool_calls = tuple(
            ToolCall(c.id or f"call_{i}", c.name, "".join(c.arguments))
            for i, c in sorted(calls.items())
            if c.name
        )
        yield Reply("".join(text), tool_calls, finish)


def _sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line (comments, event names and blanks are skipped)."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _choices(chunk: str) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(chunk)
    except ValueError as exc:
        raise LlmError(f"the model sent a malformed event: {chunk[:200]!r}") from exc
    if not isinstance(parsed, dict):
        raise LlmError(f"the model sent a malformed event: {chunk[:200]!r}")
    if "error" in parsed:
        raise LlmError(f"the model reported an error: {parsed['error']!r}"[:400])
    choices = parsed.get("choices") or []
    return [c for c in choices if isinstance(c, dict)]


def _merge_tool_call(calls: dict[int, _PartialCall], tc: Any) -> None:
    """Tool calls stream as fragments keyed by ``index``; the name and id come once."""
    if not isinstance(tc, dict):
        return
    index = tc.get("index", len(calls))
    if not isinstance(index, int):
        return
    partial = calls.setdefault(index, _PartialCall())
    if tc.get("id"):
        partial.id = str(tc["id"])
    function = tc.get("function") or {}
    if function.get("name") and not partial.name:
        partial.name = str(function["name"])
    if function.get("arguments"):
        partial.arguments.append(str(function["arguments"]))
