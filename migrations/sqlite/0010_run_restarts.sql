-- What daemons of one store tell each other about a run through its request: a cancel asked through any of them
-- (the one running the run polls for it), and the chain of an interrupted run and the run that started it again.
ALTER TABLE run_requests ADD COLUMN cancel_requested_at_ms INTEGER;
ALTER TABLE run_requests ADD COLUMN restart_of TEXT;
ALTER TABLE run_requests ADD COLUMN restarted_as TEXT;
