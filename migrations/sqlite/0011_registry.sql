-- Registered pipelines: a tenant's pipeline kept with its KDL text (validated when it was registered), so that a
-- run can be triggered by the pipeline's name. A row that only counts run numbers (a pipeline that ran without
-- being registered) has no source.
ALTER TABLE pipelines ADD COLUMN source TEXT;
ALTER TABLE pipelines ADD COLUMN file_name TEXT;
-- The SHA-256 of `source`, lowercase hex: registering the same text again changes nothing.
ALTER TABLE pipelines ADD COLUMN source_sha256 TEXT;
ALTER TABLE pipelines ADD COLUMN registered_at_ms INTEGER;
ALTER TABLE pipelines ADD COLUMN updated_at_ms INTEGER;
-- The label of the token that last changed it.
ALTER TABLE pipelines ADD COLUMN registered_by TEXT;

-- The order runs are listed in, newest first: when a run was asked for (its request's time when a daemon queued
-- it, else its own creation), then its id. A run keeps its place from its trigger to its end, so that a page of
-- runs ending at a place never skips nor repeats a run that started in between.
ALTER TABLE pipeline_runs ADD COLUMN requested_at_ms INTEGER NOT NULL DEFAULT 0;
UPDATE pipeline_runs SET requested_at_ms = COALESCE(
    (SELECT q.created_at_ms FROM run_requests AS q
     WHERE q.tenant_id = pipeline_runs.tenant_id AND q.run_id = pipeline_runs.id),
    created_at_ms);
CREATE INDEX IF NOT EXISTS pipeline_runs_listed ON pipeline_runs (tenant_id, requested_at_ms, id);

-- A request's branch (what listings filter a run on before it has a record; requests made before this migration
-- have none), and when its run's record was created: requests without a record are listed as runs themselves.
ALTER TABLE run_requests ADD COLUMN branch TEXT;
ALTER TABLE run_requests ADD COLUMN recorded_at_ms INTEGER;
UPDATE run_requests SET recorded_at_ms = (
    SELECT r.created_at_ms FROM pipeline_runs AS r
    WHERE r.tenant_id = run_requests.tenant_id AND r.id = run_requests.run_id);
CREATE INDEX IF NOT EXISTS run_requests_unrecorded ON run_requests (tenant_id, created_at_ms, run_id)
    WHERE recorded_at_ms IS NULL;
