-- Version 3: flow control at run start (rate limit, throttle, singleton, priority).

-- The singleton key of a run (hashed), so a new run can find the active one for its key.
ALTER TABLE runs ADD COLUMN singleton_key TEXT;
CREATE INDEX runs_singleton ON runs(singleton_key, status) WHERE singleton_key IS NOT NULL;

-- `priority.run` in ms: among due items, one with priority p sorts as if due p ms earlier.
ALTER TABLE queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

-- Per-key flow-control state (throttle GCRA, rate-limit window), JSON, deletable after `expires_at`.
CREATE TABLE flow_state (
    key           TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    expires_at    INTEGER NOT NULL
);
