-- A cancel of a running run asked through the store (`buildit runs cancel` of a run another process runs): the
-- process running it polls this column and stops the run as Ctrl-C would. The first request counts.
ALTER TABLE pipeline_runs ADD COLUMN cancel_requested_at_ms BIGINT;
-- Pruning finds ended runs by when they ended.
CREATE INDEX IF NOT EXISTS pipeline_runs_by_end ON pipeline_runs (tenant_id, finished_at_ms)
    WHERE finished_at_ms IS NOT NULL;
