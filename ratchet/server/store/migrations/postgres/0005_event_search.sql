-- Version 5: a trigram index of the events' data, so searching runs by text in their events' data
-- (`GET /v1/runs?q=`, an ILIKE '%text%') looks up the few events that can match instead of reading
-- every event. pg_trgm ships with PostgreSQL (contrib) and is a trusted extension: a user with CREATE on
-- the database may create it.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX events_data_trgm ON events USING gin (data gin_trgm_ops);
