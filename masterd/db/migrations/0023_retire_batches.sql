-- A finished job's deletion retires it in batches (masterd.jobs.retire;
-- docs/retention.md): each batch of its tasks folds its own attempts into
-- the farm's history in the transaction that deletes them, instead of one
-- transaction that grows with the job. The watermark the job was retired
-- with says which of them the periodic roll-up had folded already. NULL for
-- a job retired before this migration: it was folded whole then.
ALTER TABLE farm_history_retired ADD COLUMN folded_from timestamptz;

-- Retention looks for the deletions left unfinished (by hand, on a master
-- that stopped midway) on every run: few rows, found without a scan.
CREATE INDEX jobs_deleting ON jobs (id) WHERE deleting;
