"""transfer/execute to URLs, the request method and the fetcher, on a real 127.0.0.1 server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from swml_testkit import CALL, RecordingHost, main, run_script, serve

from callplane.engine.swml import (
    HttpSwmlFetcher,
    SwmlFetchError,
    build_fetch_body,
    perform_request,
)

YAML_DOC = """\
version: 1.0.0
sections:
  main:
    - play:
        url: 'say:yaml ${params.greeting}'
    - return: from-yaml
"""


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


def make_app(recorder: Recorder) -> Starlette:
    async def transfer_target(request: Request) -> Response:
        body = await request.json()
        recorder.requests.append(
            {"path": "/swml/transfer", "body": body, "headers": dict(request.headers)}
        )
        # The §7.5 shape, asserted by the server itself.
        assert set(body) == {"call", "vars", "envs", "params"}
        assert body["call"]["call_id"] == CALL["call_id"]
        assert body["call"]["headers"] == CALL["headers"]
        assert request.headers["content-type"] == "application/json"
        assert "application/yaml" in request.headers["accept"]
        doc = {
            "version": "1.0.0",
            "sections": {
                "main": [
                    {"play": {"url": "say:${params.who} ${vars.kept} ${envs.region}"}},
                    {"hangup": {}},
                ]
            },
        }
        return JSONResponse(doc)

    async def yaml_doc(request: Request) -> Response:
        recorder.requests.append({"path": "/swml/yaml", "method": request.method})
        return PlainTextResponse(YAML_DOC, media_type="application/yaml")

    async def broken(request: Request) -> Response:
        recorder.requests.append({"path": "/swml/broken"})
        return PlainTextResponse("oops", status_code=500)

    async def not_swml(request: Request) -> Response:
        return PlainTextResponse("<html>hi</html>", media_type="text/html")

    async def echo(request: Request) -> Response:
        raw = await request.body()
        recorder.requests.append(
            {
                "path": "/api/echo",
                "method": request.method,
                "headers": dict(request.headers),
                "body": raw.decode(),
                "query": dict(request.query_params),
            }
        )
        return JSONResponse(
            {"method": request.method, "joke": "a pun", "nested": {"n": 2}},
            headers={"X-Custom": "yes"},
        )

    async def slow(request: Request) -> Response:
        await asyncio.sleep(1)
        return JSONResponse({})

    async def missing(request: Request) -> Response:
        return PlainTextResponse("nope", status_code=404)

    return Starlette(
        routes=[
            Route("/swml/transfer", transfer_target, methods=["POST"]),
            Route("/swml/yaml", yaml_doc, methods=["GET", "POST"]),
            Route("/swml/broken", broken, methods=["GET", "POST"]),
            Route("/swml/html", not_swml, methods=["POST"]),
            Route("/api/echo", echo, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/api/slow", slow, methods=["GET"]),
            Route("/api/missing", missing, methods=["GET"]),
        ]
    )


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    async with serve(lambda: make_app(recorder)) as base:
        yield base, recorder


async def test_transfer_to_url_posts_fetch_body(server: tuple[str, Recorder]) -> None:
    base, recorder = server
    doc = main(
        {"set": {"kept": "carried"}},
        {"transfer": {"dest": f"{base}/swml/transfer", "params": {"who": "${call.from}"}}},
        {"play": {"url": "say:never"}},
    )
    outcome, host, interp = await run_script(doc, envs={"region": "eu"})
    assert outcome.kind == "hangup", outcome.error
    assert host.calls == [("play", {"url": "say:+15551230000 carried eu"}), ("hangup", {})]
    body = recorder.requests[0]["body"]
    assert body == {
        "call": CALL,
        "vars": {"kept": "carried"},
        "envs": {"region": "eu"},
        "params": {"who": "+15551230000"},
    }
    assert interp.document.origin == f"{base}/swml/transfer"


async def test_execute_url_returning_yaml(server: tuple[str, Recorder]) -> None:
    base, recorder = server
    doc = main(
        {"execute": {"dest": f"{base}/swml/yaml", "params": {"greeting": "hi"}}},
        {"play": {"url": "say:${return_value}"}},
    )
    outcome, host, _ = await run_script(doc)
    assert outcome.kind == "completed", outcome.error
    assert host.calls == [("play", {"url": "say:yaml hi"}), ("play", {"url": "say:from-yaml"})]
    assert recorder.requests == [{"path": "/swml/yaml", "method": "POST"}]


async def test_fetch_failure_ends_script_with_error(server: tuple[str, Recorder]) -> None:
    base, _ = server
    outcome, _, _ = await run_script(main({"transfer": {"dest": f"{base}/swml/broken"}}))
    assert outcome.kind == "error"
    assert "HTTP 500" in (outcome.error or "")
    outcome, _, _ = await run_script(main({"execute": {"dest": f"{base}/swml/html"}}))
    assert outcome.kind == "error"
    assert "text/html" in (outcome.error or "")


async def test_fetcher_fallback_url_and_get(server: tuple[str, Recorder]) -> None:
    base, recorder = server
    fetcher = HttpSwmlFetcher(timeout=5)
    body = build_fetch_body(CALL, {}, {"e": 1}, {})
    document = await fetcher.fetch(
        f"{base}/swml/broken", body, fallback_url=f"{base}/swml/yaml", method="GET"
    )
    assert document.origin == f"{base}/swml/yaml"
    assert document.sections["main"][1] == {"return": "from-yaml"}
    assert [r["path"] for r in recorder.requests] == ["/swml/broken", "/swml/yaml"]
    assert recorder.requests[1]["method"] == "GET"

    with pytest.raises(SwmlFetchError, match="fallback also failed"):
        await fetcher.fetch(f"{base}/swml/broken", body, fallback_url=f"{base}/swml/broken")
    with pytest.raises(SwmlFetchError, match="failed"):
        await fetcher.fetch("http://127.0.0.1:9/none", body)
    with pytest.raises(SwmlFetchError, match="http or https"):
        await fetcher.fetch("ftp://127.0.0.1/x", body)


def test_build_fetch_body_copies() -> None:
    vars_ = {"a": {"b": 1}}
    body = build_fetch_body(CALL, vars_, {}, {"p": 1})
    vars_["a"]["b"] = 2
    assert body["vars"] == {"a": {"b": 1}}
    assert list(body) == ["call", "vars", "envs", "params"]


async def test_request_method_against_local_server(server: tuple[str, Recorder]) -> None:
    base, recorder = server
    doc = main(
        {
            "request": {
                "url": f"{base}/api/echo?call=${{call.call_id}}",
                "method": "POST",
                "headers": {"X-Caller": "${call.from}", "Authorization": "Bearer t"},
                "body": {"from": "${call.from}", "n": 1},
                "timeout": 5,
                "connect_timeout": 2,
                "save_variables": True,
            }
        },
        {"play": {"url": "say:${request_response.joke} ${request_response.nested.n}"}},
        {"play": {"url": "say:${request_response_headers['x-custom']} ${request_response_code}"}},
    )
    outcome, host, _ = await run_script(doc)
    assert outcome.kind == "completed", outcome.error
    seen = recorder.requests[0]
    assert seen["method"] == "POST"
    assert seen["headers"]["x-caller"] == "+15551230000"
    assert seen["headers"]["authorization"] == "Bearer t"
    assert seen["headers"]["content-type"] == "application/json"
    assert json.loads(seen["body"]) == {"from": "+15551230000", "n": 1}
    assert seen["query"] == {"call": CALL["call_id"]}
    assert [p["url"] for _, p in host.calls] == ["say:a pun 2", "say:yes 200"]
    assert outcome.vars["request_result"] == "success"
    assert outcome.vars["return_value"] == "success"
    assert outcome.vars["request_url"].startswith(f"{base}/api/echo")
    assert json.loads(outcome.vars["request_response_body"])["method"] == "POST"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_request_methods_and_string_body(server: tuple[str, Recorder], method: str) -> None:
    base, recorder = server
    params: dict[str, Any] = {"url": f"{base}/api/echo", "method": method}
    if method == "PUT":
        params["body"] = "plain words"
    result = await perform_request(params)
    assert result["request_result"] == "success"
    assert "request_response" not in result  # save_variables not set
    seen = recorder.requests[0]
    assert seen["method"] == method
    if method == "PUT":
        assert seen["body"] == "plain words"
        assert seen["headers"]["content-type"] == "text/plain"


async def test_request_failures(server: tuple[str, Recorder]) -> None:
    base, _ = server
    missing = await perform_request({"url": f"{base}/api/missing", "method": "GET"})
    assert missing["request_result"] == "failed"
    assert missing["request_response_code"] == 404
    assert missing["request_response_body"] == "nope"
    loop = asyncio.get_running_loop()
    start = loop.time()
    slow = await perform_request({"url": f"{base}/api/slow", "method": "GET", "timeout": 0.2})
    assert slow == {
        "request_url": f"{base}/api/slow",
        "request_result": "failed",
        "return_value": "failed",
    }
    assert loop.time() - start < 0.9
    refused = await perform_request({"url": "http://127.0.0.1:9/", "method": "GET"})
    assert refused["request_result"] == "failed"


async def test_failed_request_clears_stale_response_vars(server: tuple[str, Recorder]) -> None:
    base, _ = server
    doc = main(
        {"request": {"url": f"{base}/api/echo", "method": "GET", "save_variables": "${save}"}},
        {"set": {"first": "${request_response.method}"}},
        {"request": {"url": "http://127.0.0.1:9/", "method": "GET"}},
    )
    outcome, _, _ = await run_script(doc, host=RecordingHost(), vars={"save": True})
    assert outcome.vars["first"] == "GET"
    assert outcome.vars["request_result"] == "failed"
    assert "request_response" not in outcome.vars
    assert "request_response_code" not in outcome.vars
