"""`ctx.failure` in an `on_failure` handler: the failed run, read from the `inngest/function.failed` event."""

from __future__ import annotations

import ratchet
from ratchet.sdk.event import FUNCTION_FAILED_EVENT, FunctionFailure

ORIGINAL = {"name": "shop/order.created", "data": {"id": 7}, "id": "01EVT", "ts": 1700000000000}
ERROR = {"error": "invalid status code: 500", "name": "ValueError", "message": "boom", "stack": "Traceback..."}


def failed(data: dict[str, object]) -> ratchet.Event:
    return ratchet.Event(name=FUNCTION_FAILED_EVENT, data=data, id="01RUN", ts=1700000001000)


def test_failure_from_the_server_event() -> None:
    # The data shape of reference §2.6 (what the server emits when a run fails for good).
    event = failed({"function_id": "shop-orders", "run_id": "01RUN", "error": ERROR, "event": ORIGINAL,
                    "events": [ORIGINAL], "_inngest": {"status": "failed"}})
    failure = FunctionFailure.from_event(event)
    assert failure == FunctionFailure(
        function_id="shop-orders", run_id="01RUN", name="ValueError", message="boom", stack="Traceback...",
        event=ratchet.Event(name="shop/order.created", data={"id": 7}, id="01EVT", ts=1700000000000),
        error=ERROR,
    )


def test_failure_tolerates_missing_fields() -> None:
    failure = FunctionFailure.from_event(failed({"error": {"error": "NonRetriableError"}}))
    assert failure is not None
    assert (failure.function_id, failure.run_id, failure.name, failure.message) == ("", "", "Error",
                                                                                     "NonRetriableError")
    assert failure.stack is None and failure.event is None
    bare = FunctionFailure.from_event(failed({"error": "not an object", "event": {"data": {}}}))
    assert bare is not None and bare.error == {} and bare.event is None


def test_no_failure_for_other_events() -> None:
    assert FunctionFailure.from_event(ratchet.Event(name="shop/order.created")) is None
