-- Ratchet SQLite schema, version 1. Times are integer ms since the epoch (UTC); JSON is TEXT.

CREATE TABLE apps (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    url           TEXT NOT NULL,
    sdk           TEXT,
    framework     TEXT,
    checksum      TEXT NOT NULL,
    synced_at     INTEGER NOT NULL,
    error         TEXT
);

CREATE TABLE functions (
    slug          TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES apps(id),
    name          TEXT NOT NULL,
    config        TEXT NOT NULL,
    url           TEXT NOT NULL,
    archived      INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX functions_app ON functions(app_id);

-- A retried send with the same id seed stores the event again under the same internal id, so the
-- internal id is not unique; `seq` orders events by arrival.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    internal_id   TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    v             TEXT,
    user          TEXT
);
CREATE INDEX events_internal ON events(internal_id);
CREATE INDEX events_name ON events(name, seq);

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    function_slug   TEXT NOT NULL,
    app_id          TEXT NOT NULL,
    status          TEXT NOT NULL,
    event_ids       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    ended_at        INTEGER,
    output          TEXT,
    stack           TEXT NOT NULL DEFAULT '[]',
    force_step_plan INTEGER NOT NULL DEFAULT 0,
    error           TEXT
);
CREATE INDEX runs_function ON runs(function_slug, id);
CREATE INDEX runs_status ON runs(status, id);

-- Which runs an event started (an event may start many, a batch run has many events).
CREATE TABLE run_events (
    event_id      TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    PRIMARY KEY (event_id, run_id)
);

-- Run idempotency keys (function + event id, or an idempotency expression), kept for 24 h.
CREATE TABLE run_keys (
    key           TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX run_keys_expiry ON run_keys(expires_at);

CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    hash          TEXT NOT NULL,
    name          TEXT NOT NULL,
    op            TEXT NOT NULL,
    status        TEXT NOT NULL,
    memo          TEXT,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 1,
    seq           INTEGER NOT NULL,
    PRIMARY KEY (run_id, hash)
);

CREATE TABLE queue (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL,
    target        TEXT NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 0,
    due_at        INTEGER NOT NULL,
    lease_owner   TEXT,
    lease_until   INTEGER,
    last_error    TEXT
);
CREATE INDEX queue_due ON queue(due_at) WHERE lease_owner IS NULL;
CREATE INDEX queue_lease ON queue(lease_until) WHERE lease_owner IS NOT NULL;
CREATE INDEX queue_run ON queue(run_id);
