-- Version 10: drop the trigram index of version 9. Keeping it in step cost every send 1-2 ms (an FTS5
-- segment written per transaction), more than the event API's whole latency budget allows; a runs
-- search by text now reads the events once (~50 ms per 100,000 events) and looks up only the runs of
-- those that match. PostgreSQL keeps its pg_trgm index, whose cost hides in the commit.

DROP TRIGGER event_search_insert;
DROP TRIGGER event_search_delete;
DROP TRIGGER event_search_update;
DROP TABLE event_search;
