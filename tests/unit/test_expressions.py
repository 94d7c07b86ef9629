from __future__ import annotations

import copy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratchet.server.engine import expressions as ex

NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
ERR = object()  # evaluation fails (so `matches` is False)

EVENT = {
    "name": "shop/order.created",
    "id": "01HX",
    "ts": 1_700_000_000_000,
    "data": {
        "id": "ord_1",
        "n": 1.0,
        "count": 3,
        "price": 9.5,
        "neg": -2,
        "name": "Ada Lovelace",
        "email": "ADA@Example.com",
        "tags": ["vip", "eu"],
        "items": [{"sku": "a", "qty": 2.0}, {"sku": "b", "qty": 1.0}],
        "user": {"id": 42.0, "plan": "pro", "active": True},
        "nothing": None,
        "blob": '{"a": [1, 2], "b": "x"}',
        "when": "2024-01-02T03:04:05Z",
        "empty": "",
    },
}
ASYNC = {"name": "shop/order.paid", "data": {"id": "ord_1", "n": 1, "amount": 20, "user": {"id": 42}}}

CASES = [
    # comparisons and JSON numbers (doubles) against int literals
    ("event.data.n == 1", True),
    ("event.data.n == 1.0", True),
    ("event.data.count == 3.0", True),
    ("event.data.n != 1", False),
    ("event.data.price > 9", True),
    ("event.data.price >= 9.5", True),
    ("event.data.price < 10", True),
    ("event.data.count <= 2", False),
    ("event.data.neg < 0", True),
    ("-event.data.neg", 2),
    ("event.data.user.id == async.data.user.id", True),  # 42.0 vs 42
    ("event.data.n == async.data.n", True),
    ("event.data.id == async.data.id", True),
    ("event.name == 'shop/order.created'", True),
    ("event.data.user.active == true", True),
    ("event.data.user.active", True),
    # loose comparisons across types
    ("event.data.id == 1", False),
    ("event.data.id != 1", True),
    ("event.data.id < 1", False),
    ("event.data.id >= 1", False),
    ("!(event.data.id < 1)", True),
    ("event.data.user.active == 1", False),
    ("event.data.tags == 'vip'", False),
    ("null < 1", False),
    ("'b' > 'a'", True),
    ("[1, 2] == [1.0, 2.0]", True),
    # missing fields evaluate as null
    ("event.data.missing == null", True),
    ("event.data.missing == 1", False),
    ("event.data.missing != null", False),
    ("event.data.missing", None),
    ("event.data.a.b.c > 3", False),
    ("event.data.a.b.c == null", True),
    ("event.data.nothing == null", True),
    ("event.data.nothing.deeper == null", True),
    ("event.data.name.first == null", True),  # a field of a string
    ("event.data.items[5] == null", True),
    ("event.data.items[0].sku", "a"),
    ("event.data['user']['plan']", "pro"),
    ("event.data['no']['pe'] == null", True),
    ("async.data.missing == event.data.missing", True),
    # has()
    ("has(event.data.id)", True),
    ("has(event.data.missing)", False),
    ("has(event.data.nothing)", True),
    ("has(event.data.a.b.c)", False),
    ("has(event.data.user.plan)", True),
    ("!has(event.data.x) && event.data.n == 1", True),
    # in, size
    ("'vip' in event.data.tags", True),
    ("'us' in event.data.tags", False),
    ("'plan' in event.data.user", True),
    ("size(event.data.tags) == 2", True),
    ("event.data.tags.size()", 2),
    ("size(event.data.name)", 12),
    ("1 in [1.0, 2.0]", True),
    # macros
    ("event.data.items.exists(i, i.sku == 'b')", True),
    ("event.data.items.all(i, i.qty > 0)", True),
    ("event.data.items.all(i, i.qty > 1)", False),
    ("event.data.items.exists_one(i, i.qty == 2)", True),
    ("event.data.items.exists(i, i.missing == null)", True),
    ("event.data.items.map(i, i.sku)", ["a", "b"]),
    ("event.data.items.filter(i, i.qty > 1).size()", 1),
    ("event.data.tags.exists(t, t.startsWith('e'))", True),
    # string functions
    ("event.data.name.contains('Love')", True),
    ("event.data.name.startsWith('Ada')", True),
    ("event.data.name.endsWith('lace')", True),
    ("event.data.email.matches('^[A-Z]+@')", True),
    ("event.data.missing.startsWith('a')", ERR),
    ("lowercase(event.data.email) == 'ada@example.com'", True),
    ("uppercase(event.data.name)", "ADA LOVELACE"),
    ("event.data.email.lowercase()", "ada@example.com"),
    ("json_parse(event.data.blob).a[1]", 2),
    ("json_parse(event.data.blob).b == 'x'", True),
    ("json_parse(event.data.blob).zzz == null", True),
    # ternary, logic, arithmetic, + across types
    ("event.data.count > 2 ? 'big' : 'small'", "big"),
    ("event.data.missing ? 1 : 2", ERR),
    ("event.data.count > 5 || event.data.id == 'ord_1'", True),
    ("event.data.count > 5 && event.data.id == 'ord_1'", False),
    ("event.data.price * 2.0", 19.0),
    ("event.data.count + 1", 4),
    ("event.data.price + 1", 10.5),
    ("'user-' + event.data.user.id", "user-42"),
    ("'user-' + event.data.user.plan", "user-pro"),
    ("event.data.tags + ['x']", ["vip", "eu", "x"]),
    ("'a' + event.data.missing", None),
    ("1 / 0", ERR),
    # extra functions with the injected clock
    ("now()", "2023-11-14T22:13:20Z"),
    ("now_plus('1h')", "2023-11-14T23:13:20Z"),
    ("now_minus('2h45m')", "2023-11-14T19:28:20Z"),
    ("now_plus('30m') > now()", True),
    ("date(event.data.when)", "2024-01-02T03:04:05Z"),
    ("date(event.data.when) > now()", True),
    ("date(event.ts) == now()", True),
    ("date(event.data.when) < now_minus('1h')", False),
    ("timestamp('2024-01-01T00:00:00Z') < date(event.data.when)", True),
    # values (flow-control keys)
    ("event.data.user", {"id": 42.0, "plan": "pro", "active": True}),
    ("{'a': event.data.count, 'b': [event.data.id]}", {"a": 3, "b": ["ord_1"]}),
    ("vars.x == null", True),
]


@pytest.mark.parametrize(("source", "expected"), CASES, ids=[c[0] for c in CASES])
def test_expression_table(source: str, expected: object) -> None:
    expr = ex.compile(source)
    if expected is ERR:
        with pytest.raises(ex.EvaluationError, match="evaluation failed"):
            expr.evaluate(event=EVENT, async_=ASYNC, now_ms=NOW_MS)
        assert expr.matches(event=EVENT, async_=ASYNC, now_ms=NOW_MS) is False
        return
    got = expr.evaluate(event=EVENT, async_=ASYNC, now_ms=NOW_MS)
    assert got == expected
    if isinstance(expected, bool) or expected is None:
        assert got is expected
    # the same through prepared bindings
    bindings = ex.Bindings(event=EVENT, async_=ASYNC, now_ms=NOW_MS)
    assert expr.evaluate(bindings) == expected
    assert expr.matches(bindings) is (expected is True)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(
    ("source", "kind", "message"),
    [
        ("foo.bar == 1", "event", "unknown variable 'foo'"),
        ("async.data.id == 1", "event", "unknown variable 'async'"),
        ("event.data.id ==", "event", "end of expression"),
        ("event.data.", "event", "expected a field name"),
        ("(event.data.a", "match", "expected ')'"),
        ("event.data.a +* 2", "event", "unexpected '*' at column 15"),
        ("'unterminated", "event", "unexpected character"),
        ("event.data.a @ 1", "event", "unexpected character '@'"),
        ("nope(event.data)", "event", "unknown function 'nope'"),
        ("has(event)", "event", "has() takes one field selection"),
        ("", "event", "nothing to evaluate"),
        ("   ", "match", "nothing to evaluate"),
        ("event.data.a == 1 event", "event", "unexpected 'event'"),
        ("_rt_lt(1, 2)", "event", "unknown function '_rt_lt'"),
    ],
)
def test_validate_rejects_bad_expressions(source: str, kind: str, message: str) -> None:
    with pytest.raises(ex.ExpressionError, match=re.escape(message)) as info:
        ex.validate(source, kind)
    assert repr(source) in str(info.value)  # the message names the expression


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("event.data.id == async.data.id", ex.Kind.MATCH),
        ("event.data.items.exists(i, i.sku == 'a')", ex.Kind.EVENT),
        ("type(event.data.n) == double", ex.Kind.EVENT),
        ("vars.limit > 1", ex.Kind.EVENT),
        ("async.data.correlation_id == \"run.hash\"", "match"),
    ],
)
def test_validate_accepts(source: str, kind: ex.Kind) -> None:
    ex.validate(source, kind)


def test_compile_is_cached_and_keeps_source() -> None:
    assert ex.compile("event.data.a == 1") is ex.compile("event.data.a == 1")
    assert ex.compile("event.data.a == 1").source == "event.data.a == 1"


def test_evaluate_needs_a_clock() -> None:
    with pytest.raises(TypeError, match="now_ms"):
        ex.compile("1 == 1").evaluate()


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("event.data.p", {"p": 30}, 30),
        ("event.data.p", {"p": 12.9}, 12),
        ("event.data.p", {"p": -12.9}, -12),
        ("event.data.p", {"p": 5000}, 600),
        ("event.data.p", {"p": -5000.0}, -600),
        ("event.data.p", {"p": "10"}, 0),
        ("event.data.p", {"p": True}, 0),
        ("event.data.p", {}, 0),
        ("event.data.vip ? 120 : 0", {"vip": True}, 120),
        ("1 / 0", {}, 0),
    ],
)
def test_priority_seconds(source: str, data: dict, expected: int) -> None:
    assert ex.compile(source).priority_seconds(event={"data": data}, now_ms=NOW_MS) == expected


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("abc", "abc"),
        (1, "1"),
        (1.0, "1"),
        (1.5, "1.5"),
        (None, "null"),
        (True, "true"),
        ({"b": 1.0, "a": [2, "x"]}, '{"a":[2,"x"],"b":1}'),
    ],
)
def test_key_is_canonical(value: object, key: str) -> None:
    assert ex.compile("event.data.v").key(event={"data": {"v": value}}, now_ms=NOW_MS) == key


def test_key_of_missing_field_and_of_an_error() -> None:
    assert ex.compile("event.data.v").key(event={"data": {}}, now_ms=NOW_MS) == "null"
    assert ex.compile("1 / 0").key(event={}, now_ms=NOW_MS) == "null"


def test_residual_substitutes_event() -> None:
    res = ex.residual("event.data.id == async.data.id && has(event.data.x) == false", EVENT)
    assert "event" not in res
    assert ex.compile(res).matches(async_=ASYNC, now_ms=NOW_MS)
    assert ex.equality_index(res) == [("data.id", '"ord_1"')]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("async.data.id == 'x'", [("data.id", '"x"')]),
        ("'x' == async.data.id", [("data.id", '"x"')]),
        ("async.data.n == 1.0 && async.name == 'a/b'", [("data.n", "1"), ("name", '"a/b"')]),
        ("async.data['user']['id'] == -3", [("data.user.id", "-3")]),
        ("async.data.ok == true && (async.data.v > 1)", [("data.ok", "true")]),
        ("async.data.id == null", [("data.id", "null")]),
        ("async.data.id == 'x' || async.data.id == 'y'", None),
        ("async.data.id != 'x'", None),
        ("async.data.id == async.data.other", None),
        ("async.data.tags == ['a']", None),
        ("async.data['a.b'] == 1", None),
        ("async.data.n > 1", None),
    ],
)
def test_equality_index(source: str, expected: list | None) -> None:
    assert ex.equality_index(source) == expected


def test_index_values() -> None:
    event = {"data": {"id": "x", "n": 1.0, "m": 2, "f": 1.5, "l": [1], "d": {}, "b": False}}
    assert ex.index_values(event, "data.id") == '"x"'
    assert ex.index_values(event, "data.n") == ex.index_values(event, "data.m")[:-1] + "1"  # "1"
    assert ex.index_values(event, "data.n") == "1"
    assert ex.index_values(event, "data.f") == "1.5"
    assert ex.index_values(event, "data.b") == "false"
    assert ex.index_values(event, "data.missing") == "null"
    assert ex.index_values(event, "data.l") is None
    assert ex.index_values(event, "data.d") is None


def test_literal_round_trips() -> None:
    value = {"s": 'q"u\\o\nte', "n": -1, "f": -0.5, "l": [None, True, 1e300], "u": "é😀"}
    assert ex.compile(ex.literal(value)).evaluate(now_ms=NOW_MS) == value


# ------------------------------------------------------------------------------------ properties

KEYS = st.sampled_from(["a", "b", "id", "n"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, 1.0, -1, "1", "a", ""])
    | st.text(max_size=6)
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=8)
EVENTS = st.fixed_dictionaries({"name": st.sampled_from(["a/x", "b/y"]),
                                "data": st.dictionaries(KEYS, JSON, max_size=4)})


@st.composite
def paths(draw: st.DrawFn, root: str) -> str:
    parts = draw(st.lists(KEYS, min_size=1, max_size=3))
    return f"{root}.data." + ".".join(parts)


@st.composite
def operands(draw: st.DrawFn) -> str:
    return draw(st.one_of(paths("event"), paths("async"), st.builds(ex.literal, SCALARS), st.just("event.name")))


@st.composite
def conditions(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "+"]))
    left, right = draw(operands()), draw(operands())
    atom = f"({left} {op} {right})"
    if op == "+":
        atom = f"({atom} == {draw(operands())})"
    kind = draw(st.sampled_from(["atom", "has", "and", "or", "not", "ternary", "in"]))
    if kind == "has":
        return f"has({draw(paths(draw(st.sampled_from(['event', 'async']))))})"
    if kind == "in":
        return f"({left} in [{right}, {draw(operands())}])"
    if kind in ("and", "or"):
        return f"({atom} {'&&' if kind == 'and' else '||'} {draw(conditions())})"
    if kind == "not":
        return f"!{atom}"
    if kind == "ternary":
        return f"({atom} ? {draw(operands())} : {draw(operands())})"
    return atom


def _outcome(expr: ex.Expression, **kwargs: object) -> object:
    try:
        return ("ok", expr.evaluate(now_ms=NOW_MS, **kwargs))  # type: ignore[arg-type]
    except ex.EvaluationError:
        return ("error",)


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(source=conditions(), event=EVENTS, candidate=EVENTS)
def test_residual_evaluates_like_the_original(source: str, event: dict, candidate: dict) -> None:
    res = ex.residual(source, event)
    assert "event" not in res.replace("async", "")
    full = _outcome(ex.compile(source), event=event, async_=candidate)
    assert _outcome(ex.compile(res), async_=candidate) == full


@PROPS
@given(path=paths("async"), other=conditions(), event=EVENTS, candidate=EVENTS,
       value=SCALARS, event_side=st.booleans())
def test_equality_index_has_no_false_negatives(path: str, other: str, event: dict, candidate: dict,
                                               value: object, event_side: bool) -> None:
    rhs = path.replace("async.", "event.", 1) if event_side else ex.literal(value)
    source = f"{path} == {rhs} && {other}" if event_side else f"{rhs} == {path} && {other}"
    res = ex.residual(source, event)
    index = ex.equality_index(res)
    if not isinstance(value if not event_side else _at(event, path), (list, dict)):
        assert index is not None  # a scalar on the other side always gives an index key
    if index is not None and ex.compile(res).matches(async_=candidate, now_ms=NOW_MS):
        for index_path, key in index:
            assert ex.index_values(candidate, index_path) == key


def _at(event: dict, path: str) -> object:
    value: object = event
    for field in path.split(".")[1:]:
        value = value.get(field) if isinstance(value, dict) else None
    return value


@PROPS
@given(a=SCALARS, b=SCALARS)
def test_index_keys_agree_with_equality(a: object, b: object) -> None:
    equal = ex.compile("async.data.a == async.data.b").matches(async_={"data": {"a": a, "b": b}}, now_ms=0)
    keys_equal = ex.index_values({"data": {"a": a}}, "data.a") == ex.index_values({"data": {"b": b}}, "data.b")
    assert equal == keys_equal


def _floaty(value: object) -> object:
    """The same value as JSON numbers-as-doubles would give it."""
    if isinstance(value, bool) or not isinstance(value, (int, dict, list)):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floaty(v) for k, v in reversed(list(value.items()))}
    return [_floaty(v) for v in value]


@PROPS
@given(value=JSON)
def test_key_is_stable_and_equal_for_equal_values(value: object) -> None:
    expr = ex.compile("event.data.v")
    key = expr.key(event={"data": {"v": value}}, now_ms=NOW_MS)
    assert expr.key(event={"data": {"v": copy.deepcopy(value)}}, now_ms=NOW_MS) == key
    assert expr.key(event={"data": {"v": _floaty(value)}}, now_ms=NOW_MS) == key
