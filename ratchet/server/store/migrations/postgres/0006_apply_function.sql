-- Version 6: `ratchet_apply`, which applies the outcome of a call in one round trip (`ratchet_apply_many`:
-- several), `ratchet_claim`, a claim in one round trip, and each step's input.
--
-- Why a function: applying a step's reply is the store's hottest write (one per step). Sent as separate
-- statements it took six round trips (BEGIN, take the item, lock the run, step + stack, queue the next
-- call, COMMIT) at ~0.12-0.25 ms each on a loopback connection; as one call of this function it takes one,
-- in an implicit transaction. It holds no decision of the engine's: `steps.decide` chose the commands, and
-- this only writes them, statement for statement as `PostgresStore._apply_run_txn` does (which stays the
-- path for everything this function declines). In a VOLATILE function under READ COMMITTED every
-- statement takes a fresh snapshot, so the reads after a lock see what the lock holder committed, as the
-- separate statements do. Its statements always use their generic plans: left to choose, PostgreSQL kept
-- planning the queue checks anew on every call (their custom plans looked cheaper), which cost about as
-- much as the rest of the function (backend CPU per step's outcome ~370 -> ~210 us). Every statement is a
-- lookup by key, so sequential scans are off: a generic plan made while a table was small must not keep
-- scanning it once it has grown (that befell the claim below, whose plans are made per call instead).
--
-- p_commands: a JSON array of the commands, in order, each with a `t`:
--   save    {hash, name, op, status, memo (JSON text), started_at, ended_at, attempts, input (JSON text or null)}
--   enqueue {target, due_at, attempt, when_idle, end_parallel, payload (JSON text or null)}
--   force   {value}             finish {status, output (JSON text), error}     emit {payload (JSON text)}
-- o_outcome is 'keyed' when the run has concurrency keys, whose advisory locks, in-flight counts and
-- unblocking stay in Python (nothing is written: the store takes its general path), 'gone' (the item is no
-- longer held by p_owner), 'rejected' (the run has ended or does not exist; the item is deleted) or 'applied';
-- o_leased are the calls queued due now and leased to p_owner until p_until, o_index the positions
-- (1-based) of their `enqueue` commands; o_future is true when other work was queued (the scheduler should
-- look), and then the commit also notifies every node (`ratchet_work`).
-- What a step was given (its opcode's options), shown with it; NULL for steps recorded before.
ALTER TABLE steps ADD COLUMN input TEXT;

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
