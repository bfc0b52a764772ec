"""Fuzzing the command endpoint: no input may produce a 500 or crash the validator.

Two layers: the validator in-process (many examples, fast) and the real HTTP server (fewer
examples, end to end).  Inputs are random JSON, random bytes, and mutations of every example in
calling-openapi.yaml (so the fuzzer spends its time near valid requests, where the interesting
branches are).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_harness import CALL_ID, ServerThread, client_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callplane.api.commands import COMMANDS, Command, validate_request
from callplane.api.errors import for_problems

URL = "/api/calling/calls"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"


def _examples() -> list[dict[str, Any]]:
    path = REFERENCE / "calling-openapi.yaml"
    if not path.exists():
        return [{"command": "calling.end", "id": CALL_ID, "params": {"reason": "hangup"}}]
    spec = yaml.safe_load(path.read_text())
    examples = spec["paths"][URL]["post"]["requestBody"]["content"]["application/json"]
    return [e["value"] for e in examples["examples"].values()]


EXAMPLES = _examples()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["", " ", "stop", "start", "sip:a@b", "wss://x", "https://x", CALL_ID, "PCMU", "#"]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_paths(v, (*prefix, i)))
    return found


@st.composite
def mutated_examples(draw: st.DrawFn) -> Any:
    body = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    if draw(st.booleans()):
        body["command"] = draw(st.sampled_from(sorted(COMMANDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(body)
        target = draw(st.sampled_from(paths))
        if not target:
            return draw(json_values)
        parent = body
        for step in target[:-1]:
            parent = parent[step]
        last = target[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=10))] = draw(json_values)
        elif isinstance(parent[last], list):
            parent[last].append(draw(json_values))
    return body


bodies = (
    mutated_examples()
    | json_values
    | st.fixed_dictionaries(
        {
            "command": st.sampled_from(sorted(COMMANDS)),
            "id": st.just(CALL_ID),
            "params": json_values,
        }
    )
)


def _check_outcome(body: Any) -> None:
    before = copy.deepcopy(body)
    outcome = validate_request(body)
    assert body == before, "validation must not modify the request"
    if isinstance(outcome, Command):
        json.dumps(outcome.params, allow_nan=False)
        assert outcome.command in COMMANDS
    else:
        assert outcome, "a rejected request must say why"
        status, rendered = for_problems(outcome)
        assert status in (400, 422)
        json.dumps(rendered, allow_nan=False)


@settings(max_examples=1500, deadline=None)
@given(bodies)
def test_validator_never_crashes(body: Any) -> None:
    _check_outcome(body)


@settings(max_examples=300, deadline=None)
@given(mutated_examples())
def test_validator_is_idempotent_on_its_own_output(body: Any) -> None:
    """Canonical params are a fixed point: validating them again changes nothing."""
    outcome = validate_request(body)
    if isinstance(outcome, Command):
        again = {"command": outcome.command, "params": outcome.params}
        if outcome.call_id is not None:
            again["id"] = outcome.call_id
        second = validate_request(again)
        assert isinstance(second, Command)
        assert second.params == outcome.params


@pytest.fixture(scope="module")
def fuzz_client(server: ServerThread) -> Any:
    with client_for(server.base_url) as client:
        yield client


ALLOWED = {200, 400, 404, 409, 413, 422, 501}


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies | st.binary(max_size=64))
def test_http_never_answers_500(fuzz_client: httpx.Client, body: Any) -> None:
    if isinstance(body, bytes):
        response = fuzz_client.post(URL, content=body)
    else:
        response = fuzz_client.post(URL, content=json.dumps(body))
    assert response.status_code in ALLOWED, response.text
    payload = response.json()
    if response.status_code == 422:
        for item in payload["errors"]:
            assert set(item) == {"type", "code", "message", "attribute", "url"}
    elif response.status_code != 200:
        assert set(payload) == {"error"}
