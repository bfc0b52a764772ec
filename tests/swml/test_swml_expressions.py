"""The JavaScript-subset evaluator and ${...} / %{...} expansion."""

from __future__ import annotations

import math
from typing import Any

import pytest

from callplane.engine.swml import UNDEFINED, Scope, SwmlError, evaluate, expand, expand_string
from callplane.engine.swml.expressions import (
    evaluate_condition,
    js_equals_loose,
    js_to_number,
    js_to_string,
    parse_expression,
)

SCOPE = Scope(
    call={
        "from": "+15551234567",
        "to": "sip:bob@example.com",
        "type": "phone",
        "headers": [{"name": "X-Account", "value": "acme"}],
    },
    vars={
        "x": "5",
        "n": 3,
        "zero": 0,
        "empty": "",
        "flag": True,
        "nothing": None,
        "digits": "0042",
        "name": "  Alice ",
        "obj": {"a": [1, 2, {"b": "deep"}], "k": "v"},
        "list": ["a", "b", "c"],
        "shadow": "from-vars",
        "prompt_value": "1",
    },
    envs={"key": "env-value", "shadow": "from-envs", "only_env": "E"},
    params={"y": "param-y", "num": 7},
)

CASES: list[tuple[str, Any]] = [
    # literals
    ("42", 42),
    ("3.5", 3.5),
    (".5", 0.5),
    ("1e3", 1000),
    ("0x1F", 31),
    ("'single'", "single"),
    ('"double"', "double"),
    (r"'it\'s'", "it's"),
    (r'"a\nb"', "a\nb"),
    (r"'\u0041'", "A"),
    ("true", True),
    ("false", False),
    ("null", None),
    ("undefined", UNDEFINED),
    # paths
    ("call.from", "+15551234567"),
    ("call.headers[0].value", "acme"),
    ("call.headers[0]['name']", "X-Account"),
    ("vars.x", "5"),
    ("envs.key", "env-value"),
    ("params.y", "param-y"),
    ("obj.a[2].b", "deep"),
    ("obj['k']", "v"),
    ("list[1]", "b"),
    ("list[9]", UNDEFINED),
    ("missing", UNDEFINED),
    ("missing.deeper.still", UNDEFINED),
    ("vars.missing", UNDEFINED),
    # unprefixed lookup order: vars, envs, call
    ("shadow", "from-vars"),
    ("only_env", "E"),
    ("type", "phone"),
    ("y", UNDEFINED),  # params are not searched unprefixed
    # arithmetic and precedence
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("2 * 3 % 4", 2),
    ("7 / 2", 3.5),
    ("6 / 2", 3),
    ("7 % 3", 1),
    ("-7 % 3", -1),
    ("5.5 % 2", 1.5),
    ("-n", -3),
    ("- -n", 3),
    ("+x", 5),
    ("n * params.num", 21),
    # + and coercion
    ("'a' + 1 + 2", "a12"),
    ("1 + 2 + 'a'", "3a"),
    ("x + 1", "51"),
    ("x - 1", 4),
    ("x * '2'", 10),
    ("true + 1", 2),
    ("null + 1", 1),
    ("'' + null", "null"),
    ("list + ''", "a,b,c"),
    ("1 / 0", math.inf),
    ("-1 / 0", -math.inf),
    # equality
    ("x == 5", True),
    ("x === 5", False),
    ("x === '5'", True),
    ("x != 5", False),
    ("x !== 5", True),
    ("prompt_value == 1", True),
    ("null == undefined", True),
    ("null === undefined", False),
    ("null == 0", False),
    ("'' == 0", True),
    ("'0' == false", True),
    ("flag == 1", True),
    ("flag === 1", False),
    ("missing == null", True),
    ("missing == ''", False),
    ("nothing == null", True),
    ("0 / 0 == 0 / 0", False),
    ("'abc' == 'abc'", True),
    # relational
    ("n > 2", True),
    ("n >= 3", True),
    ("n < 3", False),
    ("n <= 3", True),
    ("'10' < '9'", True),
    ("'10' < 9", False),
    ("'b' > 'a'", True),
    ("missing < 1", False),
    ("1 < 2 < 3", True),
    ("3 > 2 > 1", False),
    # logical
    ("true && false", False),
    ("n > 2 && x < 10", True),
    ("zero || 'fallback'", "fallback"),
    ("n || 'fallback'", 3),
    ("empty && explode.now()", ""),
    ("!zero", True),
    ("!!name", True),
    ("!missing", True),
    ("!x == false", True),
    ("1 == 1 && 2 == 2 || false", True),
    ("false || 1 == 1 && 2 == 3", False),
    # ternary
    ("n > 2 ? 'big' : 'small'", "big"),
    ("zero ? 1 : 2 ? 3 : 4", 3),
    ("true ? false ? 1 : 2 : 3", 2),
    ("flag ? n + 1 : n - 1", 4),
    # string methods and properties
    ("call.from.substring(0, 3)", "+15"),
    ("call.from.substring(3)", "551234567"),
    ("'hello'.substring(4, 1)", "ell"),
    ("'hello'.substring(-2, 2)", "he"),
    ("'Hello'.toLowerCase()", "hello"),
    ("'Hello'.toUpperCase()", "HELLO"),
    ("call.to.includes('example')", True),
    ("call.to.startsWith('sip:')", True),
    ("call.to.endsWith('.com')", True),
    ("call.to.endsWith('.org')", False),
    ("name.trim()", "Alice"),
    ("name.trim().length", 5),
    ("call.from.length", 12),
    ("list.length", 3),
    ("list.includes('b')", True),
    ("list.join('-')", "a-b-c"),
    ("'a,b'.split(',')[1]", "b"),
    ("'hello'.indexOf('l')", 2),
    ("'hello'.slice(-3)", "llo"),
    ("'hello'.charAt(1)", "e"),
    ("'aXbX'.replace('X', '-')", "a-bX"),
    ("n.toString() + '!'", "3!"),
    ("(2.5).toFixed(2)", "2.50"),
    ("missing.toLowerCase()", UNDEFINED),
    # global functions
    ("parseInt(digits)", 42),
    ("parseInt('42px')", 42),
    ("parseInt('-12.9')", -12),
    ("parseInt('ff', 16)", 255),
    ("parseInt('0x10')", 16),
    ("parseFloat('3.14abc')", 3.14),
    ("parseFloat('  -2.5e2')", -250),
    ("parseInt(digits) + 1", 43),
    ("String(n) + String(flag)", "3true"),
    ("Number('7') * 2", 14),
    ("Boolean('')", False),
    ("isNaN('abc')", True),
]


@pytest.mark.parametrize(("source", "expected"), CASES, ids=[c[0] for c in CASES])
def test_evaluate_table(source: str, expected: Any) -> None:
    result = evaluate(source, SCOPE)
    if expected is UNDEFINED:
        assert result is UNDEFINED
    elif isinstance(expected, bool):
        assert result is expected
    else:
        assert result == expected
        assert type(result) is type(expected) or isinstance(expected, float)


@pytest.mark.parametrize(
    "source",
    ["0 / 0", "'a' - 1", "undefined + 1", "parseInt('abc')", "parseFloat('x')", "Number('1x')"],
)
def test_nan_results(source: str) -> None:
    result = evaluate(source, SCOPE)
    assert isinstance(result, float) and math.isnan(result)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("", "empty expression"),
        ("1 +", "incomplete expression"),
        ("(1 + 2", "expected ')'"),
        ("a b", "unexpected 'b' at position 2"),
        ("'abc", "unterminated string"),
        ("1 ? 2", "expected ':'"),
        ("a.", "property name"),
        ("#", "unexpected character '#'"),
        ("a = 1", "unexpected character '='"),
        ("foo()", "foo is not a function"),
        ("'x'.nope()", "unsupported string method nope()"),
        ("(1)(2)", "only functions and methods can be called"),
        ("x ==== 1", "unexpected character '='"),
    ],
)
def test_errors_are_clear(source: str, fragment: str) -> None:
    with pytest.raises(SwmlError) as info:
        evaluate(source, SCOPE)
    assert fragment in str(info.value)
    assert repr(source) in str(info.value) or source == ""


def test_no_python_eval_escape() -> None:
    # Python-only syntax and dunder access do not reach Python objects.
    with pytest.raises(SwmlError):
        evaluate("__import__('os')", SCOPE)
    assert evaluate("obj.__class__", SCOPE) is UNDEFINED
    assert evaluate("'x'.__class__", SCOPE) is UNDEFINED
    with pytest.raises(SwmlError):
        evaluate("[1, 2]", SCOPE)


def test_parse_cache() -> None:
    parse_expression.cache_clear()
    evaluate("n + 1", SCOPE)
    evaluate("n + 1", SCOPE)
    info = parse_expression.cache_info()
    assert info.hits >= 1 and info.misses == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, "1"), (2.5, "2.5"), (math.nan, "NaN"), (-math.inf, "-Infinity"), (None, "null")],
)
def test_to_string(value: Any, expected: str) -> None:
    assert js_to_string(value) == expected


def test_coercion_helpers() -> None:
    assert js_to_number("  12  ") == 12
    assert js_to_number("") == 0
    assert js_to_number([]) == 0
    assert js_to_number(["7"]) == 7
    assert js_equals_loose([1, 2], "1,2")
    assert not js_equals_loose({}, "{}")


# --------------------------------------------------------------------------- expansion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("say:Hello ${call.from}", "say:Hello +15551234567"),
        ("say:Hello %{call.from}", "say:Hello +15551234567"),
        ("${call.headers[0].value}-%{params.y}", "acme-param-y"),
        ("${vars.x}${envs.key}", "5env-value"),
        ("[${missing}]", "[]"),
        ("[${nothing}]", "[]"),
        ("[${vars.missing.deep}]", "[]"),
        ("n=${n + 1}", "n=4"),
        ("${call.from.substring(0,3)}", "+15"),
        ("${x == '}' ? 'brace' : 'no'}", "no"),
        ("obj=${obj.a}", 'obj=[1,2,{"b":"deep"}]'),
        ("flag ${flag}", "flag true"),
        ("no placeholders $ { } %", "no placeholders $ { } %"),
        ("price $5 and 100%", "price $5 and 100%"),
    ],
)
def test_expand_string(text: str, expected: str) -> None:
    assert expand_string(text, SCOPE) == expected


def test_whole_placeholder_keeps_type() -> None:
    assert expand_string("${n}", SCOPE) == 3
    assert expand_string("${obj}", SCOPE) == SCOPE.vars["obj"]
    assert expand_string("${flag}", SCOPE) is True
    assert expand_string("${missing}", SCOPE) == ""
    assert expand_string(" ${n}", SCOPE) == " 3"


def test_expand_recursive() -> None:
    params = {
        "url": "say:${call.from}",
        "urls": ["say:${vars.x}", "silence:1"],
        "nested": {"deep": ["%{params.y}"]},
        "volume": 2,
        "flag": None,
    }
    assert expand(params, SCOPE) == {
        "url": "say:+15551234567",
        "urls": ["say:5", "silence:1"],
        "nested": {"deep": ["param-y"]},
        "volume": 2,
        "flag": None,
    }


def test_expand_errors() -> None:
    with pytest.raises(SwmlError, match="unterminated"):
        expand_string("say:${call.from", SCOPE)
    with pytest.raises(SwmlError, match="incomplete expression"):
        expand_string("say:${1 +}", SCOPE)


def test_condition_with_placeholders_substitutes_literals() -> None:
    scope = Scope(vars={"x": "5", "evil": "1 || true", "name": "bob"})
    assert evaluate_condition("${x} == 5", scope)
    # The variable's text is a value, never code.
    assert not evaluate_condition("${evil} == 1", scope)
    assert evaluate_condition("${name} == 'bob'", scope)
    assert evaluate_condition("${missing} == undefined", scope)
    assert evaluate_condition("x == 5", scope)
    assert evaluate_condition(True, scope)
    with pytest.raises(SwmlError, match="empty expression"):
        evaluate_condition("", scope)
