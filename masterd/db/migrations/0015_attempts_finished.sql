-- The attempts that finished in a span of time, for GET /api/v1/farm's
-- finished_per_minute: without it, counting the last hour's attempts reads
-- every attempt ever made. Only finished_at is indexed (the predicate names
-- it too), so that an attempt's state changes (assigned to running) stay
-- in-place updates (see 0005_hot_job_counts.sql).

CREATE INDEX task_attempts_finished ON task_attempts (finished_at)
    WHERE finished_at IS NOT NULL;
