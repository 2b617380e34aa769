-- What is kept, and what is let go (issue 17; docs/retention.md).
--
-- Retention deletes finished jobs (retention.jobs_days) with their tasks,
-- attempts and logs, and the logs of ended attempts (retention.logs_days).
-- What an agent did outlives the job: before a job goes (by retention or
-- by hand), each agent's share of it is summed into agent_job_history and
-- its failed attempts copied to agent_failure_history, with the job's id
-- and title, so that an agent's job and failure histories (GET
-- /api/v1/agents/{id}/jobs and /failures) still show them. Neither refers
-- to jobs or agents: both outlive them.

CREATE TABLE agent_job_history (
    agent_id        uuid NOT NULL,
    job_id          bigint NOT NULL,
    title           text NOT NULL,
    attempts        integer NOT NULL,
    done            integer NOT NULL,
    failed          integer NOT NULL,
    cpu_s           double precision NOT NULL DEFAULT 0,
    last_started_at timestamptz,
    deleted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, job_id)
);

-- The columns of task_attempts that an attempt's document reads, so that
-- one column list serves both (masterd.jobs.views.attemptColumns).
CREATE TABLE agent_failure_history (
    task_id         bigint NOT NULL,
    attempt         integer NOT NULL,
    job_id          bigint NOT NULL,
    title           text NOT NULL,
    agent_id        uuid NOT NULL,
    state           text NOT NULL DEFAULT 'failed',
    started_at      timestamptz,
    finished_at     timestamptz,
    exit_code       integer,
    error           text,
    gpu_devices     integer[] NOT NULL DEFAULT '{}',
    wall_s          double precision,
    cpu_user_s      double precision,
    cpu_system_s    double precision,
    peak_rss_kb     bigint,
    gpu_memory_mb   integer,
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX agent_failure_history_agent
    ON agent_failure_history (agent_id, finished_at DESC, task_id DESC, attempt DESC);

-- Retention finds the jobs due by when they finished.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- An ended attempt's log, compressed (retention.compress_logs): its lines
-- as one zlib-compressed JSON array, in place of its task_logs rows. A log
-- is read from here when its attempt has no rows left in task_logs.
CREATE TABLE task_logs_packed (
    task_id     bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    line_count  integer NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
-- Already compressed: PostgreSQL need not try again.
ALTER TABLE task_logs_packed ALTER COLUMN data SET STORAGE EXTERNAL;

-- How far each of retention's walks over task_attempts has gone (log
-- compression, log deletion: the last attempt done, by finished_at, task id
-- and attempt), and the lease that lets one master at a time run retention
-- ("lease": held by `holder` until `at`).
CREATE TABLE retention_marks (
    name        text PRIMARY KEY,
    at          timestamptz NOT NULL,
    task_id     bigint NOT NULL DEFAULT 0,
    attempt     integer NOT NULL DEFAULT 0,
    holder      text
);

-- A job retention has begun to delete (its tasks go in batches, each its
-- own transaction): nothing may change it meanwhile (a 409).
ALTER TABLE jobs ADD COLUMN deleting boolean NOT NULL DEFAULT false;

-- Requirements that learn (scheduler.learn_requirements; docs/scheduler.md,
-- "Learned requirements"): the memory a layer's tasks were seen to use
-- (the 95th percentile of its latest attempts' peaks, in MB), kept by the
-- masters that learn, NULL otherwise. Where it is set the scheduler places
-- the layer's tasks by it instead of req_ram_mb.
ALTER TABLE layers ADD COLUMN learned_ram_mb integer;
