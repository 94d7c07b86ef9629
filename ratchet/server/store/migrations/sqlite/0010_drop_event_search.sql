-- Version 10: drop the trigram index that version 9 first built. Keeping it in step cost every send
-- 1-2 ms (an FTS5 segment written per transaction), a third of the event API's latency; a runs
-- search by text now reads the events once (~50 ms per 100,000 events) and looks up only the runs of
-- those that match. PostgreSQL keeps its pg_trgm index, whose cost hides in the commit.

DROP TRIGGER IF EXISTS event_search_insert;
DROP TRIGGER IF EXISTS event_search_delete;
DROP TRIGGER IF EXISTS event_search_update;
DROP TABLE IF EXISTS event_search;
