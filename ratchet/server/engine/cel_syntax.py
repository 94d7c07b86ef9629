"""CEL syntax for Inngest expressions: parse, print, lower to standard CEL, substitute `event`.

Why a parser of our own: the CEL library we evaluate with (`common-expression-language`, see
`expressions`) exposes no syntax tree, cannot re-declare operators and errors on a missing field. Inngest
needs both loosenings (reference/inngest-protocol.md §9), and `residual` / `equality_index` need the
tree, so this module parses the CEL grammar (cel-spec `langdef.md`) into small frozen nodes and prints
them back either as written or *lowered* (`emit(tree, lower=True)`):

- `a.b.c` / `a["k"]` -> `(guard ? a.b.c : null)`: a missing field is null; `has(a.b.c)` -> the guard.
- `< <= > >=` and `+` -> calls to `_rt_lt` ... `_rt_add` (loose comparisons, see `expressions`).
- `now()` -> the variable `_rt_now`; `now_plus(d)` -> `_rt_now_plus(_rt_now, d)`; the other extra
  functions -> `_rt_<name>(...)` (method or function form).

Literals are decoded by the library itself, and the lowered text is compiled by it, so the two can only
disagree on what parses, never on what a value means. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from typing import Any

import cel


class ExpressionError(ValueError):
    """An expression that cannot be compiled (syntax, unknown variable or function); names the source."""

    def __init__(self, message: str, source: str) -> None:
        super().__init__(f"{message} in expression {source!r}")
        self.source = source


class EvaluationError(ExpressionError):
    """Raised by `Expression.evaluate` when evaluation fails (type errors, division by zero, ...)."""


_TYPE_NAMES = {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
               "timestamp", "duration"}
MACROS = {"all", "exists", "exists_one", "map", "filter"}
_EXTRAS = {"lowercase", "uppercase", "json_parse", "date", "now", "now_plus", "now_minus"}
_STANDARD = {"size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn", "timestamp",
             "duration", "contains", "startsWith", "endsWith", "matches", "has", "getFullYear",
             "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getHours",
             "getMinutes", "getSeconds", "getMilliseconds", "max", "min"}
_KNOWN_FUNCTIONS = _STANDARD | MACROS | _EXTRAS

_TOKEN = re.compile(r"""
  (?P<ws>\s+|//[^\n]*)
| (?P<str>(?:[rR][bB]?|[bB][rR]?)?
    (?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
| (?P<num>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
| (?P<id>[A-Za-z_][A-Za-z0-9_]*)
| (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
""", re.VERBOSE)
_RELOPS = {"==", "!=", "<", "<=", ">", ">=", "in"}
_LOOSE = {"<": "_rt_lt", "<=": "_rt_le", ">": "_rt_gt", ">=": "_rt_ge", "+": "_rt_add"}


@dataclasses.dataclass(frozen=True, slots=True)
class Lit:
    text: str  # CEL source text
    value: Any  # the Python value (decoded by the cel library)
    scalar: bool  # str / int / float / bool / null: usable as an index key


@dataclasses.dataclass(frozen=True, slots=True)
class Ident:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Select:
    operand: Node
    field: str


@dataclasses.dataclass(frozen=True, slots=True)
class Index:
    operand: Node
    index: Node


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    target: Node | None  # the receiver of a method call, `x.f(...)`
    name: str
    args: tuple[Node, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Node


@dataclasses.dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclasses.dataclass(frozen=True, slots=True)
class Cond:
    cond: Node
    then: Node
    other: Node


@dataclasses.dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MapLit:
    entries: tuple[tuple[Node, Node], ...]


Node = Lit | Ident | Select | Index | Call | Unary | Binary | Cond | ListLit | MapLit


class _Parser:
    """Recursive descent over the CEL grammar (cel-spec langdef.md), one method per precedence level."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(source):
            m = _TOKEN.match(source, pos)
            if m is None:
                self.fail(f"unexpected character {source[pos]!r}", pos)
            if m.lastgroup != "ws":
                self.toks.append((m.lastgroup or "", m.group(), pos))
            pos = m.end()
        self.toks.append(("eof", "", len(source)))
        self.i = 0

    def fail(self, message: str, pos: int) -> Any:
        raise ExpressionError(f"{message} at column {pos + 1}", self.source)

    def accept(self, text: str) -> bool:
        kind, tok, _ = self.toks[self.i]
        if tok == text and kind in ("op", "id"):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            _, tok, pos = self.toks[self.i]
            self.fail(f"expected {text!r} but found {_describe(tok)}", pos)

    def parse(self) -> Node:
        if self.toks[0][0] == "eof":
            self.fail("nothing to evaluate", 0)
        node = self.expr()
        kind, tok, pos = self.toks[self.i]
        if kind != "eof":
            self.fail(f"unexpected {_describe(tok)}", pos)
        return node

    def expr(self) -> Node:
        node = self.binary(0)
        if self.accept("?"):
            then = self.binary(0)
            self.expect(":")
            return Cond(node, then, self.expr())
        return node

    _LEVELS = ({"||"}, {"&&"}, _RELOPS, {"+", "-"}, {"*", "/", "%"})

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while (tok := self.toks[self.i])[1] in self._LEVELS[level] and tok[0] in ("op", "id"):
            self.i += 1
            node = Binary(tok[1], node, self.binary(level + 1))
        return node

    def unary(self) -> Node:
        for op in ("!", "-"):
            if self.accept(op):
                return Unary(op, self.unary())
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                name = self.ident()
                node = Call(node, name, self.args(")")) if self.accept("(") else Select(node, name)
            elif self.accept("["):
                index = self.expr()
                self.expect("]")
                node = Index(node, index)
            else:
                return node

    def ident(self) -> str:
        kind, tok, pos = self.toks[self.i]
        if kind != "id" or tok in ("in", "true", "false", "null"):
            self.fail(f"expected a field name but found {_describe(tok)}", pos)
        self.i += 1
        return tok

    def args(self, close: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.accept(close):
            items.append(self.expr())
            if not self.accept(","):
                self.expect(close)
                break
        return tuple(items)

    def primary(self) -> Node:
        kind, tok, pos = self.toks[self.i]
        self.i += 1
        if kind in ("num", "str") or tok in ("true", "false", "null"):
            return _literal_token(tok, kind, self.source)
        if kind == "id" and tok != "in":
            return Call(None, tok, self.args(")")) if self.accept("(") else Ident(tok)
        if tok == "(":
            node = self.expr()
            self.expect(")")
            return node
        if tok == "[":
            return ListLit(self.args("]"))
        if tok == "{":
            entries: list[tuple[Node, Node]] = []
            while not self.accept("}"):
                key = self.expr()
                self.expect(":")
                entries.append((key, self.expr()))
                if not self.accept(","):
                    self.expect("}")
                    break
            return MapLit(tuple(entries))
        return self.fail(f"unexpected {_describe(tok)}", pos)


def _describe(tok: str) -> str:
    return repr(tok) if tok else "end of expression"


def _literal_token(text: str, kind: str, source: str) -> Lit:
    try:
        value = cel.evaluate(text)  # the library decodes escapes, hex, uint and raw/bytes strings
    except Exception as exc:  # noqa: BLE001 - the library raises several types for bad literals
        raise ExpressionError(f"invalid literal {text}: {exc}", source) from None
    return Lit(text, value, not isinstance(value, bytes))


def _value_literal(value: Any) -> Lit:
    """A CEL literal for a JSON-like Python value (used to substitute `event.*` in `residual`)."""
    return Lit(literal_text(value), value, not isinstance(value, (dict, list)))


def literal_text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):  # negative numbers in parentheses: `-5.f` would parse as `-(5.f)`
        text = str(value) if -(2**63) <= value < 2**63 else literal_text(float(value))
        return f"({text})" if value < 0 and not text.startswith("(") else text
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"double({json.dumps(str(value))})"
        return f"({value!r})" if value < 0 or (value == 0 and math.copysign(1, value) < 0) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are a subset of CEL's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal_text(str(k))}: {literal_text(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a CEL literal")


def chain(node: Node) -> tuple[Node, list[Select | Index]]:
    """Split `root.a[k].b` into its root and the select/index steps, outermost last."""
    steps: list[Select | Index] = []
    while isinstance(node, (Select, Index)):
        steps.append(node)
        node = node.operand
    return node, steps[::-1]


def emit(node: Node, lower: bool, used: set[str]) -> str:
    """CEL source for a tree: as written (`lower=False`) or lowered to standard CEL (see module doc).

    Everything compound is parenthesized, so the output never depends on precedence. `used` collects
    the internal functions and variables the lowered source needs.
    """

    def e(n: Node) -> str:
        return emit(n, lower, used)

    match node:
        case Lit(text=text):
            return text
        case Ident(name=name):
            return name
        case Select() | Index() if lower:
            return f"({_guard(node, used)} ? {_raw(node, used)} : null)"
        case Select(operand=op, field=field):
            return f"{e(op)}.{field}"
        case Index(operand=op, index=index):
            return f"{e(op)}[{e(index)}]"
        case Call(target=None, name="has", args=(Select() as arg,)) if lower:
            return _guard(arg, used)
        case Call(target=None, name="now", args=()) if lower:
            used.add("_rt_now")
            return "_rt_now"
        case Call(target=None, name="now_plus" | "now_minus" as name, args=(arg,)) if lower:
            used.update(("_rt_now", f"_rt_{name}"))
            return f"_rt_{name}(_rt_now, {e(arg)})"
        case Call(target=target, name="lowercase" | "uppercase" | "json_parse" | "date" as name) if lower:
            used.add(f"_rt_{name}")
            args = node.args if target is None else (target, *node.args)
            return f"_rt_{name}({', '.join(e(a) for a in args)})"
        case Call(target=target, name=name, args=args):
            prefix = "" if target is None else f"{e(target)}."
            return f"{prefix}{name}({', '.join(e(a) for a in args)})"
        case Unary(op=op, operand=operand):
            return f"({op}{e(operand)})"
        case Binary(op=op, left=left, right=right) if lower and op in _LOOSE:
            used.add(_LOOSE[op])
            return f"{_LOOSE[op]}({e(left)}, {e(right)})"
        case Binary(op=op, left=left, right=right):
            return f"({e(left)} {op} {e(right)})"
        case Cond(cond=c, then=t, other=o):
            return f"({e(c)} ? {e(t)} : {e(o)})"
        case ListLit(items=items):
            return "[" + ", ".join(e(i) for i in items) + "]"
        case MapLit(entries=entries):
            return "{" + ", ".join(f"{e(k)}: {e(v)}" for k, v in entries) + "}"
    raise AssertionError(node)


def _raw(node: Node, used: set[str]) -> str:
    """A select/index chain without guards (its root and index expressions lowered)."""
    root, steps = chain(node)
    out = emit(root, True, used)
    for step in steps:
        out += f".{step.field}" if isinstance(step, Select) else f"[{emit(step.index, True, used)}]"
    return out


def _guard(node: Select | Index, used: set[str]) -> str:
    """True when every step of the chain exists: each prefix is a map holding the key (or a list long
    enough for an int index). Written with the *unguarded* prefixes, safe because `&&` stops at the
    first false; so the output grows with the square of the chain length, not exponentially."""
    root, steps = chain(node)
    prefix, parts = emit(root, True, used), []
    for step in steps:
        if isinstance(step, Select):
            parts.append(f"type({prefix}) == map && {literal_text(step.field)} in {prefix}")
            prefix += f".{step.field}"
        else:
            k = emit(step.index, True, used)
            parts.append(f"((type({prefix}) == map && {k} in {prefix}) || (type({prefix}) == list && "
                         f"type({k}) == int && {k} >= 0 && {k} < size({prefix})))")
            prefix += f"[{k}]"
    return "(" + " && ".join(parts) + ")"


def check(node: Node, source: str, variables: tuple[str, ...], bound: frozenset[str] = frozenset()) -> None:
    """Raise ExpressionError for an unknown variable or function (comprehension variables are bound)."""
    match node:
        case Ident(name=name) if name not in variables and name not in bound and name not in _TYPE_NAMES:
            expected = ", ".join(variables)
            raise ExpressionError(f"unknown variable {name!r} (expected one of {expected})", source)
        case Call(name=name) if name not in _KNOWN_FUNCTIONS:
            raise ExpressionError(f"unknown function {name!r}", source)
        case Call(target=None, name="has", args=args) if len(args) != 1 or not isinstance(args[0], Select):
            raise ExpressionError("has() takes one field selection, like has(event.data.x)", source)
        case Call(target=target, name=name, args=(Ident(name=var), *rest)) if name in MACROS and target:
            check(target, source, variables, bound)
            for arg in rest:
                check(arg, source, variables, bound | {var})
            return
    for child in _children(node):
        check(child, source, variables, bound)


def _children(node: Node) -> tuple[Node, ...]:
    match node:
        case Select(operand=op):
            return (op,)
        case Index(operand=op, index=index):
            return (op, index)
        case Call(target=target, args=args):
            return args if target is None else (target, *args)
        case Unary(operand=op):
            return (op,)
        case Binary(left=left, right=right):
            return (left, right)
        case Cond(cond=c, then=t, other=o):
            return (c, t, o)
        case ListLit(items=items):
            return items
        case MapLit(entries=entries):
            return tuple(n for pair in entries for n in pair)
    return ()


@functools.lru_cache(maxsize=4096)
def parse(source: str) -> Node:
    return _Parser(source).parse()



def substitute(node: Node, event: dict[str, Any], bound: frozenset[str]) -> Node:
    root, steps = chain(node)
    if isinstance(root, Ident) and root.name == "event" and "event" not in bound:
        value: Any = event
        for n, step in enumerate(steps):
            if isinstance(step, Select):
                key: Any = step.field
            elif isinstance(step.index, Lit) and step.index.scalar:
                key = step.index.value
            else:  # a dynamic index: substitute the static prefix and keep the rest
                return _rebuild(_value_literal(value), steps[n:], event, bound)
            value = field_value(value, key)
        return _value_literal(value)
    match node:
        case Call(target=None, name="has", args=(Select() as arg,)):
            arg_root, _ = chain(arg)
            if isinstance(arg_root, Ident) and arg_root.name == "event" and "event" not in bound:
                parent = substitute(arg.operand, event, bound)
                if isinstance(parent, Lit):
                    return _value_literal(isinstance(parent.value, dict) and arg.field in parent.value)
                return Call(None, "has", (Select(parent, arg.field),))
        case Call(target=target, name=name, args=(Ident(name=var) as v, *rest)) if name in MACROS and target:
            inner = bound | {var}
            return Call(substitute(target, event, bound), name,
                        (v, *(substitute(a, event, inner) for a in rest)))
        case Select(operand=op, field=field):
            return Select(substitute(op, event, bound), field)
        case Index(operand=op, index=index):
            return Index(substitute(op, event, bound), substitute(index, event, bound))
        case Call(target=target, name=name, args=args):
            return Call(None if target is None else substitute(target, event, bound), name,
                        tuple(substitute(a, event, bound) for a in args))
        case Unary(op=op, operand=operand):
            return Unary(op, substitute(operand, event, bound))
        case Binary(op=op, left=left, right=right):
            return Binary(op, substitute(left, event, bound), substitute(right, event, bound))
        case Cond(cond=c, then=t, other=o):
            return Cond(*(substitute(x, event, bound) for x in (c, t, o)))
        case ListLit(items=items):
            return ListLit(tuple(substitute(i, event, bound) for i in items))
        case MapLit(entries=entries):
            return MapLit(tuple((substitute(k, event, bound), substitute(v, event, bound))
                                for k, v in entries))
    return node


def _rebuild(node: Node, steps: list[Select | Index], event: dict[str, Any], bound: frozenset[str]) -> Node:
    for step in steps:
        if isinstance(step, Select):
            node = Select(node, step.field)
        else:
            node = Index(node, substitute(step.index, event, bound))
    return node


def field_value(value: Any, key: Any) -> Any:
    """One field or index step with the null-on-missing rule (matching the lowered guards)."""
    if isinstance(value, dict):
        return value.get(key) if isinstance(key, str) else None
    if isinstance(value, list) and isinstance(key, int) and not isinstance(key, bool):
        return value[key] if 0 <= key < len(value) else None
    return None
