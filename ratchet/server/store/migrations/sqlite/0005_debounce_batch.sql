-- Version 5: runs that wait to collect events (debounce, batching).

-- One open debounce per key: the run starts with the last event at `fire_at`.
CREATE TABLE debounces (
    key            TEXT PRIMARY KEY,
    function_slug  TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    first_seen     INTEGER NOT NULL,
    fire_at        INTEGER NOT NULL
);

-- One open batch per key: the run starts with all its events when full or at `fire_at`.
CREATE TABLE batches (
    key            TEXT PRIMARY KEY,
    function_slug  TEXT NOT NULL,
    event_ids      TEXT NOT NULL,
    first_at       INTEGER NOT NULL,
    fire_at        INTEGER NOT NULL
);

-- Their timers: one queue item per open debounce or batch (run_id `debounce:<key>` / `batch:<key>`).
CREATE UNIQUE INDEX queue_pending_key ON queue(run_id) WHERE kind IN ('debounce', 'batch');
