-- Every event of a run is stored once, with its sequence number, so that a run can be replayed from any point.
-- Log lines stay in `logs` (chunks); every other event (run-started, stage-queued, stage-started,
-- stage-finished, run-finished, ...) is a row here, its body the event's JSON as the event bus emitted it.
CREATE TABLE IF NOT EXISTS run_events (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    -- The event's `type` (`stage-finished`, ...): what readers of one kind select on.
    type TEXT NOT NULL,
    -- The stage instance and attempt of a stage event (NULL for others): what joins a start to its end.
    stage TEXT,
    attempt BIGINT,
    -- The event's JSON (its `type` and fields, without seq, run id and time). TEXT, not JSONB: it
    -- is read back byte for byte, and parsed only where an attempt is read.
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq),
    FOREIGN KEY (tenant_id, run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE CASCADE
);
-- A stage's events by attempt: what the `stage_results` view below joins a start to its end with.
CREATE INDEX IF NOT EXISTS run_events_by_attempt ON run_events (tenant_id, run_id, stage, attempt)
    WHERE stage IS NOT NULL;
-- The sequence number of each line of a chunk. `seqs` is NULL when the lines have consecutive numbers from
-- first_seq (what the recorder writes), else each line's number minus first_seq, comma-separated. `last_seq`
-- is the last line's number; a chunk never spans more than 4,096 numbers, so the chunks holding the numbers
-- after N are found with the `logs_in_order` index (first_seq > N - 4096 AND last_seq > N). Chunks written
-- before this migration hold consecutive numbers.
ALTER TABLE logs ADD COLUMN last_seq BIGINT;
ALTER TABLE logs ADD COLUMN seqs TEXT;
UPDATE logs SET last_seq = first_seq + line_count - 1;
ALTER TABLE logs ALTER COLUMN last_seq SET NOT NULL;
-- Attempts are read from the stage events, not kept a second time: `stage_results` becomes a view with the
-- table's columns. The table, renamed `attempt_rows`, keeps the attempts of runs recorded before this migration
-- (and attempts written without events); the view shows both. An attempt without its end is `running` while
-- its run is, else `interrupted` as of the run's end.
ALTER TABLE stage_results RENAME TO attempt_rows;
CREATE VIEW stage_results AS
SELECT s.tenant_id, s.run_id, s.stage, s.attempt,
    CASE
        WHEN e.seq IS NOT NULL THEN (e.body::json ->> 'outcome')
        WHEN r.status = 'running' THEN 'running'
        ELSE 'interrupted'
    END AS status,
    (e.body::json ->> 'exit_code')::BIGINT AS exit_code,
    (e.body::json ->> 'reason') AS reason,
    s.at_ms AS started_at_ms,
    CASE
        WHEN e.seq IS NOT NULL THEN e.at_ms
        WHEN r.status = 'running' THEN NULL
        ELSE r.finished_at_ms
    END AS finished_at_ms,
    (e.body::json ->> 'duration_ms')::BIGINT AS duration_ms
FROM run_events AS s
JOIN pipeline_runs AS r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
LEFT JOIN run_events AS e ON e.tenant_id = s.tenant_id AND e.run_id = s.run_id
    AND e.type = 'stage-finished' AND e.stage = s.stage AND e.attempt = s.attempt
WHERE s.type = 'stage-started'
UNION ALL
-- Ends without a start: stages that never started (attempt 0).
SELECT e.tenant_id, e.run_id, e.stage, e.attempt, (e.body::json ->> 'outcome'),
    (e.body::json ->> 'exit_code')::BIGINT, (e.body::json ->> 'reason'), NULL, e.at_ms,
    (e.body::json ->> 'duration_ms')::BIGINT
FROM run_events AS e
WHERE e.type = 'stage-finished' AND NOT EXISTS (
    SELECT 1 FROM run_events AS s
    WHERE s.tenant_id = e.tenant_id AND s.run_id = e.run_id AND s.type = 'stage-started'
        AND s.stage = e.stage AND s.attempt = e.attempt)
UNION ALL
SELECT tenant_id, run_id, stage, attempt, status, exit_code, reason, started_at_ms, finished_at_ms, duration_ms
FROM attempt_rows;
