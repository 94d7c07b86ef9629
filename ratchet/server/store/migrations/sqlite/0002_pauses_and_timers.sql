-- Version 2: pauses (wait-for-event, invoke, cancel-on) and queue items that are not app calls.

-- `kind`: 'call' (an app call; `target` is `step` or a step hash), 'timeout' (a pause expires),
-- 'emit' (internal events to ingest: the outbox), 'cron' (a schedule's next tick), 'run_timeout'.
-- `payload` holds what a non-call item needs (JSON).
ALTER TABLE queue ADD COLUMN kind TEXT NOT NULL DEFAULT 'call';
ALTER TABLE queue ADD COLUMN payload TEXT;
CREATE INDEX queue_run_target ON queue(run_id, kind, target);

-- A run waiting for an event. `expression` is the residual `if` (only `async` left) or NULL (any event
-- of that name matches). `index_path`/`index_value` hold one `async.<path> == <literal>` conjunct of it,
-- so an incoming event only meets the pauses whose value at that path equals its own.
CREATE TABLE pauses (
    id            TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    step_hash     TEXT,
    step_name     TEXT,
    event_name    TEXT NOT NULL,
    expression    TEXT,
    index_path    TEXT,
    index_value   TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER
);
CREATE INDEX pauses_match ON pauses(event_name, index_path, index_value);
CREATE INDEX pauses_run ON pauses(run_id);

-- Cron schedules fire once per tick: a cron item has run_id `cron:<function>` and is unique per tick.
CREATE UNIQUE INDEX queue_cron_tick ON queue(run_id, due_at) WHERE kind = 'cron';
