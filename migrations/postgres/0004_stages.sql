-- One row per attempt of a stage instance; attempt 0 is a stage that never started (skipped).
CREATE TABLE IF NOT EXISTS stage_results (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    -- `running` until it finishes, `interrupted` when its runner died, else the outcome.
    status TEXT NOT NULL,
    exit_code BIGINT,
    reason TEXT,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    duration_ms BIGINT,
    PRIMARY KEY (tenant_id, run_id, stage, attempt),
    FOREIGN KEY (tenant_id, run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE CASCADE
);
