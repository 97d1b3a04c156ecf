-- Pipelines carry the counter their run numbers come from; incrementing it in the transaction that inserts the
-- run makes numbers race-free (never MAX() + 1).
CREATE TABLE IF NOT EXISTS pipelines (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    next_run_number BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS pipeline_runs (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    number BIGINT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    stage_count BIGINT,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    duration_ms BIGINT,
    -- Who runs it: a run whose process is gone, or whose heartbeat stopped, is interrupted.
    owner_host TEXT NOT NULL,
    owner_pid BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    sha TEXT,
    branch TEXT,
    event TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, pipeline, number),
    FOREIGN KEY (tenant_id, pipeline) REFERENCES pipelines (tenant_id, name)
);
CREATE INDEX IF NOT EXISTS pipeline_runs_by_time ON pipeline_runs (tenant_id, created_at_ms);
CREATE INDEX IF NOT EXISTS pipeline_runs_running ON pipeline_runs (tenant_id, status) WHERE status = 'running';
