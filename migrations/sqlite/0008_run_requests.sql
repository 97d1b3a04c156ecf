-- Runs the daemon was asked for, from the trigger until a worker starts them: a queued run and the idempotency
-- key that asked for it survive a restart. Once `started`, the run's own record (`pipeline_runs`) says the rest.
CREATE TABLE IF NOT EXISTS run_requests (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'started', 'cancelled', 'failed')),
    reason TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
-- The same key twice gives the same run: the index is what makes two concurrent triggers agree.
CREATE UNIQUE INDEX IF NOT EXISTS run_requests_by_key ON run_requests (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing the queued runs, oldest first, walks only the queued ones.
CREATE INDEX IF NOT EXISTS run_requests_queued ON run_requests (tenant_id, created_at_ms, run_id)
    WHERE state = 'queued';
