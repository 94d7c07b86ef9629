-- Version 11: indexes for retention (`purge`), which looks for runs that ended and events received before
-- a cutoff; without them each pass read every run and every event.

CREATE INDEX runs_ended ON runs(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX events_received ON events(received_at);
