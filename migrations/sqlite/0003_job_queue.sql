-- The job queue: at-least-once delivery with leases. `attempts` doubles as the fencing token of the lease.
CREATE TABLE IF NOT EXISTS job_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    worker TEXT,
    lease_until_ms INTEGER,
    error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
-- Claims read the oldest queued job, or the longest-expired lease: one index each, so that neither scan walks
-- past the other kind of job (a queue of 10,000 waiting jobs must not slow down every claim).
CREATE INDEX IF NOT EXISTS job_queue_queued ON job_queue (tenant_id, queue, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS job_queue_leased ON job_queue (tenant_id, queue, lease_until_ms) WHERE status = 'running';
