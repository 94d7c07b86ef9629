"""Every SQL statement of the PostgreSQL store, by name (procrastinate's `queries.sql`, as constants).

Parameters are asyncpg's `$n`. Lists are passed as arrays (`= ANY($1::bigint[])`). JSON is TEXT (see
the migration). Statements that take a row lock say so in their name (`_FOR_UPDATE`, `_SKIP_LOCKED`).
"""

from __future__ import annotations

RUN_COLS = ("id, function_slug, app_id, status, event_ids, created_at, started_at, ended_at, output, "
            "stack, force_step_plan, error, rerun_of, rerun_from, invoked_by, invoked_step")
EVENT_COLS = 'internal_id, id, name, data, ts, received_at, v, "user", seq'
STEP_COLS = "run_id, hash, name, op, status, memo, started_at, ended_at, attempts, input"
QUEUE_COLS = "id, run_id, target, attempt, due_at, lease_owner, lease_until, kind, payload, failures, failure"
DEAD_LETTER_COLS = "id, item_id, run_id, kind, target, attempt, payload, failures, reason, created_at"
PAUSE_COLS = ("id, run_id, kind, step_hash, step_name, event_name, expression, index_path, index_value, "
              "created_at, expires_at")
FUNCTION_COLS = "slug, app_id, name, config, url"
_APP_SELECT = ("SELECT a.id, a.name, a.url, a.sdk, a.framework, a.checksum, a.synced_at, a.error, "
               "(SELECT count(*) FROM functions f WHERE f.app_id = a.id AND NOT f.archived) FROM apps a")

# ------------------------------------------------------------------------------------------------ locks

#: Transaction-scoped advisory locks on names (a concurrency key, a flow-control key, a debounce key),
#: taken in the order given (callers sort them) so two transactions never wait on each other's set.
LOCK_NAMES = ("SELECT count(pg_advisory_xact_lock(hashtextextended(n, 0))) "
              "FROM (SELECT n FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i) s")

# ------------------------------------------------------------------------------------------------ apps

APP_BY_NAME = f"{_APP_SELECT} WHERE a.name = $1"
APPS = f"{_APP_SELECT} ORDER BY a.name"
APP_CHECKSUM_FOR_UPDATE = "SELECT id, checksum FROM apps WHERE name = $1 FOR UPDATE"
UPSERT_APP = (
    "INSERT INTO apps (id, name, url, sdk, framework, checksum, synced_at, error) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, NULL) ON CONFLICT (name) DO UPDATE SET url = excluded.url, "
    "sdk = excluded.sdk, framework = excluded.framework, checksum = excluded.checksum, "
    "synced_at = excluded.synced_at, error = NULL")
ARCHIVE_FUNCTIONS = "UPDATE functions SET archived = TRUE, updated_at = $1 WHERE app_id = $2"
UPSERT_FUNCTION = (
    "INSERT INTO functions (slug, app_id, name, config, url, archived, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, FALSE, $6) ON CONFLICT (slug) DO UPDATE SET app_id = excluded.app_id, "
    "name = excluded.name, config = excluded.config, url = excluded.url, archived = FALSE, "
    "updated_at = excluded.updated_at")
DELETE_APP_CRONS = ("DELETE FROM queue WHERE kind = 'cron' AND run_id IN "
                    "(SELECT 'cron:' || slug FROM functions WHERE app_id = $1)")
SET_APP_ERROR = "UPDATE apps SET error = $2 WHERE url = $1"
FUNCTIONS = f"SELECT {FUNCTION_COLS} FROM functions WHERE NOT archived ORDER BY slug"
FUNCTION = f"SELECT {FUNCTION_COLS} FROM functions WHERE slug = $1"
#: The function a run calls, unless its app's last sync removed it.
LIVE_FUNCTION = f"SELECT {FUNCTION_COLS} FROM functions WHERE slug = $1 AND NOT archived"

# ------------------------------------------------------------------------------------------------ events

INSERT_EVENT = ('INSERT INTO events (internal_id, id, name, data, ts, received_at, v, "user") '
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
EVENT = f"SELECT {EVENT_COLS} FROM events WHERE internal_id = $1 ORDER BY seq LIMIT 1"
#: The first stored row of each internal id asked for (a retried send stores an id again).
EVENTS_FIRST = (f"SELECT DISTINCT ON (internal_id) {EVENT_COLS} FROM events WHERE internal_id = ANY($1::text[]) "
                "ORDER BY internal_id, seq")
#: Filters are optional: a NULL parameter matches every row.
LIST_EVENTS = (f"SELECT {EVENT_COLS} FROM events WHERE ($1::text IS NULL OR name = $1) "
               "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3")
#: `LIST_EVENTS` of the events whose data has a text ($4, an ILIKE pattern): the trigram index finds them.
SEARCH_EVENTS = (f"SELECT {EVENT_COLS} FROM events WHERE ($1::text IS NULL OR name = $1) "
                 "AND ($2::bigint IS NULL OR seq < $2) AND data ILIKE $4 ESCAPE '\\' ORDER BY seq DESC LIMIT $3")

# ------------------------------------------------------------------------------------------------ runs

#: Idempotency keys ($1, none repeated) for their runs ($2), each taken unless a live (unexpired) run holds
#: it; returns the runs that took theirs.
TAKE_RUN_KEYS = (
    "INSERT INTO run_keys (key, run_id, expires_at) SELECT k, r, $3 FROM unnest($1::bytea[], $2::text[]) AS t(k, r) "
    "ORDER BY k ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at "
    "WHERE run_keys.expires_at <= $4 RETURNING run_id")
#: A send whose runs are all plain (no flow control to decide but a priority, no pauses or timers), in one
#: statement, so one round trip and an implicit transaction: the events ($1-$8, parallel arrays), the runs'
#: idempotency keys ($9 sorted and distinct, for the runs $10; expiring at $11; a key a live run holds is
#: not taken), the runs that took theirs or have none ($13-$22, $23 true for a run without a key), their
#: events ($24/$25 pairs) and first calls to the discovery step $26; notifies channel $27; returns the ids
#: of the runs created. Only the key insert reads rows others write, and its ON CONFLICT sees the latest.
INGEST_PLAIN = (
    "WITH ev AS (INSERT INTO events (internal_id, id, name, data, ts, received_at, v, \"user\") "
    "SELECT a, b, c, d, e, f, g, h FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
    "$6::bigint[], $7::text[], $8::text[]) WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i) ORDER BY i), "
    "took AS (INSERT INTO run_keys (key, run_id, expires_at) SELECT k, r, $11 FROM unnest($9::bytea[], $10::text[]) "
    "AS t(k, r) ORDER BY k ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at "
    "WHERE run_keys.expires_at <= $12 RETURNING run_id), "
    "new AS (SELECT t.* FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[], $18::bigint[], "
    "$19::text[], $20::text[], $21::text[], $22::text[], $23::boolean[]) WITH ORDINALITY "
    "AS t(id, slug, app, eids, due, prio, rerun_of, rerun_from, invoked_by, invoked_step, keyless, i) "
    "WHERE t.keyless OR t.id IN (SELECT run_id FROM took)), "
    "r AS (INSERT INTO runs (id, function_slug, app_id, status, event_ids, created_at, rerun_of, rerun_from, "
    "invoked_by, invoked_step) SELECT id, slug, app, 'QUEUED', eids, $12, rerun_of, rerun_from, invoked_by, "
    "invoked_step FROM new ORDER BY i), "
    "re AS (INSERT INTO run_events (event_id, run_id) SELECT e, r FROM unnest($24::text[], $25::text[]) AS t(e, r) "
    "WHERE r IN (SELECT id FROM new) ON CONFLICT DO NOTHING), "
    "q AS (INSERT INTO queue (run_id, target, attempt, due_at, priority) SELECT id, $26, 0, due, prio FROM new "
    "ORDER BY i) "
    "SELECT ARRAY(SELECT id FROM new ORDER BY i), pg_notify($27, '')")
INSERT_RUN = (
    "INSERT INTO runs (id, function_slug, app_id, status, event_ids, created_at, ended_at, error, "
    "singleton_key, concurrency, rerun_of, rerun_from, invoked_by, invoked_step) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")
INSERT_RUN_EVENT = "INSERT INTO run_events (event_id, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
RUN = f"SELECT {RUN_COLS} FROM runs WHERE id = $1"
RUNS_FOR_EVENT = (f"SELECT {', '.join('r.' + c.strip() for c in RUN_COLS.split(','))} FROM run_events re "
                  "JOIN runs r ON r.id = re.run_id WHERE re.event_id = $1 ORDER BY r.id")
ACTIVE_RUN_IDS = ("SELECT id FROM runs WHERE function_slug = $1 AND status IN ('QUEUED', 'RUNNING') "
                  "AND ($2::bigint IS NULL OR created_at >= $2) AND ($3::bigint IS NULL OR created_at < $3) "
                  "ORDER BY id LIMIT $4")
#: Runs of a function in some statuses, created in [$3, $4), after id $5 (paging), oldest first: replays.
RUN_IDS_BY_STATUS = ("SELECT id FROM runs WHERE function_slug = $1 AND status = ANY($2::text[]) "
                     "AND ($3::bigint IS NULL OR created_at >= $3) AND ($4::bigint IS NULL OR created_at < $4) "
                     "AND ($5::text IS NULL OR id > $5) ORDER BY id LIMIT $6")
RERUNS_OF = "SELECT id FROM runs WHERE rerun_of = $1 ORDER BY id"
INVOKED_CHILDREN = "SELECT invoked_step, id FROM runs WHERE invoked_by = $1 ORDER BY id"
RUN_CONCURRENCY = "SELECT concurrency FROM runs WHERE id = $1"
#: What a call needs to run (`load_run_state`) in one statement, so one snapshot: the run's columns, its
#: live function (a record, NULL if archived), the first stored row of each of its events (records, in no
#: order) and its memo (`MEMO`: (hash, memo) records).
LOAD_RUN_STATE = (
    f"SELECT {', '.join('r.' + c.strip() for c in RUN_COLS.split(','))}, "
    f"(SELECT ROW({FUNCTION_COLS}) FROM functions WHERE slug = r.function_slug AND NOT archived), "
    f"ARRAY(SELECT ROW({EVENT_COLS}) FROM (SELECT DISTINCT ON (internal_id) {EVENT_COLS} FROM events "
    "WHERE internal_id = ANY(ARRAY(SELECT jsonb_array_elements_text(r.event_ids::jsonb))) "
    "ORDER BY internal_id, seq) e), "
    "ARRAY(SELECT ROW(hash, memo) FROM steps WHERE run_id = r.id AND (status IN ('completed', 'failed') "
    "OR (status = 'sleeping' AND ended_at <= $2))) "
    "FROM runs r WHERE r.id = $1")
RUN_FOR_UPDATE = "SELECT status, stack, force_step_plan FROM runs WHERE id = $1 FOR UPDATE"
RUN_FUNCTION_EVENTS = "SELECT function_slug, event_ids FROM runs WHERE id = $1"
MARK_RUNNING = "UPDATE runs SET status = 'RUNNING', started_at = $2 WHERE id = $1 AND status = 'QUEUED'"
FINISH_RUN = "UPDATE runs SET status = $2, output = $3, ended_at = $4, error = $5 WHERE id = $1"
SET_STACK = "UPDATE runs SET stack = $2 WHERE id = $1"
SET_FORCE_STEP_PLAN = "UPDATE runs SET force_step_plan = $2 WHERE id = $1"
END_PARALLEL = "UPDATE runs SET force_step_plan = FALSE WHERE id = $1 AND force_step_plan"
ACTIVE_SINGLETON = "SELECT id FROM runs WHERE singleton_key = $1 AND status IN ('QUEUED', 'RUNNING') LIMIT 1"

# ------------------------------------------------------------------------------------------------ steps

STEPS = f"SELECT {STEP_COLS} FROM steps WHERE run_id = $1 ORDER BY seq"
INSERT_STEP = (f"INSERT INTO steps ({STEP_COLS}, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
               "ON CONFLICT DO NOTHING")
COMPLETE_WAITING_STEP = ("UPDATE steps SET status = $3, memo = $4, ended_at = $5 WHERE run_id = $1 AND hash = $2 "
                         "AND status = 'waiting'")
#: `INSERT_STEP` that also sets the run's stack ($12) when the step was inserted: one round trip.
INSERT_STEP_STACK = (f"WITH ins AS (INSERT INTO steps ({STEP_COLS}, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                     "$10, $11) ON CONFLICT DO NOTHING RETURNING 1), "
                     "upd AS (UPDATE runs SET stack = $12 WHERE id = $1 AND EXISTS (SELECT 1 FROM ins)) "
                     "SELECT count(*) FROM ins")
#: A sleep is in the memo only once it is over; before that the SDK must still see it pending.
MEMO = ("SELECT hash, memo FROM steps WHERE run_id = $1 AND (status IN ('completed', 'failed') "
        "OR (status = 'sleeping' AND ended_at <= $2))")

# ------------------------------------------------------------------------------------------------ the queue

#: What a claim may take, in one round trip: due calls nobody holds ($1), at most $2 in priority order, with
#: their concurrency keys and limits (arrays, by key); then at most $4 items whose lease ran out by $3 (their
#: holder died or hung). Column 12 says which kind a row is. Rows other transactions lock are skipped; an
#: expired row locked here but not taken is let go at the commit.
CLAIM_CANDIDATES = (
    f"WITH d AS (SELECT {QUEUE_COLS}, due_at - priority AS sort FROM queue WHERE lease_owner IS NULL AND NOT blocked "
    "AND due_at <= $1 ORDER BY due_at - priority, id LIMIT $2 FOR UPDATE SKIP LOCKED), "
    f"e AS (SELECT {QUEUE_COLS}, lease_until AS sort FROM queue WHERE lease_owner IS NOT NULL AND lease_until <= $3 "
    "ORDER BY lease_until, id LIMIT $4 FOR UPDATE SKIP LOCKED) "
    f"SELECT {QUEUE_COLS}, FALSE AS expired, "
    "ARRAY(SELECT key FROM item_keys k WHERE k.item_id = d.id ORDER BY key), "
    "ARRAY(SELECT lim FROM item_keys k WHERE k.item_id = d.id ORDER BY key), sort FROM d "
    f"UNION ALL SELECT {QUEUE_COLS}, TRUE, NULL, NULL, sort FROM e ORDER BY expired, sort, id")
#: `claim_due` in one round trip (migration 0006), unless a candidate has concurrency keys (first row's o_keyed).
CLAIM = ("SELECT o_keyed, o_id, o_run_id, o_target, o_attempt, o_due_at, o_kind, o_payload, o_failures, o_failure "
         "FROM ratchet_claim($1, $2, $3, $4, $5, $6, $7)")
#: The claimed items ($1) leased to $2 until $3, the expired ones among them ($4) counting a failure ($5),
#: and the runs of the claimed calls ($7) running from $6: one round trip. The claim's commit does not wait
#: for the WAL flush (`synchronous_commit` off for this transaction): a lease lost with a crash of PostgreSQL
#: itself makes its item due again, as the crash of a node does, and nothing anyone was told is lost; the
#: outcome of the call is committed synchronously (and flushes this commit with it, the WAL being in order).
LEASE_CLAIMED = (
    "WITH l AS (UPDATE queue SET lease_owner = $2, lease_until = $3, "
    "failures = failures + CASE WHEN id = ANY($4::bigint[]) THEN 1 ELSE 0 END, "
    "failure = CASE WHEN id = ANY($4::bigint[]) THEN $5 ELSE failure END WHERE id = ANY($1::bigint[])), "
    "m AS (UPDATE runs SET status = 'RUNNING', started_at = $6 WHERE id = ANY($7::text[]) AND status = 'QUEUED') "
    "SELECT set_config('synchronous_commit', 'off', true)")
FAIL_ITEM = ("UPDATE queue SET failures = failures + 1, failure = $3, due_at = $4, lease_owner = NULL, "
             "lease_until = NULL WHERE id = $1 AND lease_owner = $2")
INSERT_DEAD_LETTER = ("INSERT INTO dead_letters (item_id, run_id, kind, target, attempt, payload, failures, reason, "
                      "created_at) SELECT id, run_id, kind, target, attempt, payload, $4, $2, $3 "
                      "FROM queue WHERE id = $1")
DEAD_LETTERS = (f"SELECT {DEAD_LETTER_COLS} FROM dead_letters WHERE ($1::bigint IS NULL OR id < $1) "
                "AND ($2::text IS NULL OR run_id = $2) ORDER BY id DESC LIMIT $3")
PURGE_DEAD_LETTERS = "DELETE FROM dead_letters WHERE created_at < $1"
NEXT_DUE_AT = ("SELECT min(t) FROM (SELECT min(due_at) AS t FROM queue WHERE lease_owner IS NULL AND NOT blocked "
               "UNION ALL SELECT min(lease_until) FROM queue WHERE lease_owner IS NOT NULL) s")
UNBLOCK_ALL = "UPDATE queue SET blocked = FALSE WHERE blocked"
RELEASE_ALL = ("UPDATE queue SET lease_owner = NULL, lease_until = NULL, failures = failures + 1, failure = $1 "
               "WHERE lease_owner IS NOT NULL")
RELEASE_OWNER = "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1"
HELD_FOR_UPDATE = "SELECT 1 FROM queue WHERE id = $1 AND lease_owner = $2 FOR UPDATE"
#: `HELD_FOR_UPDATE` returning the item's concurrency keys and limits and the concurrency of run `$3`.
_HELD_KEYS = ("(SELECT array_agg(key ORDER BY key) FROM item_keys WHERE item_id = $1), "
              "(SELECT array_agg(lim ORDER BY key) FROM item_keys WHERE item_id = $1), "
              "(SELECT concurrency FROM runs WHERE id = $3)")
HELD_KEYS_FOR_UPDATE = f"SELECT {_HELD_KEYS} FROM queue WHERE id = $1 AND lease_owner = $2 FOR UPDATE"
#: The same, deleting the held item (it is deleted at the end of an apply anyway): one round trip.
DELETE_HELD_KEYS = f"DELETE FROM queue WHERE id = $1 AND lease_owner = $2 RETURNING {_HELD_KEYS}"
DELETE_HELD = "DELETE FROM queue WHERE id = $1 AND lease_owner = $2"
DELETE_ITEM = "DELETE FROM queue WHERE id = $1"
INSERT_ITEM = ("INSERT INTO queue (run_id, target, attempt, due_at, kind, payload) VALUES ($1, $2, 0, $3, $4, $5) "
               "ON CONFLICT DO NOTHING")
INSERT_FIRST_CALL = ("INSERT INTO queue (run_id, target, attempt, due_at, priority) VALUES ($1, $2, 0, $3, $4) "
                     "RETURNING id")
INSERT_CALL = ("INSERT INTO queue (run_id, target, attempt, due_at, lease_owner, lease_until, payload) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
INSERT_TIMEOUT = "INSERT INTO queue (run_id, target, attempt, due_at, kind, payload) VALUES ($1, '', 0, $2, 'timeout', $3)"
DELETE_TIMEOUT = "DELETE FROM queue WHERE run_id = $1 AND kind = 'timeout' AND payload = $2"
RETRY_ITEM = ("UPDATE queue SET attempt = attempt + 1, due_at = $2, lease_owner = NULL, lease_until = NULL, "
              "last_error = $3 WHERE id = $1")
DELETE_RUN_ITEMS = "DELETE FROM queue WHERE run_id = $1 AND id != $2 AND kind != 'emit'"
#: The checks before queueing a call to `$2`, in one round trip: is one queued already (other than item
#: `$3`; for discovery, $4, only an unleased one counts) or, for a step, is it recorded already; and, when
#: $5 (`when_idle`), is other work in progress for the run: a targeted call (`$6` is the discovery step
#: id) or a wait/invoke pause.
ENQUEUE_CHECKS = (
    "SELECT EXISTS (SELECT 1 FROM queue WHERE run_id = $1 AND kind = 'call' AND target = $2 AND id != $3 "
    "AND (NOT $4::boolean OR lease_owner IS NULL)) "
    "OR (NOT $4::boolean AND EXISTS (SELECT 1 FROM steps WHERE run_id = $1 AND hash = $2)), "
    "CASE WHEN $5::boolean THEN EXISTS (SELECT 1 FROM queue WHERE run_id = $1 AND kind = 'call' AND id != $3 "
    "AND target != $6) OR EXISTS (SELECT 1 FROM pauses WHERE run_id = $1 AND kind != 'cancel') ELSE FALSE END")
#: `ENQUEUE_CHECKS` and, when both are false, `INSERT_CALL` (its parameters from the third are $7..$11) in one
#: statement; returns the two checks and the new item's id (NULL when nothing was queued).
ENQUEUE_CALL = (
    "WITH c AS (SELECT EXISTS (SELECT 1 FROM queue WHERE run_id = $1 AND kind = 'call' AND target = $2 "
    "AND id != $3 AND (NOT $4::boolean OR lease_owner IS NULL)) "
    "OR (NOT $4::boolean AND EXISTS (SELECT 1 FROM steps WHERE run_id = $1 AND hash = $2)) AS queued, "
    "CASE WHEN $5::boolean THEN EXISTS (SELECT 1 FROM queue WHERE run_id = $1 AND kind = 'call' AND id != $3 "
    "AND target != $6) OR EXISTS (SELECT 1 FROM pauses WHERE run_id = $1 AND kind != 'cancel') ELSE FALSE END "
    "AS busy), "
    "ins AS (INSERT INTO queue (run_id, target, attempt, due_at, lease_owner, lease_until, payload) "
    "SELECT $1, $2, $7, $8, $9, $10, $11 FROM c WHERE NOT c.queued AND NOT c.busy RETURNING id) "
    "SELECT c.queued, c.busy, (SELECT id FROM ins) FROM c")
MOVE_TIMER = "UPDATE queue SET due_at = $3 WHERE kind = $1 AND run_id = $2"
REARM_TIMER = "UPDATE queue SET due_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $1"
DELETE_TIMER = "DELETE FROM queue WHERE kind = $1 AND run_id = $2"

# ------------------------------------------------------------------------------------------------ concurrency

ITEM_KEYS = "SELECT key, lim FROM item_keys WHERE item_id = $1"
ADD_ITEM_KEY = "INSERT INTO item_keys (key, item_id, lim) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
IN_FLIGHT = ("SELECT count(*) FROM item_keys k JOIN queue q ON q.id = k.item_id WHERE k.key = $1 "
             "AND q.lease_owner IS NOT NULL AND q.id != $2")
#: `IN_FLIGHT` of several keys in one statement (a key with nothing in flight has no row).
IN_FLIGHT_MANY = ("SELECT k.key, count(*) FROM queue q JOIN item_keys k ON k.item_id = q.id "
                  "WHERE q.lease_owner IS NOT NULL AND k.key = ANY($1::text[]) GROUP BY k.key")
BLOCK = "UPDATE queue SET blocked = TRUE WHERE id = ANY($1::bigint[])"
#: Unblock up to `$2` blocked calls of key `$1` whose other keys all have room, in queue order. The
#: in-flight count of every key is computed once (`busy`, from the few leased items), not once per
#: blocked call: per call it took ~0.5 s under a function-wide key with a thousand calls queued.
UNBLOCK = (
    "WITH busy AS (SELECT f.key, count(*) AS n FROM queue fq JOIN item_keys f ON f.item_id = fq.id "
    "WHERE fq.lease_owner IS NOT NULL GROUP BY f.key) "
    "UPDATE queue SET blocked = FALSE WHERE id IN (SELECT q.id FROM item_keys k JOIN queue q ON "
    "q.id = k.item_id WHERE k.key = $1 AND q.blocked AND NOT EXISTS (SELECT 1 FROM item_keys o "
    "JOIN busy b ON b.key = o.key WHERE o.item_id = q.id AND o.key != k.key AND b.n >= o.lim) "
    "ORDER BY q.due_at - q.priority, q.id LIMIT $2)")

# ------------------------------------------------------------------------------------------------ pauses

INSERT_PAUSE = f"INSERT INTO pauses ({PAUSE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
DELETE_PAUSE = "DELETE FROM pauses WHERE id = $1"
DELETE_RUN_PAUSES = "DELETE FROM pauses WHERE run_id = $1"
PAUSE = f"SELECT {PAUSE_COLS} FROM pauses WHERE id = $1"
RUN_PAUSES = f"SELECT {PAUSE_COLS} FROM pauses WHERE run_id = $1 ORDER BY created_at, id"
#: The distinct index paths of the pauses waiting for event name $1, and those of its pauses that are not
#: indexed (records), in one round trip: a send with nothing waiting needs no other pause query.
PAUSE_INDEX = ("SELECT ARRAY(SELECT DISTINCT index_path FROM pauses WHERE event_name = $1 AND index_path IS NOT NULL), "
               f"ARRAY(SELECT ROW({PAUSE_COLS}) FROM pauses WHERE event_name = $1 AND index_path IS NULL)")
#: Unindexed pauses for the event, and those whose (path, value) is one of the pairs `$2`/`$3`.
FIND_PAUSES = (f"SELECT {PAUSE_COLS} FROM pauses WHERE event_name = $1 AND (index_path IS NULL OR "
               "(index_path, index_value) IN (SELECT * FROM unnest($2::text[], $3::text[]))) "
               "ORDER BY created_at, id")

# ------------------------------------------------------------------------------------------------ flow control

FLOW_STATE_FOR_UPDATE = "SELECT state FROM flow_state WHERE key = $1 FOR UPDATE"
SAVE_FLOW_STATE = ("INSERT INTO flow_state (key, state, expires_at) VALUES ($1, $2, $3) ON CONFLICT (key) "
                   "DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at")
DEBOUNCE = "SELECT function_slug, event_id, first_seen, fire_at FROM debounces WHERE key = $1"
DEBOUNCE_FOR_UPDATE = DEBOUNCE + " FOR UPDATE"
SAVE_DEBOUNCE = (
    "INSERT INTO debounces (key, function_slug, event_id, first_seen, fire_at) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, first_seen = excluded.first_seen, "
    "fire_at = excluded.fire_at")
DELETE_DEBOUNCE = "DELETE FROM debounces WHERE key = $1"
BATCH = "SELECT function_slug, event_ids, first_at, fire_at FROM batches WHERE key = $1"
BATCH_FOR_UPDATE = BATCH + " FOR UPDATE"
SAVE_BATCH = (
    "INSERT INTO batches (key, function_slug, event_ids, first_at, fire_at) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (key) DO UPDATE SET event_ids = excluded.event_ids")
DELETE_BATCH = "DELETE FROM batches WHERE key = $1"

#: Wakes the nodes listening on a channel when the transaction commits.
NOTIFY = "SELECT pg_notify($1, '')"

#: The heartbeat: a node keeps its calls in flight. Rows locked by another transaction are skipped, not
#: waited for: such a row is one of our calls whose outcome is being applied (it ends the lease, and no
#: claimer can take it while it is locked) or one a claimer takes because its lease already ran out.
#: Waiting for them stalled the heartbeat behind a queue of applies for longer than a lease, so the
#: other leases of the node lapsed and other nodes took over calls still in flight.
EXTEND_LEASES = ("UPDATE queue SET lease_until = $2 WHERE id IN (SELECT id FROM queue WHERE lease_owner = $1 "
                 "AND lease_until < $2 FOR UPDATE SKIP LOCKED)")

#: A call's outcome, or several (parallel arrays), applied in one round trip and one commit by the functions
#: of migration 0006 (`batch.ApplyBatcher`).
APPLY = ("SELECT o_outcome, o_leased, o_index, o_future "
         "FROM ratchet_apply($1, $2, $3, $4, $5, $6::jsonb, $7)")
APPLY_MANY = ("SELECT o_i, o_outcome, o_leased, o_index, o_future "
              "FROM ratchet_apply_many($1, $2, $3, $4, $5, $6::jsonb[], $7)")

APPLIED_MIGRATIONS = "SELECT name FROM schema_migrations ORDER BY version"

# Retention (`purge`), in batches of `base.PURGE_BATCH` (a transaction each): runs that ended before the
# cutoff ($1) go with their steps; events go once nothing live needs them (a run not ended, an open debounce
# or batch). Served by the indexes runs_ended and events_received (migration 0007). Runs another
# transaction holds are left for the next pass.
PURGE_RUN_IDS = ("SELECT id FROM runs WHERE ended_at < $1 AND status NOT IN ('QUEUED', 'RUNNING') "
                 "LIMIT $2 FOR UPDATE SKIP LOCKED")
PURGE_RUN_STEPS = "DELETE FROM steps WHERE run_id = ANY($1::text[])"
PURGE_RUN_EVENTS = "DELETE FROM run_events WHERE run_id = ANY($1::text[])"
PURGE_RUNS = "DELETE FROM runs WHERE id = ANY($1::text[])"
#: Events received before $1 that no run, debounce or open batch ($2: the batches' event ids) needs; $3 at most.
PURGE_EVENTS = ("DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE received_at < $1 "
                "AND NOT EXISTS (SELECT 1 FROM run_events r WHERE r.event_id = e.internal_id) "
                "AND NOT EXISTS (SELECT 1 FROM debounces d WHERE d.event_id = e.internal_id) "
                "AND internal_id <> ALL($2::text[]) LIMIT $3)")
BATCH_EVENT_IDS = "SELECT event_ids FROM batches"
PURGE_RUN_KEYS = "DELETE FROM run_keys WHERE expires_at < $1"
PURGE_FLOW_STATE = "DELETE FROM flow_state WHERE expires_at < $1"
