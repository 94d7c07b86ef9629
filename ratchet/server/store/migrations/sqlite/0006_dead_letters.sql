-- Version 6: poison queue items are dead-lettered with a reason instead of retried forever.

-- How often handling the item failed (an engine error, or its lease ran out: the node died holding it),
-- and the last such failure. An app's own errors are retries (`attempt`), not failures.
ALTER TABLE queue ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN failure TEXT;

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    payload     TEXT,
    failures    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX dead_letters_created ON dead_letters(created_at);
CREATE INDEX dead_letters_run ON dead_letters(run_id);
