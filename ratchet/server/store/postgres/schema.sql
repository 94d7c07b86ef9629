-- The declared PostgreSQL schema: what the migrations in store/migrations/postgres/ build, in one file.
-- tests/contract/test_postgres_schema.py builds a database from this file and one by the migrations and
-- compares them (procrastinate's drift test). A new migration updates this file in the same change.


CREATE TABLE apps (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    url           TEXT NOT NULL,
    sdk           TEXT,
    framework     TEXT,
    checksum      TEXT NOT NULL,
    synced_at     BIGINT NOT NULL,
    error         TEXT
);

CREATE TABLE functions (
    slug          TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES apps(id),
    name          TEXT NOT NULL,
    config        TEXT NOT NULL,
    url           TEXT NOT NULL,
    archived      BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX functions_app ON functions(app_id);

-- A retried send with the same id seed stores the event again under the same internal id, so the
-- internal id is not unique; `seq` orders events by arrival.
CREATE TABLE events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    internal_id   TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    received_at   BIGINT NOT NULL,
    v             TEXT,
    "user"        TEXT
);
CREATE INDEX events_internal ON events(internal_id);
CREATE INDEX events_name ON events(name, seq);
CREATE INDEX events_received ON events(received_at);
-- Searching runs by text in their events' data (ILIKE '%text%') goes through this trigram index.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX events_data_trgm ON events USING gin (data gin_trgm_ops);

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    function_slug   TEXT NOT NULL,
    app_id          TEXT NOT NULL,
    status          TEXT NOT NULL,
    event_ids       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    ended_at        BIGINT,
    output          TEXT,
    stack           TEXT NOT NULL DEFAULT '[]',
    force_step_plan BOOLEAN NOT NULL DEFAULT FALSE,
    error           TEXT,
    -- the singleton key of a run (hashed), so a new run can find the active one for its key
    singleton_key   TEXT,
    -- the run's concurrency limits, JSON [[key, limit], ...] (hashed keys), copied to each of its calls
    concurrency     TEXT,
    -- a rerun: the run it reruns, and the hash of the step it started from (NULL: from the start)
    rerun_of        TEXT,
    rerun_from      TEXT,
    -- started by `step.invoke`: the parent run and its invoke step's hash
    invoked_by      TEXT,
    invoked_step    TEXT
);
CREATE INDEX runs_function ON runs(function_slug, id);
CREATE INDEX runs_status ON runs(status, id);
CREATE INDEX runs_app ON runs(app_id, id);
CREATE INDEX runs_singleton ON runs(singleton_key, status) WHERE singleton_key IS NOT NULL;
CREATE INDEX runs_rerun_of ON runs(rerun_of) WHERE rerun_of IS NOT NULL;
CREATE INDEX runs_invoked_by ON runs(invoked_by) WHERE invoked_by IS NOT NULL;
CREATE INDEX runs_ended ON runs(ended_at) WHERE ended_at IS NOT NULL;

-- Which runs an event started (an event may start many, a batch run has many events).
CREATE TABLE run_events (
    event_id      TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    PRIMARY KEY (event_id, run_id)
);
CREATE INDEX run_events_run ON run_events(run_id);

-- Run idempotency keys (function + event id, or an idempotency expression), kept for 24 h. The key is
-- UTF-8 BYTEA: the engine joins its parts with NUL, which TEXT cannot hold.
CREATE TABLE run_keys (
    key           BYTEA PRIMARY KEY,
    run_id        TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX run_keys_expiry ON run_keys(expires_at);

CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    hash          TEXT NOT NULL,
    name          TEXT NOT NULL,
    op            TEXT NOT NULL,
    status        TEXT NOT NULL,
    memo          TEXT,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    attempts      INTEGER NOT NULL DEFAULT 1,
    seq           INTEGER NOT NULL,
    -- what the step was given (its opcode's options), JSON; NULL for steps recorded before version 6
    input         TEXT,
    PRIMARY KEY (run_id, hash)
);

-- Work to do. `kind`: 'call' (an app call; `target` is `step` or a step hash), 'timeout' (a pause
-- expires), 'emit' (the outbox), 'cron', 'run_timeout', 'debounce', 'batch'; `payload` is JSON.
-- `priority` (ms): among due items, one with priority p sorts as if due p ms earlier. A due call that
-- found a concurrency limit full waits with `blocked` until a call holding that key ends.
CREATE TABLE queue (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        TEXT NOT NULL,
    target        TEXT NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 0,
    due_at        BIGINT NOT NULL,
    lease_owner   TEXT,
    lease_until   BIGINT,
    last_error    TEXT,
    kind          TEXT NOT NULL DEFAULT 'call',
    payload       TEXT,
    priority      BIGINT NOT NULL DEFAULT 0,
    blocked       BOOLEAN NOT NULL DEFAULT FALSE,
    -- handling failures (engine errors, leases that ran out) and the last one; see dead_letters
    failures      INTEGER NOT NULL DEFAULT 0,
    failure       TEXT
);
CREATE INDEX queue_due ON queue((due_at - priority), id) WHERE lease_owner IS NULL AND NOT blocked;
CREATE INDEX queue_lease ON queue(lease_until) WHERE lease_owner IS NOT NULL;
CREATE INDEX queue_run_target ON queue(run_id, kind, target);
-- Cron schedules fire once per tick: a cron item has run_id `cron:<function>` and is unique per tick.
CREATE UNIQUE INDEX queue_cron_tick ON queue(run_id, due_at) WHERE kind = 'cron';
-- One timer per open debounce or batch (run_id `debounce:<key>` / `batch:<key>`).
CREATE UNIQUE INDEX queue_pending_key ON queue(run_id) WHERE kind IN ('debounce', 'batch');

-- A run waiting for an event. `expression` is the residual `if` (only `async` left) or NULL (any event
-- of that name matches). `index_path`/`index_value` hold one `async.<path> == <literal>` conjunct of it.
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
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT
);
CREATE INDEX pauses_match ON pauses(event_name, index_path, index_value);
CREATE INDEX pauses_run ON pauses(run_id);

-- Per-key flow-control state (throttle GCRA, rate-limit window), JSON, deletable after `expires_at`.
CREATE TABLE flow_state (
    key           TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- The concurrency keys of each call; a leased call counts against each of its keys' limits. A deleted
-- queue item takes its key rows with it (SQLite does this with a trigger).
CREATE TABLE item_keys (
    key           TEXT NOT NULL,
    item_id       BIGINT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    lim           INTEGER NOT NULL,
    PRIMARY KEY (key, item_id)
);
CREATE INDEX item_keys_item ON item_keys(item_id);

-- One open debounce per key: the run starts with the last event at `fire_at`.
CREATE TABLE debounces (
    key            TEXT PRIMARY KEY,
    function_slug  TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    first_seen     BIGINT NOT NULL,
    fire_at        BIGINT NOT NULL
);

-- One open batch per key: the run starts with all its events when full or at `fire_at`.
CREATE TABLE batches (
    key            TEXT PRIMARY KEY,
    function_slug  TEXT NOT NULL,
    event_ids      TEXT NOT NULL,
    first_at       BIGINT NOT NULL,
    fire_at        BIGINT NOT NULL
);

-- Poison queue items: moved here with a reason after too many failed attempts at handling them.
CREATE TABLE dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id     BIGINT NOT NULL,
    run_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    payload     TEXT,
    failures    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX dead_letters_created ON dead_letters(created_at);
CREATE INDEX dead_letters_run ON dead_letters(run_id);

-- Applying a call's outcome in one round trip (see migration 0006, which explains it).
CREATE FUNCTION ratchet_apply(p_item BIGINT, p_owner TEXT, p_run TEXT, p_now BIGINT, p_until BIGINT,
                              p_commands JSONB, p_discovery TEXT)
RETURNS TABLE (o_outcome TEXT, o_leased BIGINT[], o_index INTEGER[], o_future BOOLEAN)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    -- An outcome that ends the run keeps its item (locked) to the end, so counts of the run's calls see it.
    v_early   BOOLEAN := NOT (p_commands @> '[{"t": "finish"}]');
    v_status  TEXT;
    v_stack   TEXT;
    v_len     INTEGER;
    v_stacked BOOLEAN := FALSE;
    v_force   BOOLEAN;
    v_leased  BIGINT[] := '{}';
    v_index   INTEGER[] := '{}';
    v_future  BOOLEAN := FALSE;
    v_n       INTEGER;
    v_queued  BOOLEAN;
    v_busy    BOOLEAN;
    v_id      BIGINT;
    r         RECORD;
    c         JSONB;
BEGIN
    -- A run's concurrency keys are set when it is created and never change: read without a lock.
    IF EXISTS (SELECT 1 FROM runs WHERE id = p_run AND concurrency IS NOT NULL) THEN
        RETURN QUERY SELECT 'keyed'::TEXT, v_leased, v_index, FALSE;
        RETURN;
    END IF;
    -- The held item first, deleted now unless the outcome ends the run (then it stays, locked, in the
    -- counts of the run's calls, and goes at the end).
    IF v_early THEN
        DELETE FROM queue WHERE id = p_item AND lease_owner = p_owner;
    ELSE
        PERFORM 1 FROM queue WHERE id = p_item AND lease_owner = p_owner FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone'::TEXT, v_leased, v_index, FALSE;
        RETURN;
    END IF;
    SELECT status, stack, force_step_plan INTO v_status, v_stack, v_force FROM runs WHERE id = p_run FOR UPDATE;
    IF v_status IS NULL OR v_status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SKIPPED') THEN
        IF NOT v_early THEN
            DELETE FROM queue WHERE id = p_item;
        END IF;
        RETURN QUERY SELECT 'rejected'::TEXT, v_leased, v_index, FALSE;
        RETURN;
    END IF;
    v_len := jsonb_array_length(v_stack::jsonb);
    FOR r IN SELECT value, ordinality FROM jsonb_array_elements(p_commands) WITH ORDINALITY LOOP
        c := r.value;
        CASE c->>'t'
        WHEN 'save' THEN
            -- A step recorded once is never recorded again: the first result wins.
            INSERT INTO steps (run_id, hash, name, op, status, memo, started_at, ended_at, attempts, input, seq)
            VALUES (p_run, c->>'hash', c->>'name', c->>'op', c->>'status', c->>'memo', (c->>'started_at')::BIGINT,
                    (c->>'ended_at')::BIGINT, (c->>'attempts')::INTEGER, c->>'input', v_len)
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            IF v_n > 0 THEN
                v_stack := CASE WHEN v_len = 0 THEN '[' || to_jsonb(c->>'hash')::TEXT || ']'
                                ELSE left(v_stack, -1) || ',' || to_jsonb(c->>'hash')::TEXT || ']' END;
                v_len := v_len + 1;
                v_stacked := TRUE;
            ELSIF c->>'status' <> 'waiting' THEN
                -- A wait/invoke step row is created waiting and completed here when it resolves.
                UPDATE steps SET status = c->>'status', memo = c->>'memo', ended_at = (c->>'ended_at')::BIGINT
                WHERE run_id = p_run AND hash = c->>'hash' AND status = 'waiting';
            END IF;
        WHEN 'enqueue' THEN
            -- Not queued while the same call is queued (for discovery: queued and not started), nor for a
            -- step already recorded; with when_idle, not while other calls or waits of the run are open.
            WITH chk AS (
                SELECT EXISTS (SELECT 1 FROM queue WHERE run_id = p_run AND kind = 'call' AND target = c->>'target'
                               AND id <> p_item AND (c->>'target' <> p_discovery OR lease_owner IS NULL))
                       OR (c->>'target' <> p_discovery
                           AND EXISTS (SELECT 1 FROM steps WHERE run_id = p_run AND hash = c->>'target')) AS queued,
                       CASE WHEN (c->>'when_idle')::BOOLEAN THEN
                           EXISTS (SELECT 1 FROM queue WHERE run_id = p_run AND kind = 'call' AND id <> p_item
                                   AND target <> p_discovery)
                           OR EXISTS (SELECT 1 FROM pauses WHERE run_id = p_run AND kind <> 'cancel')
                       ELSE FALSE END AS busy),
            ins AS (
                INSERT INTO queue (run_id, target, attempt, due_at, lease_owner, lease_until, payload)
                SELECT p_run, c->>'target', (c->>'attempt')::INTEGER, (c->>'due_at')::BIGINT,
                       CASE WHEN (c->>'due_at')::BIGINT <= p_now THEN p_owner END,
                       CASE WHEN (c->>'due_at')::BIGINT <= p_now THEN p_until END, c->>'payload'
                FROM chk WHERE NOT chk.queued AND NOT chk.busy RETURNING id)
            SELECT chk.queued, chk.busy, (SELECT id FROM ins) INTO v_queued, v_busy, v_id FROM chk;
            IF v_queued OR v_busy THEN
                v_future := TRUE;
            ELSE
                IF (c->>'when_idle')::BOOLEAN AND (c->>'end_parallel')::BOOLEAN AND v_force THEN
                    UPDATE runs SET force_step_plan = FALSE WHERE id = p_run AND force_step_plan;
                    v_force := FALSE;
                END IF;
                IF (c->>'due_at')::BIGINT <= p_now THEN
                    v_leased := v_leased || v_id;
                    v_index := v_index || r.ordinality::INTEGER;
                ELSE
                    v_future := TRUE;
                END IF;
            END IF;
        WHEN 'force' THEN
            UPDATE runs SET force_step_plan = (c->>'value')::BOOLEAN WHERE id = p_run;
            v_force := (c->>'value')::BOOLEAN;
        WHEN 'finish' THEN
            UPDATE runs SET status = c->>'status', output = c->>'output', ended_at = p_now, error = c->>'error'
            WHERE id = p_run;
            DELETE FROM queue WHERE run_id = p_run AND id <> p_item AND kind <> 'emit';
            DELETE FROM pauses WHERE run_id = p_run;
        WHEN 'emit' THEN
            INSERT INTO queue (run_id, target, attempt, due_at, kind, payload)
            VALUES (p_run, '', 0, p_now, 'emit', c->>'payload') ON CONFLICT DO NOTHING;
            v_future := TRUE;
        END CASE;
    END LOOP;
    IF v_stacked THEN
        UPDATE runs SET stack = v_stack WHERE id = p_run;
    END IF;
    IF NOT v_early THEN
        DELETE FROM queue WHERE id = p_item;
    END IF;
    IF v_future THEN
        PERFORM pg_notify('ratchet_work', '');
    END IF;
    RETURN QUERY SELECT 'applied'::TEXT, v_leased, v_index, v_future;
END
$$;

-- Several outcomes in one round trip and one commit (the store's group commit of concurrent applies): each
-- element as `ratchet_apply` alone would, in the order given (the store sorts them by run, so two batches
-- lock common runs in the same order); o_i is the element's position (1-based).
CREATE FUNCTION ratchet_apply_many(p_items BIGINT[], p_owners TEXT[], p_runs TEXT[], p_nows BIGINT[],
                                   p_untils BIGINT[], p_commands JSONB[], p_discovery TEXT)
RETURNS TABLE (o_i INTEGER, o_outcome TEXT, o_leased BIGINT[], o_index INTEGER[], o_future BOOLEAN)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_items, 1), 0) LOOP
        RETURN QUERY SELECT i, a.o_outcome, a.o_leased, a.o_index, a.o_future
                     FROM ratchet_apply(p_items[i], p_owners[i], p_runs[i], p_nows[i], p_untils[i], p_commands[i],
                                        p_discovery) a;
    END LOOP;
END
$$;

-- A claim in one round trip when no candidate has concurrency keys (admitting those is Python's decision):
-- due calls nobody holds ($1), the first p_limit of p_candidates in priority order, then items whose lease
-- ran out by p_now (their holder died or hung: each counts a failure, p_failure) up to p_limit in all;
-- leased to p_owner until p_until, and the runs of claimed calls marked running. Rows other transactions
-- lock are skipped. The commit does not wait for the WAL flush (see `LEASE_CLAIMED`). o_keyed: a candidate
-- has concurrency keys; nothing was written and no row is returned but that one. Its statements are planned
-- on every call: a plan cached while the queue was small (a seq scan) made every later claim slow.
CREATE FUNCTION ratchet_claim(p_due_by BIGINT, p_candidates INTEGER, p_now BIGINT, p_limit INTEGER, p_owner TEXT,
                              p_until BIGINT, p_failure TEXT)
RETURNS TABLE (o_keyed BOOLEAN, o_id BIGINT, o_run_id TEXT, o_target TEXT, o_attempt INTEGER, o_due_at BIGINT,
               o_kind TEXT, o_payload TEXT, o_failures INTEGER, o_failure TEXT)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_due     BIGINT[];
    v_expired BIGINT[] := '{}';
    v_n       INTEGER;
BEGIN
    SELECT coalesce(array_agg(d.id ORDER BY d.sort, d.id), '{}') INTO v_due
    FROM (SELECT id, due_at - priority AS sort FROM queue WHERE lease_owner IS NULL AND NOT blocked
          AND due_at <= p_due_by ORDER BY due_at - priority, id LIMIT p_candidates FOR UPDATE SKIP LOCKED) d;
    IF EXISTS (SELECT 1 FROM item_keys WHERE item_id = ANY(v_due)) THEN
        RETURN QUERY SELECT TRUE, NULL::BIGINT, NULL, NULL, NULL::INTEGER, NULL::BIGINT, NULL, NULL,
                            NULL::INTEGER, NULL;
        RETURN;
    END IF;
    v_due := v_due[1:p_limit];
    v_n := coalesce(array_length(v_due, 1), 0);
    IF v_n < p_limit THEN
        SELECT coalesce(array_agg(e.id ORDER BY e.lease_until, e.id), '{}') INTO v_expired
        FROM (SELECT id, lease_until FROM queue WHERE lease_owner IS NOT NULL AND lease_until <= p_now
              ORDER BY lease_until, id LIMIT p_limit - v_n FOR UPDATE SKIP LOCKED) e;
    END IF;
    IF v_n + coalesce(array_length(v_expired, 1), 0) = 0 THEN
        RETURN;
    END IF;
    UPDATE queue SET lease_owner = p_owner, lease_until = p_until,
                     failures = failures + CASE WHEN id = ANY(v_expired) THEN 1 ELSE 0 END,
                     failure = CASE WHEN id = ANY(v_expired) THEN p_failure ELSE failure END
    WHERE id = ANY(v_due || v_expired);
    UPDATE runs SET status = 'RUNNING', started_at = p_now
    WHERE id IN (SELECT run_id FROM queue WHERE id = ANY(v_due || v_expired) AND kind = 'call') AND status = 'QUEUED';
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY SELECT FALSE, q.id, q.run_id, q.target, q.attempt, q.due_at, q.kind, q.payload, q.failures,
                        q.failure
                 FROM unnest(v_due || v_expired) WITH ORDINALITY AS u(id, i) JOIN queue q ON q.id = u.id
                 ORDER BY u.i;
END
$$;
