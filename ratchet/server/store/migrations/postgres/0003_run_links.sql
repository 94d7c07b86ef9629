-- Version 3: links between runs, for reruns and for `step.invoke`.

-- A rerun (`POST /v1/runs/{id}/rerun`, bulk replay) records the run it reruns and the hash of the step
-- it started from (NULL: from the start); steps before it were copied from the original as its memo.
ALTER TABLE runs ADD COLUMN rerun_of TEXT;
ALTER TABLE runs ADD COLUMN rerun_from TEXT;
-- A run started by `inngest/function.invoked` records its parent run and the parent's invoke step hash.
ALTER TABLE runs ADD COLUMN invoked_by TEXT;
ALTER TABLE runs ADD COLUMN invoked_step TEXT;
CREATE INDEX runs_rerun_of ON runs(rerun_of) WHERE rerun_of IS NOT NULL;
CREATE INDEX runs_invoked_by ON runs(invoked_by) WHERE invoked_by IS NOT NULL;
