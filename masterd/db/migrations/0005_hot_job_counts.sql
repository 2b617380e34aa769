-- Let the per-state counts of a job change without touching its indexes.
--
-- Every task report changes a job's counts. PostgreSQL updates a row in
-- place ("HOT": no new index entries) only when no indexed column changes,
-- and the columns of a partial index's WHERE clause count as indexed: with
-- jobs_schedulable defined on n_queued, every count change wrote a new entry
-- into all four indexes of jobs, which made the count trigger the largest
-- cost of a report when many jobs run at once. The index now names the
-- state instead, which changes only a few times in a job's life; the
-- scheduler still filters on n_queued, paused and canceled.

DROP INDEX jobs_schedulable;
CREATE INDEX jobs_schedulable ON jobs (priority DESC, id)
    WHERE state IN ('queued', 'running');

-- Room on each page for those in-place updates.
ALTER TABLE jobs SET (fillfactor = 80);
