-- Version 4: indexes for the run lists of the API and dashboard (filter by app, search by event data).

CREATE INDEX run_events_run ON run_events(run_id);
CREATE INDEX runs_app ON runs(app_id, id);
