"""Inngest expressions: CEL with Inngest's loosenings, compiled once and evaluated purely.

Where they are used (reference/inngest-protocol.md §9): trigger `expression` and batch `if` (bool over
`event`), `wait_for_event` / `cancel[].if` (bool over `event` = the run's trigger and `async` = the
candidate), flow-control keys and `idempotency` (a value over `event`, see `Expression.key`), and
`priority.run` (`Expression.priority_seconds`).

**Library.** Evaluation is done by `common-expression-language` (module `cel`, Rust bindings to the
`cel` crate), chosen over the pure-Python `cel-python` after measuring both here: a compiled program
runs in about 2 µs plus about 1 µs per field of the events converted into it (5-15 µs for typical
events), against about 80 µs for `cel-python` on the same expression; both accept Python functions.
Neither gives Inngest's loosenings out of the box, and the Rust binding exposes no syntax tree and no
operator overloading, so `cel_syntax` parses the source and *lowers* it into standard CEL that the
library compiles and runs (missing field -> null through guards, loose `< <= > >= +` through the
`_rt_*` functions below, `now()` through an injected variable). `==`/`!=` need nothing: the library
already compares int with double numerically and other mixed types as unequal. The syntax tree also
gives `residual`, `equality_index` and `validate`.

Pure: no I/O; the only clock is the `now_ms` the caller passes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import math
from collections.abc import Callable
from typing import Any

import cel

from ratchet import protocol
from ratchet.server.engine import cel_syntax

PRIORITY_LIMIT_S = 600


ExpressionError = cel_syntax.ExpressionError
EvaluationError = cel_syntax.EvaluationError


class Kind(enum.StrEnum):
    """Where an expression is used; decides which variables it may reference."""

    EVENT = "event"  #: trigger `expression`, batch `if`, flow-control keys, idempotency, priority
    MATCH = "match"  #: `wait_for_event` / `cancel[].if`: `event` and `async`


_VARIABLES = {Kind.EVENT: ("event", "vars"), Kind.MATCH: ("event", "async", "vars")}


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ordered(a: Any, b: Any) -> bool:
    """Whether `a < b` is defined under Inngest's loosening: numbers with numbers, else the same type."""
    if _numeric(a) and _numeric(b):
        return True
    return type(a) is type(b) and isinstance(a, (str, bool, bytes, dt.datetime, dt.timedelta))


def _add(a: Any, b: Any) -> Any:
    if (_numeric(a) and _numeric(b)) or (type(a) is type(b) and isinstance(a, (str, list, dt.timedelta))):
        return a + b
    if isinstance(a, dt.datetime) and isinstance(b, dt.timedelta):
        return a + b
    if isinstance(a, str) and (_numeric(b) or isinstance(b, bool)):  # "user-" + event.data.id
        return a + _canonical(b)
    if isinstance(b, str) and (_numeric(a) or isinstance(a, bool)):
        return _canonical(a) + b
    return None


def _date(value: Any) -> dt.datetime:
    """`date("2024-01-02T03:04:05Z")` (RFC 3339 / ISO 8601) or `date(<epoch milliseconds>)`."""
    if _numeric(value):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _string_fn(method: Callable[[str], str]) -> Callable[[Any], Any]:
    return lambda s: method(s) if isinstance(s, str) else s


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_rt_lt": lambda a, b: _ordered(a, b) and a < b,
    "_rt_le": lambda a, b: _ordered(a, b) and a <= b,
    "_rt_gt": lambda a, b: _ordered(a, b) and a > b,
    "_rt_ge": lambda a, b: _ordered(a, b) and a >= b,
    "_rt_add": _add,
    "_rt_lowercase": _string_fn(str.lower),
    "_rt_uppercase": _string_fn(str.upper),
    "_rt_json_parse": json.loads,
    "_rt_date": _date,
    "_rt_now_plus": lambda now, d: now + protocol.parse_duration(d),
    "_rt_now_minus": lambda now, d: now - protocol.parse_duration(d),
}


def _plain(value: Any) -> Any:
    """Library results as JSON-like Python: timestamps as RFC 3339 strings, durations as seconds."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _canonical(value: Any) -> str:
    """One string per `==`-equal scalar: integral floats print as ints (1 and 1.0 -> "1"), strings as
    JSON strings (so "1" and 1 differ), null/true/false as in JSON. Exact for |n| <= 2**53."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(_normalized(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, float):
        return int(value) if value.is_integer() else value if math.isfinite(value) else str(value)
    return value


def _timestamp(now_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)


class Bindings:
    """Variables converted to CEL values once, for evaluating many expressions against the same
    events (e.g. every pause whose index key matched an incoming event): about 2 µs per expression
    instead of paying the conversion each time.
    """

    __slots__ = ("context",)

    def __init__(self, *, event: dict[str, Any] | None = None, async_: dict[str, Any] | None = None,
                 vars: dict[str, Any] | None = None, now_ms: int) -> None:
        variables = {"event": event or {}, "async": async_ or {}, "vars": vars or {},
                     "_rt_now": _timestamp(now_ms)}
        self.context = cel.Context(variables=variables, functions=_FUNCTIONS)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Expression:
    """A compiled expression. Build with `compile`; evaluation is pure given `now_ms`."""

    source: str  #: as written by the user
    lowered: str  #: the standard CEL actually run (see module doc)
    _program: Any
    _variables: tuple[str, ...]  # the declared variables the program references
    _functions: dict[str, Callable[..., Any]]
    _uses_now: bool

    def evaluate(self, bindings: Bindings | None = None, *, event: dict[str, Any] | None = None,
                 async_: dict[str, Any] | None = None, vars: dict[str, Any] | None = None,
                 now_ms: int | None = None) -> Any:
        """The value of the expression, as plain Python (dict/list/str/float/int/bool/None).

        Args:
            bindings: variables prepared once with `Bindings` (when checking many expressions against
                the same events); otherwise pass them as keywords:
            event: the triggering event (or the run's first event for `wait_for_event`/`cancel`).
            async_: the incoming candidate event (`wait_for_event` / `cancel`).
            vars: extra variables, exposed as `vars`.
            now_ms: the clock for `now()`, `now_plus()` and `now_minus()`, in epoch milliseconds.

        Raises:
            EvaluationError: the expression failed at run time (a missing field is *not* an error).
        """
        if bindings is not None:
            context: Any = bindings.context
        else:
            if now_ms is None:
                raise TypeError("evaluate() needs now_ms (or bindings)")
            values = {"event": event, "async": async_, "vars": vars}
            # Only the variables the program reads: converting a Python dict into CEL values is most
            # of the cost of a call (about 1 µs per small field).
            context = dict(self._functions)
            for name in self._variables:
                context[name] = values[name] if values[name] is not None else {}
            if self._uses_now:
                context["_rt_now"] = _timestamp(now_ms)
        try:
            return _plain(self._program.execute(context))
        except Exception as exc:  # noqa: BLE001 - the library maps CEL errors to many Python types
            raise EvaluationError(f"evaluation failed: {exc}", self.source) from None

    def matches(self, bindings: Bindings | None = None, **kwargs: Any) -> bool:
        """True only when the expression evaluates to boolean true; errors and non-booleans are False."""
        try:
            return self.evaluate(bindings, **kwargs) is True
        except EvaluationError:
            return False

    def key(self, bindings: Bindings | None = None, **kwargs: Any) -> str:
        """A stable string of the value, for hashing into flow-control keys: a string result as is,
        anything else as canonical JSON (sorted keys, integral floats as ints, so 1 and 1.0 agree).
        Never raises: an evaluation error gives the key of null, "null"."""
        try:
            value = self.evaluate(bindings, **kwargs)
        except EvaluationError:
            value = None
        return value if isinstance(value, str) else _canonical(value)

    def priority_seconds(self, bindings: Bindings | None = None, **kwargs: Any) -> int:
        """`priority.run`: the value as whole seconds clamped to ±600; non-numbers and errors give 0."""
        try:
            value = self.evaluate(bindings, **kwargs)
        except EvaluationError:
            return 0
        if not _numeric(value) or not math.isfinite(value):
            return 0
        return max(-PRIORITY_LIMIT_S, min(PRIORITY_LIMIT_S, int(value)))


@functools.lru_cache(maxsize=4096)
def compile(source: str) -> Expression:
    """Parse, lower and compile `source` (cached by source). Variables are not checked: see `validate`.

    Raises:
        ExpressionError: bad syntax, an unknown function, or a source the library rejects.
    """
    tree = cel_syntax.parse(source)
    cel_syntax.check(tree, source, ("event", "async", "vars"))
    used: set[str] = set()
    lowered = cel_syntax.emit(tree, True, used)
    try:
        program = cel.compile(lowered)
    except Exception as exc:  # noqa: BLE001  # pragma: no cover - our parser only accepts valid CEL
        raise ExpressionError(f"invalid expression: {exc}", source) from None
    names = set(program.variables())
    return Expression(
        source=source,
        lowered=lowered,
        _program=program,
        _variables=tuple(v for v in ("event", "async", "vars") if v in names),
        _functions={name: _FUNCTIONS[name] for name in sorted(used) if name in _FUNCTIONS},
        _uses_now="_rt_now" in used,
    )


def validate(source: str, kind: Kind | str) -> None:
    """Sync-time check: syntax, functions, and variables allowed for `kind` (`async` only in MATCH).

    Raises:
        ExpressionError: naming the problem and the expression.
    """
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("nothing to evaluate", str(source))
    compile(source)
    cel_syntax.check(cel_syntax.parse(source), source, _VARIABLES[Kind(kind)])


def literal(value: Any) -> str:
    """A CEL literal for a JSON-like value (`"a\\"b"`, `1.5`, `[1, null]`, `{"k": true}`), for writing
    expressions such as `async.data.correlation_id == <literal>`."""
    return cel_syntax.literal_text(value)


def residual(source: str, event: dict[str, Any] | None) -> str:
    """`source` with every `event.*` reference replaced by its literal value, so that evaluating the
    result with only `async` gives the same value as evaluating `source` with both. A missing field
    becomes `null` and `has(event.x)` becomes `true`/`false`, as they would evaluate. The result is
    source in the same dialect (re-parsable by `compile`).

    Raises:
        ExpressionError: `source` does not parse.
    """
    return cel_syntax.emit(cel_syntax.substitute(cel_syntax.parse(source), event or {}, frozenset()), False, set())


def equality_index(source: str) -> list[tuple[str, str]] | None:
    """Index keys for a (residual) match expression: one `(path, canonical literal)` pair for each
    top-level `&&` conjunct of the form `async.<path> == <scalar literal>` (either order), where path
    is the dotted field path (`"data.id"`; fields containing "." are skipped). None when there is none.

    Contract: if the expression is true for an event `e`, then for every pair
    `index_values(e, path) == literal` (no false negatives). The converse does not hold (other
    conjuncts, NaN, ints beyond 2**53), so candidates found through the index must still be checked
    with the full expression.
    """
    tree, pairs = cel_syntax.parse(source), []
    conjuncts, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, cel_syntax.Binary) and node.op == "&&":
            todo += [node.right, node.left]
        else:
            conjuncts.append(node)
    for node in conjuncts:
        if isinstance(node, cel_syntax.Binary) and node.op == "==":
            for side, other in ((node.left, node.right), (node.right, node.left)):
                path, literal = _async_path(side), _scalar(other)
                if path is not None and literal is not None:
                    pairs.append((path, _canonical(literal.value)))
                    break
    return pairs or None


def _async_path(node: cel_syntax.Node) -> str | None:
    root, steps = cel_syntax.chain(node)
    if not (isinstance(root, cel_syntax.Ident) and root.name == "async" and steps):
        return None
    fields = []
    for step in steps:
        if isinstance(step, cel_syntax.Select):
            fields.append(step.field)
        elif isinstance(step.index, cel_syntax.Lit) and isinstance(step.index.value, str):
            fields.append(step.index.value)
        else:
            return None
    return None if any("." in f or not f for f in fields) else ".".join(fields)


def _scalar(node: cel_syntax.Node) -> cel_syntax.Lit | None:
    if (isinstance(node, cel_syntax.Unary) and node.op == "-" and isinstance(node.operand, cel_syntax.Lit)
            and _numeric(node.operand.value)):
        return cel_syntax.Lit("-" + node.operand.text, -node.operand.value, True)
    if isinstance(node, cel_syntax.Lit) and node.scalar:
        return node
    return None


def index_values(event: dict[str, Any], path: str) -> str | None:
    """The canonical string of `event`'s value at a dotted `path` (as `equality_index` returns), for
    looking up pauses. A missing field gives "null" (missing evaluates as null); a list or map gives
    None, since it can never equal the scalar literals that `equality_index` indexes."""
    value: Any = event
    for field in path.split("."):
        value = cel_syntax.field_value(value, field)
    return None if isinstance(value, (dict, list)) else _canonical(value)
