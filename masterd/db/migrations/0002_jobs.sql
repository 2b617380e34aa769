-- Jobs, their tasks, the tasks' attempts, and dependencies between jobs.
--
-- A job's per-state task counts and its state are kept by the database
-- itself: a statement-level trigger on tasks applies the net change of every
-- statement to the jobs it touched, in the same transaction, so that no code
-- path can forget to, and reading a job never counts its tasks. The job's
-- state is a generated column derived from those counts and its flags.

CREATE FUNCTION masterd_job_state(
    canceled boolean, paused boolean, total integer,
    n_waiting integer, n_queued integer, n_assigned integer, n_running integer,
    n_done integer, n_failed integer, n_canceled integer
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN n_done + n_failed + n_canceled = total THEN
            CASE
                WHEN canceled THEN 'canceled'
                WHEN n_failed > 0 THEN 'failed'
                WHEN n_canceled > 0 THEN 'canceled'
                ELSE 'done'
            END
        WHEN paused THEN 'paused'
        WHEN n_assigned + n_running > 0 THEN 'running'
        WHEN n_queued > 0 THEN 'queued'
        ELSE 'waiting'
    END
$$;

CREATE TABLE jobs (
    id              bigserial PRIMARY KEY,
    title           text NOT NULL,
    owner           text NOT NULL,
    priority        smallint NOT NULL DEFAULT 50 CHECK (priority BETWEEN 0 AND 100),
    weight          integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    paused          boolean NOT NULL DEFAULT false,
    canceled        boolean NOT NULL DEFAULT false,
    command         text[],
    env             jsonb NOT NULL DEFAULT '{}',
    cwd             text,
    req_cpus        integer NOT NULL DEFAULT 0 CHECK (req_cpus >= 0),
    req_ram_mb      integer NOT NULL DEFAULT 0 CHECK (req_ram_mb >= 0),
    req_gpus        integer NOT NULL DEFAULT 0 CHECK (req_gpus >= 0),
    req_tags        text[] NOT NULL DEFAULT '{}',
    max_retries     integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    task_timeout_s  integer CHECK (task_timeout_s > 0),
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    n_total         integer NOT NULL DEFAULT 0,
    n_waiting       integer NOT NULL DEFAULT 0,
    n_queued        integer NOT NULL DEFAULT 0,
    n_assigned      integer NOT NULL DEFAULT 0,
    n_running       integer NOT NULL DEFAULT 0,
    n_done          integer NOT NULL DEFAULT 0,
    n_failed        integer NOT NULL DEFAULT 0,
    n_canceled      integer NOT NULL DEFAULT 0,
    state           text GENERATED ALWAYS AS (masterd_job_state(
                        canceled, paused, n_total, n_waiting, n_queued, n_assigned,
                        n_running, n_done, n_failed, n_canceled)) STORED
);

-- Newest first, by id (keyset pagination), optionally within a state or owner.
CREATE INDEX jobs_state_id ON jobs (state, id DESC);
CREATE INDEX jobs_owner_id ON jobs (owner, id DESC);

CREATE TABLE job_dependencies (
    parent  bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    child   bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (parent, child),
    CHECK (parent <> child)
);
CREATE INDEX job_dependencies_child ON job_dependencies (child);

CREATE TABLE tasks (
    id           bigserial PRIMARY KEY,
    job_id       bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    index        integer NOT NULL,
    frames       integer[] NOT NULL,
    command      text[],
    state        text NOT NULL CHECK (state IN (
                     'waiting', 'queued', 'assigned', 'running', 'done', 'failed', 'canceled')),
    -- The number of the current (or last) attempt; 0 before the first.
    attempt      integer NOT NULL DEFAULT 0,
    -- Failed attempts since the task was submitted or manually retried; a
    -- lost or rejected attempt is not a failure and does not count.
    failures     integer NOT NULL DEFAULT 0,
    agent_id     uuid,
    progress     real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    started_at   timestamptz,
    finished_at  timestamptz,
    exit_code    integer,
    error        text,
    UNIQUE (job_id, index)
);
-- What the scheduler looks through: queued tasks in job order.
CREATE INDEX tasks_queued ON tasks (job_id, index) WHERE state = 'queued';
-- Current assignments, per agent.
CREATE INDEX tasks_active_agent ON tasks (agent_id) WHERE state IN ('assigned', 'running');
CREATE INDEX tasks_job_state ON tasks (job_id, state, index);

CREATE TABLE task_attempts (
    task_id      bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    job_id       bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    agent_id     uuid,
    state        text NOT NULL CHECK (state IN (
                     'assigned', 'running', 'done', 'failed', 'canceled', 'lost', 'rejected')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    exit_code    integer,
    error        text,
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX task_attempts_agent ON task_attempts (agent_id, finished_at DESC);
CREATE INDEX task_attempts_job ON task_attempts (job_id);

-- Apply the net change of task states (one row a job and state) to the jobs.
CREATE FUNCTION masterd_apply_task_deltas(
    job_ids bigint[], states text[], deltas integer[], inserted boolean
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    gained_done bigint[];
    released bigint[];
BEGIN
    -- Lock the jobs in id order, so that two statements touching the same
    -- jobs never deadlock on them.
    PERFORM 1 FROM jobs WHERE id = ANY (job_ids) ORDER BY id FOR UPDATE;

    WITH d AS (
        SELECT x.job_id,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'waiting'), 0) AS w,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'queued'), 0) AS q,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'assigned'), 0) AS a,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'running'), 0) AS r,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'done'), 0) AS dn,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'failed'), 0) AS f,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'canceled'), 0) AS c,
            CASE WHEN inserted THEN sum(x.delta) ELSE 0 END AS t
        FROM unnest(job_ids, states, deltas) AS x (job_id, state, delta)
        GROUP BY x.job_id
    ), updated AS (
        UPDATE jobs SET
            n_total = n_total + d.t,
            n_waiting = n_waiting + d.w,
            n_queued = n_queued + d.q,
            n_assigned = n_assigned + d.a,
            n_running = n_running + d.r,
            n_done = n_done + d.dn,
            n_failed = n_failed + d.f,
            n_canceled = n_canceled + d.c,
            updated_at = now()
        FROM d WHERE jobs.id = d.job_id
        RETURNING jobs.id, d.dn
    )
    SELECT array_agg(id) FILTER (WHERE dn > 0) INTO gained_done FROM updated;

    UPDATE jobs SET finished_at = CASE
            WHEN state IN ('done', 'failed', 'canceled') THEN now() ELSE NULL END
        WHERE id = ANY (job_ids)
          AND (state IN ('done', 'failed', 'canceled')) <> (finished_at IS NOT NULL);

    IF gained_done IS NULL THEN
        RETURN;
    END IF;

    -- Jobs that just became done release their children's waiting tasks,
    -- once every parent of the child is done.
    SELECT array_agg(DISTINCT dep.child) INTO released
        FROM jobs j JOIN job_dependencies dep ON dep.parent = j.id
        WHERE j.id = ANY (gained_done)
          AND j.state = 'done'
          AND NOT EXISTS (
              SELECT 1 FROM job_dependencies other JOIN jobs pj ON pj.id = other.parent
              WHERE other.child = dep.child AND pj.state <> 'done');

    IF released IS NOT NULL THEN
        UPDATE tasks SET state = 'queued'
            WHERE job_id = ANY (released) AND state = 'waiting';
        -- Every master hears of the released work (NOTIFY is sent at
        -- commit, only if the transaction commits; docs/operations.md).
        PERFORM pg_notify('masterd', json_build_object(
            'origin', '', 'events', json_build_array(json_build_array('work', released)))::text);
    END IF;
END
$$;

CREATE FUNCTION masterd_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    j bigint[]; s text[]; d integer[];
BEGIN
    SELECT array_agg(job_id), array_agg(state), array_agg(n) INTO j, s, d
        FROM (SELECT job_id, state, count(*)::integer AS n
              FROM new_tasks GROUP BY job_id, state) c;
    IF j IS NOT NULL THEN
        PERFORM masterd_apply_task_deltas(j, s, d, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION masterd_tasks_updated() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    j bigint[]; s text[]; d integer[];
BEGIN
    SELECT array_agg(job_id), array_agg(state), array_agg(n) INTO j, s, d
        FROM (
            SELECT job_id, state, sum(delta)::integer AS n FROM (
                SELECT nt.job_id, nt.state, 1 AS delta
                    FROM new_tasks nt JOIN old_tasks ot USING (id)
                    WHERE nt.state <> ot.state
                UNION ALL
                SELECT ot.job_id, ot.state, -1
                    FROM new_tasks nt JOIN old_tasks ot USING (id)
                    WHERE nt.state <> ot.state
            ) changes
            GROUP BY job_id, state
            HAVING sum(delta) <> 0
        ) c;
    IF j IS NOT NULL THEN
        PERFORM masterd_apply_task_deltas(j, s, d, false);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_counts_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION masterd_tasks_inserted();
CREATE TRIGGER tasks_counts_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION masterd_tasks_updated();
