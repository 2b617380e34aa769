-- The farm's history (issue 17; docs/history.md): what the farm did, hour
-- by hour, kept when the jobs and their attempts are deleted (by hand or by
-- retention), so that "why is the farm slower this week" can be answered
-- after the jobs of last week are gone.
--
-- farm_history holds one row per hour (UTC), project, owner and agent tags
-- (the agent's tags and extra_tags, sorted and without repeats: masterd's
-- pools are agents' tags; '{}' for an untagged agent or none): the attempts
-- that finished in that hour, done and failed among them (canceled, lost,
-- rejected and preempted attempts count in attempts, CPU and wall time
-- only), and the user + system CPU and wall seconds their agents measured
-- (task_attempts.cpu_user_s + cpu_system_s and wall_s, migration 0020; an
-- attempt that reported none adds nothing, as in a job's usage). The
-- primary key starts with the hour: the route reads ranges of hours.
--
-- masterd.history folds attempts in with additions (INSERT ... ON CONFLICT
-- DO UPDATE SET x = x + EXCLUDED.x), never by recounting: what it adds is
-- gone from task_attempts soon after, so a row can only grow.

CREATE TABLE farm_history (
    hour          timestamptz NOT NULL,
    project       text NOT NULL,
    owner         text NOT NULL,
    tags          text[] NOT NULL,
    tasks_done    bigint NOT NULL DEFAULT 0,
    tasks_failed  bigint NOT NULL DEFAULT 0,
    attempts      bigint NOT NULL DEFAULT 0,
    cpu_s         double precision NOT NULL DEFAULT 0,
    wall_s        double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, project, owner, tags)
);

-- The same figures over all hours, per project, added to in the same
-- statement: what /metrics exports as counters. Reading them is one row a
-- project instead of a sum over every hour ever rolled up, and they never
-- go down, even if old rows of farm_history are one day deleted (a
-- Prometheus counter that goes down reads as a restart).
CREATE TABLE farm_history_totals (
    project       text PRIMARY KEY,
    tasks_done    bigint NOT NULL DEFAULT 0,
    tasks_failed  bigint NOT NULL DEFAULT 0,
    attempts      bigint NOT NULL DEFAULT 0,
    cpu_s         double precision NOT NULL DEFAULT 0,
    wall_s        double precision NOT NULL DEFAULT 0
);

-- The watermark: every attempt that finished before rolled_to is in
-- farm_history (or was never to be: see farm_history_retired). One row,
-- moved forward in the transaction that folds the attempts before it. It
-- starts at -infinity, so that the attempts already in the database when
-- this migration runs are rolled up too, an hour of them at a time.
CREATE TABLE farm_history_mark (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    rolled_to     timestamptz NOT NULL
);
INSERT INTO farm_history_mark (rolled_to) VALUES ('-infinity');

-- The jobs whose attempts masterd.history.rollUpJob folded in ahead of the
-- watermark, just before their deletion: the periodic roll-up leaves their
-- attempts alone, because retention deletes a job's tasks in batches, each
-- its own transaction, after the job was retired, and a roll-up in between
-- would count them twice. A row goes once its job is gone.
CREATE TABLE farm_history_retired (
    job_id        bigint PRIMARY KEY
);
