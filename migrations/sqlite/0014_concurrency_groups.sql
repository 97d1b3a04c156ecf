-- Concurrency groups (`concurrency group="deploy-{branch}"`): who holds each group of a tenant, a run or one
-- stage instance of it (`stage` is '' for the run itself), and the one run that waits next for it. A holder
-- whose run is no longer running (ended, or marked interrupted when its runner died) counts as gone.
CREATE TABLE IF NOT EXISTS concurrency_groups (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    acquired_at_ms INTEGER NOT NULL,
    -- The newest run waiting for the group: it takes the group when the holder lets it go; an older one that
    -- waited is cancelled.
    pending_run_id TEXT,
    PRIMARY KEY (tenant_id, name)
);
