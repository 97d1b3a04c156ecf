-- What a rerun needs of a run (`buildit runs retry`): its pipeline file, the file's digest, its workspace and the
-- flags it was started with, as JSON (never a secret value); and the run it reruns, or whose stages it reused.
ALTER TABLE pipeline_runs ADD COLUMN inputs TEXT;
ALTER TABLE pipeline_runs ADD COLUMN retry_of TEXT;
