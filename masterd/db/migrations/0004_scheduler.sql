-- What the scheduler needs: a per-job blocklist of agents, and a quick way
-- to the jobs that have queued work.

CREATE TABLE job_blocklist (
    job_id      bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    agent_id    uuid NOT NULL,
    failures    integer NOT NULL DEFAULT 0,
    blocked     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, agent_id)
);

-- Jobs with queued tasks that may run, in the scheduler's order.
CREATE INDEX jobs_schedulable ON jobs (priority DESC, id)
    WHERE n_queued > 0 AND NOT paused AND NOT canceled;
