"""Internal events the engine emits about runs, with the data shapes SDKs and users rely on.

- `inngest/function.invoked`: starts the invoked function (whatever its triggers) for `step.invoke`.
- `inngest/function.finished`: a run ended (any status); resolves the invoking parent's pause.
- `inngest/function.failed`: a run failed; triggers `on_failure` functions.
- `inngest/function.cancelled`: a run was cancelled.
"""

from __future__ import annotations

from typing import Any

from ratchet import protocol

INVOKED = "inngest/function.invoked"
FINISHED = "inngest/function.finished"
FAILED = "inngest/function.failed"
CANCELLED = "inngest/function.cancelled"
SCHEDULED = "inngest/scheduled.timer"


def invoke_meta(event: dict[str, Any]) -> dict[str, Any]:
    """The `_inngest` object of an invocation event (empty for any other event)."""
    data = event.get("data")
    meta = data.get("_inngest") if isinstance(data, dict) else None
    return meta if isinstance(meta, dict) else {}


def invoker(meta: dict[str, Any]) -> tuple[str, str] | None:
    """The parent run id and invoke step hash of an invocation's `_inngest` (see `invoked_event`: `gid` is
    the parent run, `correlation_id` is `<parent run>.<step hash>`); None when they do not say."""
    parent, correlation = meta.get("gid"), meta.get("correlation_id")
    if not isinstance(parent, str) or not isinstance(correlation, str) or not parent:
        return None
    step = correlation.removeprefix(parent + ".")
    return (parent, step) if step and step != correlation else None


def invoked_event(*, target_fn: str, payload: dict[str, Any], correlation_id: str, expires_at: int,
                  run_id: str, step_name: str, source_fn: str, source_app: str) -> dict[str, Any]:
    """The event that starts an invoked function; its data is the payload plus `_inngest`."""
    data = dict(payload.get("data") or {})
    data["_inngest"] = {
        "fn_id": target_fn, "correlation_id": correlation_id, "expire": expires_at, "gid": run_id,
        "name": step_name, "source_app_id": source_app, "source_fn_id": source_fn, "source_fn_v": 1,
    }
    event: dict[str, Any] = {"name": INVOKED, "data": data}
    if isinstance(payload.get("v"), str):
        event["v"] = payload["v"]
    return event


def _failure_error(output: Any, status: protocol.RunStatus, summary: str | None) -> dict[str, Any]:
    """The `error` object of a failure event: the final error body plus an `error` summary (the app's
    reply status when the app failed the run, else the engine's error name)."""
    body = output if isinstance(output, dict) else {}
    name = body.get("name") if isinstance(body.get("name"), str) else "Error"
    message = body.get("message") if isinstance(body.get("message"), str) else str(output)
    if status == protocol.RunStatus.CANCELLED:
        summary = "function cancelled"
    elif summary is None:
        summary = name
    out: dict[str, Any] = {"error": summary, "name": name, "message": message}
    if "stack" in body:
        out["stack"] = body["stack"]
    return out


def run_ended_events(*, run_id: str, function_slug: str, events: list[dict[str, Any]],
                     status: protocol.RunStatus, output: Any, finished: bool = True,
                     summary: str | None = None) -> tuple[dict[str, Any], ...]:
    """`function.failed` or `function.cancelled` when the run did not complete, and `function.finished`
    unless `finished` is false (nothing listens: the run was not invoked and no function triggers on it,
    so the executor skips an event per completed run). The failed event's id is the run id, so it
    starts each `on_failure` function once. `summary` is the error's `error` field, e.g.
    `invalid status code: 400` for a run the app's reply failed."""
    event = events[0] if events else {}
    base: dict[str, Any] = {"function_id": function_slug, "run_id": run_id, "event": event, "events": events}
    correlation = invoke_meta(event).get("correlation_id")
    out: list[dict[str, Any]] = []
    error = None if status == protocol.RunStatus.COMPLETED else _failure_error(output, status, summary)
    if finished or correlation is not None:
        data = dict(base, _inngest={"status": status.value})
        if correlation is not None:
            data["correlation_id"] = correlation
        if error is None:
            data["result"] = output
        else:
            data["error"] = error
        out.append({"name": FINISHED, "id": f"{run_id}.finished", "data": data})
    if status == protocol.RunStatus.CANCELLED:
        out.append({"name": CANCELLED, "id": f"{run_id}.cancelled", "data": dict(base, error=error)})
    elif status == protocol.RunStatus.FAILED:
        out.append({"name": FAILED, "id": run_id, "data": dict(base, error=error, _inngest={"status": status.value})})
    return tuple(out)
