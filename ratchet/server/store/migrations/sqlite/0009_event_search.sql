-- Version 9: a trigram index of the events' data, so searching runs by text in their events' data
-- (`GET /v1/runs?q=`) looks up the few events that can match instead of reading every event.
-- FTS5 over the events table itself (external content: the text is not stored twice), with
-- detail=none (no positions: a smaller index and cheaper writes; candidates are checked against the
-- text). Needs SQLite 3.34 or later with FTS5 (the trigram tokenizer).

CREATE VIRTUAL TABLE event_search USING fts5(data, content='events', content_rowid='seq', tokenize='trigram', detail='none');
INSERT INTO event_search(event_search) VALUES ('rebuild');

CREATE TRIGGER event_search_insert AFTER INSERT ON events BEGIN
    INSERT INTO event_search(rowid, data) VALUES (new.seq, new.data);
END;

CREATE TRIGGER event_search_delete AFTER DELETE ON events BEGIN
    INSERT INTO event_search(event_search, rowid, data) VALUES ('delete', old.seq, old.data);
END;

CREATE TRIGGER event_search_update AFTER UPDATE OF data ON events BEGIN
    INSERT INTO event_search(event_search, rowid, data) VALUES ('delete', old.seq, old.data);
    INSERT INTO event_search(rowid, data) VALUES (new.seq, new.data);
END;
