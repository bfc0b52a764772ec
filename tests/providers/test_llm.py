"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1 (llm_server)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from callplane.netpolicy import TargetPolicy
from callplane.providers.llm import LlmError, LlmSettings, OpenAiChat, Reply, TextDelta

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import ModelServer, Turn


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    server = await ModelServer().start()
    yield server
    await server.stop()


async def collect(chat: OpenAiChat, **kwargs: object) -> tuple[list[str], Reply]:
    pieces: list[str] = []
    reply: Reply | None = None
    async for event in chat.stream([{"role": "user", "content": "hi"}], **kwargs):  # type: ignore[arg-type]
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        else:
            reply = event
    assert reply is not None
    return pieces, reply


async def test_a_streamed_reply_arrives_piece_by_piece_and_the_request_is_recorded(
    model: ModelServer,
) -> None:
    model.script(Turn("We are open from nine to five."))
    async with TargetPolicy().http_client(timeout=httpx.Timeout(5.0)) as http:
        chat = OpenAiChat(LlmSettings(model.url, "tiny", "sekrit"), http)
        pieces, reply = await collect(chat, model="override")
    assert len(pieces) == 7
    assert "".join(pieces) == reply.text == "We are open from nine to five."
    assert reply.tool_calls == () and reply.finish_reason == "stop"
    (request,) = model.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sekrit"
    assert request.body["model"] == "override" and request.body["stream"] is True
    assert request.body["messages"] == [{"role": "user", "content": "hi"}]
    assert "tools" not in request.body


async def test_tool_calls_are_joined_from_their_fragments(model: ModelServer) -> None:
    model.script(Turn(tool_calls=[("transfer_to_sales", {"reason": "pricing", "n": 2})]))
    tools = [{"type": "function", "function": {"name": "transfer_to_sales", "parameters": {}}}]
    async with TargetPolicy().http_client(timeout=httpx.Timeout(5.0)) as http:
        chat = OpenAiChat(LlmSettings(model.url, "tiny"), http)
        pieces, reply = await collect(chat, tools=tools)
    assert pieces == [] and reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert call.name == "transfer_to_sales" and call.id == "call_0"
    assert json.loads(call.arguments) == {"reason": "pricing", "n": 2}
    assert model.requests[0].body["tools"] == tools
    assert "authorization" not in model.requests[0].headers


async def test_an_error_status_and_an_unreachable_model_raise_llm_error(
    model: ModelServer,
) -> None:
    model.script(Turn(status=500))
    async with TargetPolicy().http_client(timeout=httpx.Timeout(5.0)) as http:
        chat = OpenAiChat(LlmSettings(model.url, "tiny"), http)
        with pytest.raises(LlmError, match="500"):
            await collect(chat)
        await model.stop()
        gone = OpenAiChat(LlmSettings("http://127.0.0.1:9/v1", "tiny"), http)
        with pytest.raises(LlmError, match="unreachable"):
            await collect(gone)


async def test_the_target_policy_applies_to_the_model(model: ModelServer) -> None:
    async with TargetPolicy.from_setting("deny").http_client(timeout=httpx.Timeout(5.0)) as http:
        chat = OpenAiChat(LlmSettings(model.url, "tiny"), http)
        with pytest.raises(LlmError):
            await collect(chat)
    assert model.requests == []
