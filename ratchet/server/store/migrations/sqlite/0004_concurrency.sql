-- Version 4: concurrency limits on calls in flight.

-- A run's concurrency limits, JSON [[key, limit], ...] (hashed keys), copied to each of its calls.
ALTER TABLE runs ADD COLUMN concurrency TEXT;

-- A due call that found a limit full waits with blocked = 1 until a call holding that key ends.
ALTER TABLE queue ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
DROP INDEX queue_due;
CREATE INDEX queue_due ON queue(due_at) WHERE lease_owner IS NULL AND blocked = 0;

-- The concurrency keys of each call; a leased call counts against each of its keys' limits.
CREATE TABLE item_keys (
    key           TEXT NOT NULL,
    item_id       INTEGER NOT NULL,
    lim           INTEGER NOT NULL,
    PRIMARY KEY (key, item_id)
);
CREATE INDEX item_keys_item ON item_keys(item_id);

-- Bookkeeping only (no decision): a deleted queue item takes its key rows with it.
CREATE TRIGGER queue_item_keys_gc AFTER DELETE ON queue BEGIN
    DELETE FROM item_keys WHERE item_id = OLD.id;
END;
