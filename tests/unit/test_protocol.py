"""Protocol helpers shared by server and SDK: step ids, durations, signatures, seeded ids, triggers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from ratchet import protocol
from ratchet.server import ids
from ratchet.server.engine import triggers


@pytest.mark.parametrize(
    ("step_id", "index", "expected"),
    [
        ("a", 0, "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"),
        ("my-step-id", 0, "e7d8a2f140845095749d60246ff1110c9d01d76a"),
        ("a", 1, "de89bfaf06245091a7873290a793604612302247"),  # sha1("a:1")
    ],
)
def test_step_hash(step_id: str, index: int, expected: str) -> None:
    assert protocol.step_hash(step_id, index) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("1m", 60), ("2h45m", 9900), ("300ms", 0.3), ("1d", 86400), ("1w", 604800), (7, 7), ("1.5h", 5400)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert protocol.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "-1s", "1s2", True])
def test_parse_duration_rejects_garbage_with_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        protocol.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (60, "1m"), (90, "90s"), (86400, "1d"), (0.25, "250ms"), (0, "1s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert protocol.format_duration(timedelta(seconds=seconds)) == text


def test_time_round_trip() -> None:
    dt = datetime(2026, 11, 24, 19, 40, 29, 871000, tzinfo=UTC)
    assert protocol.format_time(dt) == "2026-11-24T19:40:29.871Z"
    assert protocol.parse_time("2026-11-24T19:40:29.871Z") == dt


def test_hashed_signing_key_matches_the_reference_example() -> None:
    key = "signkey-prod-aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"
    assert protocol.hashed_signing_key(key) == "13216bdbddb256a9c661c2f6844cdba5ca81d1d9b4225153f0834c58d027fc8d"


def test_signature_verifies_and_rejects_tampering() -> None:
    key = "signkey-test-00ff"
    body = protocol.canonical_json({"b": 1, "a": [1, 2]})
    assert body == b'{"a":[1,2],"b":1}'
    header = protocol.sign(body, key)
    assert protocol.verify_signature(body, header, [key])
    assert not protocol.verify_signature(body + b" ", header, [key])
    assert not protocol.verify_signature(body, header, ["signkey-test-00fe"])
    assert protocol.verify_signature(body, header, ["signkey-test-00fe", key])  # fallback key
    assert not protocol.verify_signature(body, None, [key])
    assert not protocol.verify_signature(body, "garbage", [key])
    old = protocol.sign(body, key, unix_s=1)
    assert not protocol.verify_signature(body, old, [key])


def test_seeded_ids_are_deterministic_and_distinct_per_index() -> None:
    header = "1795549199558," + base64.b64encode(bytes(range(10))).decode()
    seed = ids.parse_seed(header)
    assert seed is not None
    first = [ids.seeded_ulid(seed, i) for i in (1, 2, 3)]
    assert first == [ids.seeded_ulid(seed, i) for i in (1, 2, 3)]
    assert len(set(first)) == 3
    # the ULID's time part is the seed's ms
    from ulid import ULID

    assert ULID.from_str(first[0]).milliseconds == 1795549199558


@pytest.mark.parametrize("header", ["", "abc", "123", "123,!!!", "123," + base64.b64encode(b"short").decode()])
def test_bad_seeds_are_ignored(header: str) -> None:
    assert ids.parse_seed(header) is None


@pytest.mark.parametrize(
    ("trigger", "name", "matches"),
    [
        ("shop/order.created", "shop/order.created", True),
        ("shop/order.created", "shop/order.created2", False),
        ("shop/*", "shop/order.created", True),
        ("shop/*", "other/x", False),
        ("app/user.*", "app/user.signup", True),
        ("app/user.*", "app/users", False),
        ("a.b", "axb", False),  # dots are literal
    ],
)
def test_event_trigger_matching(trigger: str, name: str, matches: bool) -> None:
    assert triggers.event_matches(trigger, name) is matches


def test_max_attempts_comes_from_step_retries() -> None:
    cfg = protocol.FunctionConfig.model_validate(
        {"id": "a-f", "steps": {"step": {"retries": {"attempts": 2}, "runtime": {"url": "http://x/api"}}}})
    assert cfg.max_attempts() == 3
    bare = protocol.FunctionConfig.model_validate({"id": "a-f", "steps": {"step": {"runtime": {"url": "http://x"}}}})
    assert bare.max_attempts() == 5  # default 4 retries
    top = protocol.FunctionConfig.model_validate({"id": "a-f", "retries": 50, "steps": {}})
    assert top.max_attempts() == 21  # capped at 20 retries


def test_new_ulids_sort_in_creation_order_even_within_a_millisecond() -> None:
    made = [ids.new_ulid(1_700_000_000_000) for _ in range(1000)]
    assert made == sorted(made) and len(set(made)) == 1000
