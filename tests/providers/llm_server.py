"""A local OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1.

Each test scripts the answers (one :class:`Turn` per request, in order), streamed as
server-sent events word by word, with tool calls split into fragments the way real servers
send them; every request body is recorded. It runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"


@dataclass
class Turn:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, args)
    first_token_delay: float = 0.0
    piece_delay: float = 0.01
    status: int = 200  # non-200: an error body instead of a stream


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class ModelServer:
    turns: list[Turn] = field(default_factory=list)
    default: Turn = field(default_factory=lambda: Turn("All right."))
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def script(self, *turns: Turn) -> None:
        self.turns.extend(turns)

    async def start(self) -> ModelServer:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def user_texts(self) -> list[str]:
        """The last user message of every request, in order."""
        out = []
        for r in self.requests:
            users = [m for m in r.body.get("messages", []) if m.get("role") == "user"]
            out.append(str(users[-1].get("content", "")) if users else "")
        return out

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
            self.requests.append(Request(path, headers, body, time.monotonic()))
            turn = self.turns.pop(0) if self.turns else self.default
            await self._answer(writer, turn, str(body.get("model", "")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, turn: Turn, model: str) -> None:
        if turn.status != 200:
            payload = json.dumps({"error": {"message": "scripted failure"}}).encode()
            writer.write(
                f"HTTP/1.1 {turn.status} Error\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(turn.first_token_delay)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await writer.drain()

        await send({"role": "assistant"})
        words = turn.text.split(" ") if turn.text else []
        for i, word in enumerate(words):
            await send({"content": word if i == 0 else " " + word})
            await asyncio.sleep(turn.piece_delay)
        for index, (name, args) in enumerate(turn.tool_calls):
            raw = json.dumps(args)
            half = len(raw) // 2
            await send(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": name, "arguments": raw[:half]},
                        }
                    ]
                }
            )
            await send({"tool_calls": [{"index": index, "function": {"arguments": raw[half:]}}]})
        await send({}, "tool_calls" if turn.tool_calls else "stop")
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
