-- Every event of a run is stored once, with its sequence number, so that a run can be replayed from any point.
-- Log lines stay in `logs` (chunks); every other event (run-started, stage-queued, stage-started,
-- stage-finished, run-finished, ...) is a row here, its body the event's JSON as the event bus emitted it.
CREATE TABLE IF NOT EXISTS run_events (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    -- The event's `type` (`stage-finished`, ...): what readers of one kind select on.
    type TEXT NOT NULL,
    -- The event's JSON (its `type` and fields, without seq, run id and time).
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq),
    FOREIGN KEY (tenant_id, run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE CASCADE
);
-- The sequence number of each line of a chunk. `seqs` is NULL when the lines have consecutive numbers from
-- first_seq (what the recorder writes), else each line's number minus first_seq, comma-separated. `last_seq`
-- is the last line's number; a chunk never spans more than 4,096 numbers, so the chunks holding the numbers
-- after N are found with the `logs_in_order` index (first_seq > N - 4096 AND last_seq > N). Chunks written
-- before this migration hold consecutive numbers.
ALTER TABLE logs ADD COLUMN last_seq INTEGER;
ALTER TABLE logs ADD COLUMN seqs TEXT;
UPDATE logs SET last_seq = first_seq + line_count - 1;
