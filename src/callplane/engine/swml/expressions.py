"""SWML variable expansion and a safe evaluator for the JavaScript subset SWML scripts use.

SWML writes ``${...}`` (a path or a JavaScript expression) and ``%{...}`` (a path) inside any
string parameter, and raw JavaScript conditions in ``cond.when`` / ``goto.when``. The platform runs
those on V8; we never hand script text to ``eval``. Instead a small tokenizer and a Pratt parser
build an AST that is evaluated against four read-only scopes (``call``, ``vars``, ``envs``,
``params``) with JavaScript's coercion rules for ``==``, ``+`` and the relational operators,
because scripts written for the platform rely on them (``prompt_value == 1`` with ``prompt_value``
the string ``"1"``).

Deliberate deviations from JavaScript, all in the direction of "an unset variable is empty":

* member access / method calls on ``undefined`` or ``null`` yield ``undefined`` instead of throwing
  (SWML documents unset paths as expanding to an empty string, and ``a.b.c`` on a missing ``a``
  must not kill a call);
* in string interpolation ``undefined`` and ``null`` become ``""``, and objects/arrays become JSON
  (rather than ``[object Object]``): what a script author printing ``${return_value}`` wants.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from .errors import SwmlError

__all__ = [
    "UNDEFINED",
    "Scope",
    "evaluate",
    "evaluate_condition",
    "expand",
    "expand_string",
    "js_equals_loose",
    "js_equals_strict",
    "js_to_number",
    "js_to_string",
    "js_truthy",
    "parse_expression",
    "to_template_string",
]


class _Undefined:
    """JavaScript's ``undefined``: distinct from ``null`` (Python None) for ``===``."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()

_MAX_EXPRESSION_LENGTH = 4096


@dataclass
class Scope:
    """The variables an expression sees. The mappings are read, never written."""

    call: Mapping[str, Any] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    envs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def lookup(self, name: str) -> Any:
        if name == "call":
            return self.call
        if name == "vars":
            return self.vars
        if name == "envs":
            return self.envs
        if name == "params":
            return self.params
        # Unprefixed names: vars, then envs, then call (swml.md §1.1).
        for source in (self.vars, self.envs, self.call):
            if name in source:
                return source[name]
        return UNDEFINED


# --------------------------------------------------------------------------- coercion


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping | list)


def _norm(value: float) -> int | float:
    """Keep integral results as Python ints so that they print as JavaScript prints them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def js_truthy(value: Any) -> bool:
    if value is None or value is UNDEFINED:
        return False
    if isinstance(value, bool):
        return value
    if _is_number(value):
        return not (value == 0 or (isinstance(value, float) and math.isnan(value)))
    if isinstance(value, str):
        return value != ""
    return True


_NUMERIC_LITERAL = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_JS_WHITESPACE = " \t\n\r\v\f\u00a0\ufeff\u2028\u2029"


def js_to_number(value: Any) -> int | float:
    if value is UNDEFINED:
        return math.nan
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if _is_number(value):
        return _norm(value)
    if isinstance(value, str):
        text = value.strip(_JS_WHITESPACE)
        if text == "":
            return 0
        if text in ("Infinity", "+Infinity"):
            return math.inf
        if text == "-Infinity":
            return -math.inf
        lowered = text.lower()
        for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
            if lowered.startswith(prefix):
                try:
                    return int(text[2:], base)
                except ValueError:
                    return math.nan
        if _NUMERIC_LITERAL.fullmatch(text):
            return _norm(float(text))
        return math.nan
    return js_to_number(_to_primitive(value))


def _number_to_string(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    # Python writes 1e-07 / 1e+21 where JavaScript writes 1e-7 / 1e+21.
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


def js_to_string(value: Any) -> str:
    """JavaScript ``String(value)``."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return _number_to_string(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if v is None or v is UNDEFINED else js_to_string(v) for v in value)
    return "[object Object]"


def to_template_string(value: Any) -> str:
    """How a value is written into a string by ``${...}`` (see the module docstring)."""
    if value is None or value is UNDEFINED:
        return ""
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return js_to_string(value)


def _to_primitive(value: Any) -> Any:
    if isinstance(value, list):
        return js_to_string(value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return value


def _category(value: Any) -> str:
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def js_equals_strict(a: Any, b: Any) -> bool:
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return False
    if ca == "object":
        return a is b
    if ca in ("undefined", "null"):
        return True
    return bool(a == b)  # NaN != NaN falls out of float comparison


def js_equals_loose(a: Any, b: Any) -> bool:
    ca, cb = _category(a), _category(b)
    if ca == cb:
        return js_equals_strict(a, b)
    nullish = ("undefined", "null")
    if ca in nullish or cb in nullish:
        return ca in nullish and cb in nullish
    if ca == "boolean":
        return js_equals_loose(js_to_number(a), b)
    if cb == "boolean":
        return js_equals_loose(a, js_to_number(b))
    if ca == "number" and cb == "string":
        return bool(a == js_to_number(b))
    if ca == "string" and cb == "number":
        return bool(js_to_number(a) == b)
    if ca == "object":
        return js_equals_loose(_to_primitive(a), b)
    if cb == "object":
        return js_equals_loose(a, _to_primitive(b))
    return False


def _compare(op: str, a: Any, b: Any) -> bool:
    pa, pb = _to_primitive(a), _to_primitive(b)
    if isinstance(pa, str) and isinstance(pb, str):
        x: Any = pa
        y: Any = pb
    else:
        x, y = js_to_number(pa), js_to_number(pb)
        if math.isnan(x) or math.isnan(y):
            return False
    if op == "<":
        return bool(x < y)
    if op == "<=":
        return bool(x <= y)
    if op == ">":
        return bool(x > y)
    return bool(x >= y)


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        pa, pb = _to_primitive(a), _to_primitive(b)
        if isinstance(pa, str) or isinstance(pb, str):
            return js_to_string(pa) + js_to_string(pb)
        return _norm(js_to_number(pa) + js_to_number(pb))
    x, y = js_to_number(a), js_to_number(b)
    if op == "-":
        return _norm(x - y)
    if op == "*":
        return _norm(x * y)
    if op == "/":
        if y == 0:
            if x == 0 or math.isnan(x):
                return math.nan
            # JavaScript has signed zero; we only see +0 here, so the sign comes from x.
            return math.inf if x > 0 else -math.inf
        return _norm(x / y)
    # "%": the result takes the sign of the dividend, like C's fmod.
    if y == 0 or math.isinf(x) or math.isnan(x) or math.isnan(y):
        return math.nan
    if math.isinf(y):
        return x
    return _norm(math.fmod(x, y))


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "str", "name", "op", "eof"
    value: Any
    pos: int


_OPERATORS = (
    "===",
    "!==",
    "==",
    "!=",
    "<=",
    ">=",
    "&&",
    "||",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "%",
    "!",
    "?",
    ":",
    "(",
    ")",
    "[",
    "]",
    ".",
    ",",
)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_DECIMAL = "0123456789"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in _JS_WHITESPACE:
            i += 1
            continue
        if ch in _DECIMAL or (ch == "." and i + 1 < n and src[i + 1] in _DECIMAL):
            m = _NUMBER.match(src, i)
            assert m is not None
            text = m.group(0)
            value: Any = int(text, 16) if text[:2].lower() == "0x" else _norm(float(text))
            tokens.append(_Token("num", value, i))
            i = m.end()
            continue
        if ch in "'\"":
            i = _read_string(src, i, tokens)
            continue
        m = _NAME.match(src, i)
        if m:
            tokens.append(_Token("name", m.group(0), i))
            i = m.end()
            continue
        for op in _OPERATORS:
            if src.startswith(op, i):
                tokens.append(_Token("op", op, i))
                i += len(op)
                break
        else:
            raise SwmlError(f"unexpected character {ch!r} at position {i} in expression {src!r}")
    tokens.append(_Token("eof", None, n))
    return tokens


def _read_string(src: str, start: int, tokens: list[_Token]) -> int:
    quote = src[start]
    out: list[str] = []
    i, n = start + 1, len(src)
    while i < n:
        ch = src[i]
        if ch == quote:
            tokens.append(_Token("str", "".join(out), start))
            return i + 1
        if ch == "\\" and i + 1 < n:
            nxt = src[i + 1]
            if nxt == "u" and i + 5 < n:
                try:
                    out.append(chr(int(src[i + 2 : i + 6], 16)))
                except ValueError as exc:
                    raise SwmlError(f"bad \\u escape at position {i} in {src!r}") from exc
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise SwmlError(f"unterminated string starting at position {start} in expression {src!r}")


# --------------------------------------------------------------------------- AST


class _Node:
    __slots__ = ()

    def eval(self, scope: Scope) -> Any:
        raise NotImplementedError


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def eval(self, scope: Scope) -> Any:
        return self.value


class _Name(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def eval(self, scope: Scope) -> Any:
        return scope.lookup(self.name)


class _Member(_Node):
    __slots__ = ("key", "obj")

    def __init__(self, obj: _Node, key: _Node) -> None:
        self.obj = obj
        self.key = key

    def eval(self, scope: Scope) -> Any:
        return _get_member(self.obj.eval(scope), self.key.eval(scope))


class _Call(_Node):
    __slots__ = ("args", "callee")

    def __init__(self, callee: _Node, args: list[_Node]) -> None:
        self.callee = callee
        self.args = args

    def eval(self, scope: Scope) -> Any:
        args = [a.eval(scope) for a in self.args]
        callee = self.callee
        if isinstance(callee, _Member):
            receiver = callee.obj.eval(scope)
            name = js_to_string(callee.key.eval(scope))
            return _call_method(receiver, name, args)
        if isinstance(callee, _Name) and callee.name in _GLOBAL_FUNCTIONS:
            return _GLOBAL_FUNCTIONS[callee.name](args)
        raise SwmlError(f"{_describe(callee)} is not a function")


class _Unary(_Node):
    __slots__ = ("op", "operand")

    def __init__(self, op: str, operand: _Node) -> None:
        self.op = op
        self.operand = operand

    def eval(self, scope: Scope) -> Any:
        value = self.operand.eval(scope)
        if self.op == "!":
            return not js_truthy(value)
        number = js_to_number(value)
        return _norm(-number) if self.op == "-" else number


class _Binary(_Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: _Node, right: _Node) -> None:
        self.op = op
        self.left = left
        self.right = right

    def eval(self, scope: Scope) -> Any:
        op = self.op
        left = self.left.eval(scope)
        if op == "&&":
            return self.right.eval(scope) if js_truthy(left) else left
        if op == "||":
            return left if js_truthy(left) else self.right.eval(scope)
        right = self.right.eval(scope)
        if op == "==":
            return js_equals_loose(left, right)
        if op == "!=":
            return not js_equals_loose(left, right)
        if op == "===":
            return js_equals_strict(left, right)
        if op == "!==":
            return not js_equals_strict(left, right)
        if op in ("<", "<=", ">", ">="):
            return _compare(op, left, right)
        return _arith(op, left, right)


class _Conditional(_Node):
    __slots__ = ("alternate", "consequent", "test")

    def __init__(self, test: _Node, consequent: _Node, alternate: _Node) -> None:
        self.test = test
        self.consequent = consequent
        self.alternate = alternate

    def eval(self, scope: Scope) -> Any:
        branch = self.consequent if js_truthy(self.test.eval(scope)) else self.alternate
        return branch.eval(scope)


def _describe(node: _Node) -> str:
    if isinstance(node, _Name):
        return node.name
    if isinstance(node, _Member) and isinstance(node.key, _Literal):
        return f"{_describe(node.obj)}.{node.key.value}"
    return "expression"


# --------------------------------------------------------------------------- parser

# Binding powers follow JavaScript's precedence table (higher binds tighter).
_INFIX_POWER: dict[str, int] = {
    "||": 3,
    "&&": 4,
    "==": 8,
    "!=": 8,
    "===": 8,
    "!==": 8,
    "<": 9,
    "<=": 9,
    ">": 9,
    ">=": 9,
    "+": 11,
    "-": 11,
    "*": 12,
    "/": 12,
    "%": 12,
}
_TERNARY_POWER = 2
_PREFIX_POWER = 14
_POSTFIX_POWER = 17
_KEYWORDS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "undefined": UNDEFINED,
    "NaN": math.nan,
    "Infinity": math.inf,
}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.tokens = _tokenize(src)
        self.pos = 0

    def error(self, message: str, token: _Token | None = None) -> SwmlError:
        tok = token or self.tokens[self.pos]
        where = "end of input" if tok.kind == "eof" else f"position {tok.pos}"
        return SwmlError(f"{message} at {where} in expression {self.src!r}")

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def next(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect_op(self, op: str) -> None:
        tok = self.next()
        if tok.kind != "op" or tok.value != op:
            raise self.error(f"expected {op!r}", tok)

    def parse(self) -> _Node:
        if self.peek().kind == "eof":
            raise self.error("empty expression")
        node = self.expression(0)
        if self.peek().kind != "eof":
            raise self.error(f"unexpected {self.peek().value!r}")
        return node

    def expression(self, min_power: int) -> _Node:
        left = self.prefix()
        while True:
            tok = self.peek()
            if tok.kind != "op":
                if tok.kind != "eof":
                    raise self.error(f"unexpected {tok.value!r}")
                return left
            op = tok.value
            if op in (".", "[", "(") and min_power <= _POSTFIX_POWER:
                left = self.postfix(left)
                continue
            if op == "?" and min_power <= _TERNARY_POWER:
                self.next()
                consequent = self.expression(0)
                self.expect_op(":")
                # Right-associative: a ? b : c ? d : e
                alternate = self.expression(_TERNARY_POWER)
                left = _Conditional(left, consequent, alternate)
                continue
            power = _INFIX_POWER.get(op)
            if power is None or power < min_power:
                return left
            self.next()
            right = self.expression(power + 1)  # left-associative
            left = _Binary(op, left, right)

    def prefix(self) -> _Node:
        tok = self.next()
        if tok.kind == "num" or tok.kind == "str":
            return _Literal(tok.value)
        if tok.kind == "name":
            if tok.value in _KEYWORDS:
                return _Literal(_KEYWORDS[tok.value])
            return _Name(tok.value)
        if tok.kind == "op":
            if tok.value == "(":
                node = self.expression(0)
                self.expect_op(")")
                return node
            if tok.value in ("!", "-", "+"):
                return _Unary(tok.value, self.expression(_PREFIX_POWER))
        if tok.kind == "eof":
            raise self.error("incomplete expression", tok)
        raise self.error(f"unexpected {tok.value!r}", tok)

    def postfix(self, left: _Node) -> _Node:
        tok = self.next()
        if tok.value == ".":
            name = self.next()
            if name.kind != "name":
                raise self.error("expected a property name after '.'", name)
            return _Member(left, _Literal(name.value))
        if tok.value == "[":
            key = self.expression(0)
            self.expect_op("]")
            return _Member(left, key)
        args: list[_Node] = []
        if not (self.peek().kind == "op" and self.peek().value == ")"):
            while True:
                args.append(self.expression(0))
                if self.peek().kind == "op" and self.peek().value == ",":
                    self.next()
                    continue
                break
        self.expect_op(")")
        if not isinstance(left, _Member | _Name):
            raise self.error("only functions and methods can be called", tok)
        return _Call(left, args)


@lru_cache(maxsize=2048)
def parse_expression(src: str) -> _Node:
    """Parse (and cache) one JavaScript-subset expression. Raises `SwmlError` on bad syntax."""
    if len(src) > _MAX_EXPRESSION_LENGTH:
        raise SwmlError(f"expression longer than {_MAX_EXPRESSION_LENGTH} characters")
    return _Parser(src).parse()


def _run(node: _Node, src: str, scope: Scope) -> Any:
    try:
        return node.eval(scope)
    except SwmlError as exc:
        if "in expression" in exc.message:
            raise
        raise SwmlError(f"{exc.message} in expression {src!r}") from exc


def evaluate(src: str, scope: Scope) -> Any:
    """Evaluate an expression; returns a Python value (`UNDEFINED` for JavaScript undefined)."""
    return _run(parse_expression(src), src, scope)


# --------------------------------------------------------------------------- members, methods


def _index(key: Any) -> int | None:
    if _is_number(key):
        return int(key) if float(key).is_integer() else None
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    return None


def _get_member(obj: Any, key: Any) -> Any:
    if obj is None or obj is UNDEFINED:
        return UNDEFINED  # lenient, see module docstring
    if isinstance(obj, Mapping):
        name = key if isinstance(key, str) else js_to_string(key)
        return obj.get(name, UNDEFINED)
    if isinstance(obj, list | str):
        if key == "length":
            return len(obj)
        idx = _index(key)
        if idx is not None and 0 <= idx < len(obj):
            return obj[idx]
        return UNDEFINED
    return UNDEFINED


def _int_arg(args: list[Any], i: int, default: int) -> int:
    if i >= len(args) or args[i] is UNDEFINED:
        return default
    number = js_to_number(args[i])
    if isinstance(number, float):
        if math.isnan(number):
            return 0
        if math.isinf(number):
            return 2**31 if number > 0 else -(2**31)
    return int(number)


def _str_arg(args: list[Any], i: int) -> str:
    return js_to_string(args[i] if i < len(args) else UNDEFINED)


def _substring(s: str, args: list[Any]) -> str:
    n = len(s)
    start = min(max(_int_arg(args, 0, 0), 0), n)
    end = min(max(_int_arg(args, 1, n), 0), n)
    if start > end:
        start, end = end, start
    return s[start:end]


def _slice_bounds(n: int, args: list[Any]) -> tuple[int, int]:
    start = _int_arg(args, 0, 0)
    end = _int_arg(args, 1, n)
    start = max(n + start, 0) if start < 0 else min(start, n)
    end = max(n + end, 0) if end < 0 else min(end, n)
    return start, end


def _string_method(s: str, name: str, args: list[Any]) -> Any:
    if name == "substring":
        return _substring(s, args)
    if name == "substr":
        start = _int_arg(args, 0, 0)
        start = max(len(s) + start, 0) if start < 0 else start
        length = _int_arg(args, 1, len(s))
        return s[start : start + max(length, 0)]
    if name == "slice":
        start, end = _slice_bounds(len(s), args)
        return s[start:end]
    if name == "toLowerCase":
        return s.lower()
    if name == "toUpperCase":
        return s.upper()
    if name == "trim":
        return s.strip(_JS_WHITESPACE)
    if name == "trimStart":
        return s.lstrip(_JS_WHITESPACE)
    if name == "trimEnd":
        return s.rstrip(_JS_WHITESPACE)
    if name == "includes":
        return _str_arg(args, 0) in s[max(_int_arg(args, 1, 0), 0) :]
    if name == "startsWith":
        return s.startswith(_str_arg(args, 0), max(_int_arg(args, 1, 0), 0))
    if name == "endsWith":
        end = min(max(_int_arg(args, 1, len(s)), 0), len(s))
        return s[:end].endswith(_str_arg(args, 0))
    if name == "indexOf":
        return s.find(_str_arg(args, 0), max(_int_arg(args, 1, 0), 0))
    if name == "lastIndexOf":
        return s.rfind(_str_arg(args, 0))
    if name == "charAt":
        i = _int_arg(args, 0, 0)
        return s[i] if 0 <= i < len(s) else ""
    if name == "split":
        if not args or args[0] is UNDEFINED:
            return [s]
        sep = _str_arg(args, 0)
        return list(s) if sep == "" else s.split(sep)
    if name == "replace":
        return s.replace(_str_arg(args, 0), _str_arg(args, 1), 1)
    if name == "replaceAll":
        return s.replace(_str_arg(args, 0), _str_arg(args, 1))
    if name == "concat":
        return s + "".join(js_to_string(a) for a in args)
    if name == "toString":
        return s
    raise SwmlError(f"unsupported string method {name}()")


def _call_method(receiver: Any, name: str, args: list[Any]) -> Any:
    if receiver is None or receiver is UNDEFINED:
        return UNDEFINED  # lenient, see module docstring
    if isinstance(receiver, str):
        return _string_method(receiver, name, args)
    if isinstance(receiver, list):
        if name == "includes":
            target = args[0] if args else UNDEFINED
            return any(js_equals_strict(v, target) for v in receiver)
        if name == "indexOf":
            target = args[0] if args else UNDEFINED
            return next(
                (i for i, v in enumerate(receiver) if js_equals_strict(v, target)),
                -1,
            )
        if name == "join":
            sep = "," if not args or args[0] is UNDEFINED else _str_arg(args, 0)
            return sep.join(
                "" if v is None or v is UNDEFINED else js_to_string(v) for v in receiver
            )
        if name == "slice":
            start, end = _slice_bounds(len(receiver), args)
            return receiver[start:end]
        if name == "toString":
            return js_to_string(receiver)
        raise SwmlError(f"unsupported array method {name}()")
    if _is_number(receiver) or isinstance(receiver, bool):
        if name == "toString":
            return js_to_string(receiver)
        if name == "toFixed" and not isinstance(receiver, bool):
            digits = _int_arg(args, 0, 0)
            return f"{receiver:.{max(0, min(digits, 100))}f}"
        raise SwmlError(f"unsupported number method {name}()")
    if isinstance(receiver, Mapping):
        if name == "toString":
            return "[object Object]"
        if name == "hasOwnProperty":
            return _str_arg(args, 0) in receiver
    raise SwmlError(f"{name} is not a function")


_INT_PREFIX = re.compile(r"[+-]?[0-9a-zA-Z]*")
_FLOAT_PREFIX = re.compile(r"[+-]?(?:Infinity|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _parse_int(args: list[Any]) -> int | float:
    text = _str_arg(args, 0).lstrip(_JS_WHITESPACE)
    radix = _int_arg(args, 1, 0)
    sign = 1
    if text and text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if radix == 0:
        radix = 10
        if text[:2].lower() == "0x":
            radix, text = 16, text[2:]
    elif radix == 16 and text[:2].lower() == "0x":
        text = text[2:]
    if not 2 <= radix <= 36:
        return math.nan
    valid = _DIGITS[:radix]
    count = 0
    for ch in text.lower():
        if ch not in valid:
            break
        count += 1
    if count == 0:
        return math.nan
    return sign * int(text[:count], radix)


def _parse_float(args: list[Any]) -> int | float:
    text = _str_arg(args, 0).lstrip(_JS_WHITESPACE)
    m = _FLOAT_PREFIX.match(text)
    if not m:
        return math.nan
    literal = m.group(0)
    if literal.lstrip("+-") == "Infinity":
        return -math.inf if literal.startswith("-") else math.inf
    return _norm(float(literal))


def _is_nan(args: list[Any]) -> bool:
    number = js_to_number(args[0] if args else UNDEFINED)
    return isinstance(number, float) and math.isnan(number)


_GLOBAL_FUNCTIONS: dict[str, Callable[[list[Any]], Any]] = {
    "parseInt": _parse_int,
    "parseFloat": _parse_float,
    "String": lambda args: js_to_string(args[0]) if args else "",
    "Number": lambda args: js_to_number(args[0]) if args else 0,
    "Boolean": lambda args: js_truthy(args[0]) if args else False,
    "isNaN": _is_nan,
}


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class _Placeholder:
    src: str  # the text between the braces
    node: _Node


_Template = tuple[str | _Placeholder, ...]


def _find_close(text: str, start: int) -> int:
    """Index of the ``}`` closing a placeholder whose body starts at `start`, or -1.

    Quotes are honoured so that ``${a == '}'}`` works; nested braces are counted.
    """
    depth = 1
    i, n = start, len(text)
    quote = ""
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


@lru_cache(maxsize=4096)
def _parse_template(text: str) -> _Template:
    parts: list[str | _Placeholder] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "$%" and i + 1 < n and text[i + 1] == "{":
            close = _find_close(text, i + 2)
            if close < 0:
                raise SwmlError(f"unterminated {ch}{{ in {text!r}")
            body = text[i + 2 : close]
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_Placeholder(body, parse_expression(body.strip() or "undefined")))
            i = close + 1
            continue
        literal.append(ch)
        i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def has_placeholders(text: str) -> bool:
    return ("${" in text) or ("%{" in text)


_ROOT = re.compile(r"\s*([A-Za-z_$][\w$]*)")


def _kept(part: _Placeholder, keep: frozenset[str]) -> bool:
    root = _ROOT.match(part.src)
    return root is not None and root.group(1) in keep


def expand_string(text: str, scope: Scope, keep: frozenset[str] = frozenset()) -> Any:
    """Expand every ``${...}`` / ``%{...}`` in `text`.

    A string that is exactly one placeholder yields the raw value (a number stays a number, an
    object stays an object) so that ``max: "${vars.n}"`` or ``set: {copy: "${vars.obj}"}`` keep
    their types; an unset value still yields ``""``. Placeholders whose first name is in `keep`
    stay as written, for a later expansion with values the script does not have (the AI
    agent's ``${global_data.x}``).
    """
    if not has_placeholders(text):
        return text
    parts = _parse_template(text)
    if len(parts) == 1 and isinstance(parts[0], _Placeholder) and not _kept(parts[0], keep):
        value = _run(parts[0].node, parts[0].src, scope)
        return "" if value is None or value is UNDEFINED else value
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif _kept(part, keep):
            out.append("${" + part.src + "}")
        else:
            out.append(to_template_string(_run(part.node, part.src, scope)))
    return "".join(out)


def expand(value: Any, scope: Scope, keep: frozenset[str] = frozenset()) -> Any:
    """Expand placeholders recursively in strings, lists and dict values (not keys)."""
    if isinstance(value, str):
        return expand_string(value, scope, keep)
    if isinstance(value, list):
        return [expand(v, scope, keep) for v in value]
    if isinstance(value, Mapping):
        return {k: expand(v, scope, keep) for k, v in value.items()}
    return value


def _literal_source(value: Any) -> str:
    """JavaScript source text for a value substituted into a condition (see below)."""
    if value is UNDEFINED:
        return "undefined"
    if _is_number(value) and isinstance(value, float) and not math.isfinite(value):
        return js_to_string(value)
    if isinstance(value, Mapping | list):
        # Objects cannot be written as literals in our subset; compare them as their JSON text.
        value = json.dumps(value, separators=(",", ":"), default=str)
    return json.dumps(value)


def evaluate_condition(condition: Any, scope: Scope) -> bool:
    """Evaluate a ``cond.when`` / ``goto.when`` condition to a boolean.

    Conditions are raw JavaScript, but scripts often write ``"${vars.x} == 1"`` anyway. Instead of
    pasting values into code (which would let a variable's content change the expression), each
    placeholder is replaced by a *literal* of its value before parsing.
    """
    if isinstance(condition, bool):
        return condition
    if not isinstance(condition, str):
        return js_truthy(condition)
    src = condition
    if has_placeholders(src):
        pieces: list[str] = []
        for part in _parse_template(src):
            if isinstance(part, str):
                pieces.append(part)
            else:
                pieces.append(_literal_source(_run(part.node, part.src, scope)))
        src = "".join(pieces)
    return js_truthy(evaluate(src, scope))
