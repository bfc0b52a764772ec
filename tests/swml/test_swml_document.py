"""Loading SWML from dicts, JSON and YAML; structural validation with paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from callplane.engine.swml import (
    ALL_METHODS,
    CALL_METHODS,
    FLOW_METHODS,
    METHOD_VARIABLES,
    SwmlDocument,
    SwmlError,
    load_document,
)

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "reference" / "swml-calling.schema.json"


def test_method_catalogue_has_all_43() -> None:
    assert len(ALL_METHODS) == 43
    assert not FLOW_METHODS & CALL_METHODS


@pytest.mark.skipif(not SCHEMA.exists(), reason="shared reference schema not available")
def test_method_catalogue_matches_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    defs = schema["$defs"]
    names = set()
    for ref in defs["SWMLMethod"]["anyOf"]:
        definition = defs[ref["$ref"].rsplit("/", 1)[-1]]
        names.add(definition["required"][0])
    assert names == set(ALL_METHODS)


def test_method_variables_cover_known_call_methods() -> None:
    assert set(METHOD_VARIABLES) <= CALL_METHODS
    assert "connect_result" in METHOD_VARIABLES["connect"]


def test_load_dict_json_yaml_equivalent() -> None:
    as_dict = {
        "version": "1.0.0",
        "sections": {"main": [{"answer": {}}, {"play": {"url": "say:hi"}}, {"hangup": {}}]},
    }
    as_json = json.dumps(as_dict)
    as_yaml = """
version: 1.0.0
sections:
  main:
    - answer: {}
    - play:
        url: 'say:hi'
    - hangup: {}
"""
    docs = [load_document(as_dict), load_document(as_json), load_document(as_yaml)]
    assert all(isinstance(d, SwmlDocument) for d in docs)
    assert docs[0].sections == docs[1].sections == docs[2].sections
    assert docs[2].version == "1.0.0"
    assert load_document(as_json.encode(), content_type="application/json").sections


def test_version_optional_and_checked() -> None:
    assert load_document({"sections": {"main": []}}).version == "1.0.0"
    with pytest.raises(SwmlError) as info:
        load_document({"version": "2.0.0", "sections": {"main": []}})
    assert info.value.path == "version"


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        ({}, "sections", "'sections' is required"),
        ({"sections": []}, "sections", "must be an object"),
        ({"sections": {"other": []}}, "sections.main", "'main' section is required"),
        ({"sections": {"main": {}}}, "sections.main", "array of methods"),
        ({"sections": {"main": ["answer"]}}, "sections.main[0]", "object with one key"),
        (
            {"sections": {"main": [{"answer": {}, "hangup": {}}]}},
            "sections.main[0]",
            "exactly one key",
        ),
        ({"sections": {"main": [{"play": {}}]}}, "sections.main[0].play", "exactly one of"),
        (
            {"sections": {"main": [{"answer": {}}, {"play": {"url": 5}}]}},
            "sections.main[1].play.url",
            "must be a string, got number",
        ),
        (
            {"sections": {"main": [{"play": {"url": "say:x", "urls": ["say:y"]}}]}},
            "sections.main[0].play",
            "exactly one of",
        ),
        ({"sections": {"main": [{"goto": {}}]}}, "sections.main[0].goto.label", "'label'"),
        (
            {"sections": {"main": [{"goto": {"label": "a", "max": 0}}]}},
            "sections.main[0].goto.max",
            "between 1 and 100",
        ),
        (
            {"sections": {"main": [{"request": {"url": "http://x", "method": "PATCH"}}]}},
            "sections.main[0].request.method",
            "GET, POST, PUT or DELETE",
        ),
        (
            {"sections": {"main": [{"request": {"url": "http://x"}}]}},
            "sections.main[0].request.method",
            "missing required",
        ),
        ({"sections": {"main": [{"sleep": -5}]}}, "sections.main[0].sleep", ">= -1"),
        ({"sections": {"main": [{"sleep": "soon"}]}}, "sections.main[0].sleep", "integer"),
        (
            {"sections": {"main": [{"sleep": {"seconds": 1}}]}},
            "sections.main[0].sleep.duration",
            "missing",
        ),
        ({"sections": {"main": [{"label": 5}]}}, "sections.main[0].label", "non-empty string"),
        ({"sections": {"main": [{"unset": 5}]}}, "sections.main[0].unset", "variable name"),
        ({"sections": {"main": [{"set": [1]}]}}, "sections.main[0].set", "must be an object"),
        (
            {"sections": {"main": [{"switch": {"case": {}}}]}},
            "sections.main[0].switch.variable",
            "missing",
        ),
        (
            {"sections": {"main": [{"cond": [{"when": "a == 1"}]}]}},
            "sections.main[0].cond[0].then",
            "missing",
        ),
        (
            {"sections": {"main": [{"cond": [{"when": "1", "then": [{"play": {}}]}]}]}},
            "sections.main[0].cond[0].then[0].play",
            "exactly one of",
        ),
        (
            {
                "sections": {
                    "main": [],
                    "sub": [{"switch": {"variable": "v", "case": {"1": [{"hangup": 1}]}}}],
                }
            },
            "sections.sub[0].switch.case.1[0].hangup",
            "must be an object",
        ),
        (
            {"sections": {"main": [{"hangup": {"reason": "rude"}}]}},
            "sections.main[0].hangup.reason",
            "one of hangup, busy, decline",
        ),
        (
            {"sections": {"main": [{"execute": {"dest": "s", "result": 5}}]}},
            "sections.main[0].execute.result",
            "switch object or a cond array",
        ),
        (
            {"sections": {"main": [{"execute": {"dest": "s", "on_return": [{"x": 1, "y": 2}]}}]}},
            "sections.main[0].execute.on_return[0]",
            "exactly one key",
        ),
        (
            {"sections": {"main": [{"send_digits": {}}]}},
            "sections.main[0].send_digits.digits",
            "missing required",
        ),
        (
            {"sections": {"main": [{"answer": {"max_duration": True}}]}},
            "sections.main[0].answer.max_duration",
            "boolean",
        ),
    ],
)
def test_structural_errors_have_paths(document: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(SwmlError) as info:
        load_document(document)
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value).startswith(path + ": ")


def test_swml_vars_accepted_for_numbers_and_booleans() -> None:
    load_document(
        {
            "sections": {
                "main": [
                    {"goto": {"label": "x", "max": "${vars.n}"}},
                    {"sleep": {"duration": "%{vars.ms}"}},
                    {"play": {"url": "say:x", "volume": "${vars.vol}", "auto_answer": "${a}"}},
                    {"request": {"url": "http://x", "method": "GET", "save_variables": "${s}"}},
                ]
            }
        }
    )


def test_unknown_method_is_execution_time_unless_strict() -> None:
    document: dict[str, Any] = {"sections": {"main": [{"frobnicate": {}}]}}
    assert load_document(document).sections["main"] == [{"frobnicate": {}}]
    with pytest.raises(SwmlError) as info:
        load_document(document, strict_methods=True)
    assert info.value.path == "sections.main[0].frobnicate"
    assert "unknown SWML method 'frobnicate'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ('{"sections": ', "invalid JSON"),
        ("sections: [unclosed", "invalid YAML"),
        ("- just\n- a list\n", "must be an object"),
    ],
)
def test_text_errors(text: str, fragment: str) -> None:
    with pytest.raises(SwmlError, match=fragment):
        load_document(text)


def test_cond_accepts_single_object_and_methods_with_scalars() -> None:
    load_document(
        {
            "sections": {
                "main": [
                    {"cond": {"when": "1 == 1", "then": [{"return": 1}]}},
                    {"cond": [{"when": "a", "then": []}, {"else": [{"unset": ["a", "b"]}]}]},
                    {"label": "top"},
                    {"sleep": 100},
                    {"return": None},
                    {"answer": None},
                ]
            }
        }
    )
