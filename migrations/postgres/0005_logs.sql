-- Log lines, stored as chunks of consecutive lines of one attempt. Lines of an attempt are numbered from 1
-- without gaps: a chunk holds lines first_line .. first_line + line_count - 1. `first_seq` (the event sequence
-- number of the chunk's first line) orders chunks of different stages as they happened.
CREATE TABLE IF NOT EXISTS logs (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    first_line BIGINT NOT NULL,
    line_count BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    first_at_ms BIGINT NOT NULL,
    -- One character per line: `o` stdout, `e` stderr.
    streams TEXT NOT NULL,
    -- Per line, milliseconds after first_at_ms, comma-separated.
    offsets_ms TEXT NOT NULL,
    -- The lines, as a JSON array of strings.
    lines TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id, stage, attempt, first_line),
    FOREIGN KEY (tenant_id, run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS logs_in_order ON logs (tenant_id, run_id, first_seq);
