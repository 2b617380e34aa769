-- Production scheduling (docs/scheduler.md): layers, dependencies between
-- layers, jobs and frames, licence limits, project shares, per-job and
-- per-layer caps, preemption, GPU devices, stall timeouts.
--
-- A job's tasks belong to layers. A layer keeps its own per-state counts,
-- maintained by the same statement-level trigger that keeps the job's, and
-- the trigger is also where dependencies are released: in the transaction
-- that records the done (or the failure, or the retry) of a parent, so that
-- no code path can forget to.
--
-- A waiting task is released (becomes queued) when nothing holds it back:
-- its own unsatisfied frame dependencies (tasks.wait_count) and its layer's
-- unsatisfied whole dependencies on layers and jobs (layers.blockers) are
-- both zero. Each dependency has a "satisfied" flag, set once: a parent that
-- is done again after a re-render releases nothing twice. Every change of a
-- wait_count or blockers, and every release, is made under the row lock of
-- the child's job, taken first, so that two transactions (one satisfying a
-- frame dependency, one a whole one) cannot both miss the release.

CREATE TABLE projects (
    name        text PRIMARY KEY,
    weight      integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE limits (
    name        text PRIMARY KEY,
    max         integer NOT NULL CHECK (max >= 0),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE jobs
    ADD COLUMN project text,
    ADD COLUMN max_running integer CHECK (max_running > 0),
    ADD COLUMN preemptible boolean NOT NULL DEFAULT false,
    ADD COLUMN limits text[] NOT NULL DEFAULT '{}',
    ADD COLUMN stall_timeout_s integer CHECK (stall_timeout_s > 0),
    ADD COLUMN req_gpu_memory_mb integer NOT NULL DEFAULT 0 CHECK (req_gpu_memory_mb >= 0);
UPDATE jobs SET project = owner;
ALTER TABLE jobs ALTER COLUMN project SET NOT NULL;
CREATE INDEX jobs_project_id ON jobs (project, id DESC);

-- Whole dependencies of a job on another job (job_dependencies) are kept
-- per layer in layer_dependencies too; this flag remembers whether the
-- parent was done (for the documents).
ALTER TABLE job_dependencies ADD COLUMN satisfied boolean NOT NULL DEFAULT false;

CREATE TABLE layers (
    id              bigserial PRIMARY KEY,
    job_id          bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    index           integer NOT NULL,
    name            text NOT NULL,
    -- What its tasks run, resolved at submission (the layer's own value, or
    -- the job's): the assign statement reads only this row.
    command         text[],
    env             jsonb NOT NULL DEFAULT '{}',
    cwd             text,
    frames          text NOT NULL DEFAULT '',
    chunk           integer NOT NULL DEFAULT 1,
    req_cpus        integer NOT NULL DEFAULT 0 CHECK (req_cpus >= 0),
    req_ram_mb      integer NOT NULL DEFAULT 0 CHECK (req_ram_mb >= 0),
    req_gpus        integer NOT NULL DEFAULT 0 CHECK (req_gpus >= 0),
    req_gpu_memory_mb integer NOT NULL DEFAULT 0 CHECK (req_gpu_memory_mb >= 0),
    req_tags        text[] NOT NULL DEFAULT '{}',
    -- Every limit a task of the layer holds while assigned or running: the
    -- layer's and the job's.
    limits          text[] NOT NULL DEFAULT '{}',
    max_running     integer CHECK (max_running > 0),
    timeout_s       integer CHECK (timeout_s > 0),
    stall_timeout_s integer CHECK (stall_timeout_s > 0),
    -- Unsatisfied whole dependencies (on layers and jobs).
    blockers        integer NOT NULL DEFAULT 0 CHECK (blockers >= 0),
    -- Other layers (of this job or others) depend on this one as a whole,
    -- or on its tasks frame by frame: the trigger looks for them only then.
    has_dependents  boolean NOT NULL DEFAULT false,
    n_total         integer NOT NULL DEFAULT 0,
    n_waiting       integer NOT NULL DEFAULT 0,
    n_queued        integer NOT NULL DEFAULT 0,
    n_assigned      integer NOT NULL DEFAULT 0,
    n_running       integer NOT NULL DEFAULT 0,
    n_done          integer NOT NULL DEFAULT 0,
    n_failed        integer NOT NULL DEFAULT 0,
    n_canceled      integer NOT NULL DEFAULT 0,
    UNIQUE (job_id, index),
    UNIQUE (job_id, name)
) WITH (fillfactor = 80);
-- Limit use is counted over the layers that name the limit.
CREATE INDEX layers_limits ON layers USING gin (limits);

-- A dependency of a layer: on another layer of its job, or on a job.
CREATE TABLE layer_dependencies (
    child           bigint NOT NULL REFERENCES layers (id) ON DELETE CASCADE,
    parent_layer    bigint REFERENCES layers (id) ON DELETE CASCADE,
    parent_job      bigint REFERENCES jobs (id) ON DELETE CASCADE,
    -- A frame dependency is recorded here as declared (for the documents);
    -- only whole ones count in blockers, frame ones are task_dependencies.
    mode            text NOT NULL DEFAULT 'whole' CHECK (mode IN ('whole', 'frame')),
    on_failure      text NOT NULL DEFAULT 'wait' CHECK (on_failure IN ('wait', 'cancel')),
    satisfied       boolean NOT NULL DEFAULT false,
    CHECK ((parent_layer IS NULL) <> (parent_job IS NULL))
);
CREATE INDEX layer_dependencies_child ON layer_dependencies (child);
CREATE INDEX layer_dependencies_parent_layer ON layer_dependencies (parent_layer)
    WHERE parent_layer IS NOT NULL;
CREATE INDEX layer_dependencies_parent_job ON layer_dependencies (parent_job)
    WHERE parent_job IS NOT NULL;

-- Frame by frame: a task waits for each task (of its job or another) whose
-- frames meet its own.
CREATE TABLE task_dependencies (
    parent      bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    child       bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    on_failure  text NOT NULL DEFAULT 'wait' CHECK (on_failure IN ('wait', 'cancel')),
    satisfied   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (parent, child)
);
CREATE INDEX task_dependencies_child ON task_dependencies (child);

ALTER TABLE tasks
    -- No foreign key: a layer goes only with its job, which takes its tasks
    -- (and a key would need an index on every task's layer to delete one).
    ADD COLUMN layer_id bigint,
    -- Unsatisfied frame dependencies.
    ADD COLUMN wait_count integer NOT NULL DEFAULT 0,
    -- Other tasks depend on this one frame by frame.
    ADD COLUMN has_children boolean NOT NULL DEFAULT false,
    -- Canceled because a task or layer it depends on failed for good (with
    -- "on_failure": "cancel"): a retry of that parent brings it back.
    ADD COLUMN dep_canceled boolean NOT NULL DEFAULT false,
    -- When its last attempt was preempted: not preempted again within
    -- scheduler.preemption.min_runtime_s of its restart.
    ADD COLUMN preempted_at timestamptz;

-- Every existing job becomes a job of one layer, "main".
INSERT INTO layers (job_id, index, name, command, env, cwd, req_cpus, req_ram_mb, req_gpus,
                    req_tags, timeout_s, n_total, n_waiting, n_queued, n_assigned, n_running,
                    n_done, n_failed, n_canceled)
    SELECT id, 0, 'main', command, env, cwd, req_cpus, req_ram_mb, req_gpus, req_tags,
           task_timeout_s, n_total, n_waiting, n_queued, n_assigned, n_running, n_done,
           n_failed, n_canceled
    FROM jobs;
ALTER TABLE tasks DISABLE TRIGGER USER;
UPDATE tasks t SET layer_id = l.id FROM layers l WHERE l.job_id = t.job_id;
ALTER TABLE tasks ENABLE TRIGGER USER;
ALTER TABLE tasks ALTER COLUMN layer_id SET NOT NULL;
-- What the scheduler looks through, now per layer: queued tasks in order;
-- and the waiting tasks a release looks at. Partial indexes: a task enters
-- each once, so they cost little on the hot path.
DROP INDEX tasks_queued;
CREATE INDEX tasks_queued ON tasks (layer_id, index) WHERE state = 'queued';
CREATE INDEX tasks_waiting ON tasks (layer_id) WHERE state = 'waiting';
INSERT INTO layer_dependencies (child, parent_job, satisfied)
    SELECT l.id, d.parent, p.state = 'done'
    FROM job_dependencies d JOIN layers l ON l.job_id = d.child JOIN jobs p ON p.id = d.parent;
UPDATE layers l SET blockers = (SELECT count(*) FROM layer_dependencies d
    WHERE d.child = l.id AND d.mode = 'whole' AND NOT d.satisfied);
UPDATE job_dependencies d SET satisfied = (SELECT p.state = 'done' FROM jobs p WHERE p.id = d.parent);
UPDATE layers l SET has_dependents = true
    WHERE EXISTS (SELECT 1 FROM layer_dependencies d WHERE d.parent_job = l.job_id);

ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_state_check;
ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_state_check CHECK (state IN (
    'assigned', 'running', 'done', 'failed', 'canceled', 'lost', 'rejected', 'preempted'));
ALTER TABLE task_attempts ADD COLUMN gpu_devices integer[] NOT NULL DEFAULT '{}';

ALTER TABLE agents ADD COLUMN gpu_devices jsonb NOT NULL DEFAULT '[]';

-- The counts, now per layer and per job, and what follows from them.
DROP TRIGGER tasks_counts_insert ON tasks;
DROP TRIGGER tasks_counts_update ON tasks;
DROP FUNCTION masterd_tasks_inserted();
DROP FUNCTION masterd_tasks_updated();
DROP FUNCTION masterd_apply_task_deltas(bigint[], text[], integer[], boolean);

-- Release the waiting tasks of the given layers and tasks that nothing holds
-- back any more, and tell every master (the caller holds their jobs' locks).
CREATE FUNCTION masterd_release(layer_ids bigint[], task_ids bigint[]) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    released bigint[];
BEGIN
    -- Two statements, so that each finds its tasks by an index.
    WITH r AS (
        UPDATE tasks t SET state = 'queued'
        FROM layers l
        WHERE t.layer_id = ANY (coalesce(layer_ids, '{}')) AND l.id = t.layer_id
          AND t.state = 'waiting' AND t.wait_count = 0 AND l.blockers = 0
        RETURNING t.job_id
    ), s AS (
        UPDATE tasks t SET state = 'queued'
        FROM layers l
        WHERE t.id = ANY (coalesce(task_ids, '{}')) AND l.id = t.layer_id
          AND t.state = 'waiting' AND t.wait_count = 0 AND l.blockers = 0
        RETURNING t.job_id
    ), x AS (SELECT job_id FROM r UNION SELECT job_id FROM s)
    SELECT array_agg(job_id) INTO released FROM x;
    IF released IS NOT NULL THEN
        -- Every master hears of it (NOTIFY is sent at commit, only if the
        -- transaction commits), through the one announcement mechanism.
        PERFORM masterd_announce('', json_build_array(json_build_array('work', released)));
    END IF;
END
$$;

-- Whole dependencies whose parent (layers or jobs) is done now: satisfied,
-- once; the child layers' blockers fall, and those at zero are released.
CREATE FUNCTION masterd_satisfy_whole(done_layers bigint[], done_jobs bigint[]) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    opened bigint[];
BEGIN
    PERFORM 1 FROM jobs WHERE id IN (
        SELECT l.job_id FROM layer_dependencies d JOIN layers l ON l.id = d.child
        WHERE d.mode = 'whole' AND NOT d.satisfied AND (d.parent_layer = ANY (coalesce(done_layers, '{}'))
                                   OR d.parent_job = ANY (coalesce(done_jobs, '{}'))))
        ORDER BY id FOR UPDATE;
    UPDATE job_dependencies SET satisfied = true
        WHERE parent = ANY (coalesce(done_jobs, '{}')) AND NOT satisfied;
    WITH s AS (
        UPDATE layer_dependencies d SET satisfied = true
        WHERE d.mode = 'whole' AND NOT d.satisfied AND (d.parent_layer = ANY (coalesce(done_layers, '{}'))
                                   OR d.parent_job = ANY (coalesce(done_jobs, '{}')))
        RETURNING d.child
    ), c AS (SELECT child, count(*)::integer AS n FROM s GROUP BY child),
    u AS (
        UPDATE layers l SET blockers = l.blockers - c.n FROM c WHERE l.id = c.child
        RETURNING l.id, l.blockers
    )
    SELECT array_agg(id) FILTER (WHERE blockers = 0) INTO opened FROM u;
    IF opened IS NOT NULL THEN
        PERFORM masterd_release(opened, NULL);
    END IF;
END
$$;

-- Parents (layers or jobs) that now have a task failed for good or
-- canceled: the waiting tasks of the layers that depend on them as a whole
-- with "on_failure": "cancel" are canceled; parents without any such task
-- again (retried): those tasks wait again.
CREATE FUNCTION masterd_whole_failures(
    broken_layers bigint[], broken_jobs bigint[], mended_layers bigint[], mended_jobs bigint[]
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF broken_layers IS NOT NULL OR broken_jobs IS NOT NULL THEN
        PERFORM 1 FROM jobs WHERE id IN (
            SELECT l.job_id FROM layer_dependencies d JOIN layers l ON l.id = d.child
            WHERE d.mode = 'whole' AND d.on_failure = 'cancel' AND NOT d.satisfied
              AND (d.parent_layer = ANY (coalesce(broken_layers, '{}'))
                   OR d.parent_job = ANY (coalesce(broken_jobs, '{}'))))
            ORDER BY id FOR UPDATE;
        UPDATE tasks t SET state = 'canceled', dep_canceled = true, finished_at = now(),
                error = 'canceled: a layer or job it depends on failed'
            FROM layer_dependencies d
            WHERE d.child = t.layer_id AND d.mode = 'whole' AND d.on_failure = 'cancel' AND NOT d.satisfied
              AND (d.parent_layer = ANY (coalesce(broken_layers, '{}'))
                   OR d.parent_job = ANY (coalesce(broken_jobs, '{}')))
              AND t.state = 'waiting';
    END IF;
    IF mended_layers IS NOT NULL OR mended_jobs IS NOT NULL THEN
        PERFORM 1 FROM jobs WHERE id IN (
            SELECT l.job_id FROM layer_dependencies d JOIN layers l ON l.id = d.child
            WHERE d.mode = 'whole' AND d.on_failure = 'cancel'
              AND (d.parent_layer = ANY (coalesce(mended_layers, '{}'))
                   OR d.parent_job = ANY (coalesce(mended_jobs, '{}'))))
            ORDER BY id FOR UPDATE;
        UPDATE tasks t SET state = 'waiting', dep_canceled = false, finished_at = NULL,
                error = NULL
            FROM layer_dependencies d JOIN layers cl ON cl.id = d.child
            WHERE t.job_id = cl.job_id AND t.layer_id = cl.id
              AND d.mode = 'whole' AND d.on_failure = 'cancel'
              AND (d.parent_layer = ANY (coalesce(mended_layers, '{}'))
                   OR d.parent_job = ANY (coalesce(mended_jobs, '{}')))
              AND t.state = 'canceled' AND t.dep_canceled;
    END IF;
END
$$;

-- Apply the net change of task states, per layer and state, to the layers
-- and their jobs; then what follows from whole layers and jobs finishing,
-- failing or being retried.
CREATE FUNCTION masterd_apply_task_deltas(
    layer_ids bigint[], job_ids bigint[], states text[], deltas integer[], inserted boolean
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    done_layers bigint[]; broken_layers bigint[]; mended_layers bigint[];
    done_jobs bigint[]; broken_jobs bigint[]; mended_jobs bigint[];
    freed_jobs bigint[];
BEGIN
    -- Lock the jobs in id order, so that two statements touching the same
    -- jobs never deadlock on them; a layer is changed only under its job's
    -- lock.
    PERFORM 1 FROM jobs WHERE id = ANY (job_ids) ORDER BY id FOR UPDATE;

    WITH d AS (
        SELECT x.layer_id, x.job_id,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'waiting'), 0) AS w,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'queued'), 0) AS q,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'assigned'), 0) AS a,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'running'), 0) AS r,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'done'), 0) AS dn,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'failed'), 0) AS f,
            coalesce(sum(x.delta) FILTER (WHERE x.state = 'canceled'), 0) AS c,
            CASE WHEN inserted THEN sum(x.delta) ELSE 0 END AS t
        FROM unnest(layer_ids, job_ids, states, deltas) AS x (layer_id, job_id, state, delta)
        GROUP BY x.layer_id, x.job_id
    ), jd AS (
        SELECT job_id, sum(w) AS w, sum(q) AS q, sum(a) AS a, sum(r) AS r, sum(dn) AS dn,
            sum(f) AS f, sum(c) AS c, sum(t) AS t
        FROM d GROUP BY job_id
    ), lu AS (
        UPDATE layers SET
            n_total = n_total + d.t,
            n_waiting = n_waiting + d.w,
            n_queued = n_queued + d.q,
            n_assigned = n_assigned + d.a,
            n_running = n_running + d.r,
            n_done = n_done + d.dn,
            n_failed = n_failed + d.f,
            n_canceled = n_canceled + d.c
        FROM d WHERE layers.id = d.layer_id
        RETURNING layers.id, layers.job_id, layers.has_dependents AS deps, d.dn,
            d.f + d.c AS fc,
            (layers.limits <> '{}' OR layers.max_running IS NOT NULL) AND d.a + d.r < 0
                AS freed,
            layers.n_done = layers.n_total AS whole,
            layers.n_failed + layers.n_canceled AS bad
    ), ju AS (
        UPDATE jobs SET
            n_total = n_total + jd.t,
            n_waiting = n_waiting + jd.w,
            n_queued = n_queued + jd.q,
            n_assigned = n_assigned + jd.a,
            n_running = n_running + jd.r,
            n_done = n_done + jd.dn,
            n_failed = n_failed + jd.f,
            n_canceled = n_canceled + jd.c,
            updated_at = now()
        FROM jd WHERE jobs.id = jd.job_id
        RETURNING jobs.id, jd.dn, jd.f + jd.c AS fc,
            jobs.max_running IS NOT NULL AND jd.a + jd.r < 0 AS freed,
            jobs.n_done = jobs.n_total AS whole,
            jobs.n_failed + jobs.n_canceled AS bad
    ), l AS (
        SELECT array_agg(id) FILTER (WHERE whole AND dn > 0) AS done,
            array_agg(id) FILTER (WHERE fc > 0 AND bad = fc) AS broken,
            array_agg(id) FILTER (WHERE fc < 0 AND bad = 0) AS mended
        FROM lu WHERE deps
    ), j AS (
        SELECT array_agg(id) FILTER (WHERE whole AND dn > 0) AS done,
            array_agg(id) FILTER (WHERE fc > 0 AND bad = fc) AS broken,
            array_agg(id) FILTER (WHERE fc < 0 AND bad = 0) AS mended
        FROM ju
    ), f AS (
        SELECT job_id AS id FROM lu WHERE freed UNION SELECT id FROM ju WHERE freed
    )
    SELECT l.done, l.broken, l.mended, j.done, j.broken, j.mended,
           (SELECT array_agg(id) FROM f)
        INTO done_layers, broken_layers, mended_layers, done_jobs, broken_jobs, mended_jobs,
             freed_jobs
        FROM l, j;

    -- A task holding a limit or a cap ended: its room is every master's
    -- (another master's idle agents may be the ones that can take it).
    IF freed_jobs IS NOT NULL THEN
        PERFORM masterd_announce('', json_build_array(json_build_array('work', freed_jobs)));
    END IF;

    UPDATE jobs SET finished_at = CASE
            WHEN state IN ('done', 'failed', 'canceled') THEN now() ELSE NULL END
        WHERE id = ANY (job_ids)
          AND (state IN ('done', 'failed', 'canceled')) <> (finished_at IS NOT NULL);

    -- Only jobs that others depend on matter below.
    IF done_jobs IS NOT NULL OR broken_jobs IS NOT NULL OR mended_jobs IS NOT NULL THEN
        SELECT array_agg(x) FILTER (WHERE x = ANY (done_jobs)),
               array_agg(x) FILTER (WHERE x = ANY (broken_jobs)),
               array_agg(x) FILTER (WHERE x = ANY (mended_jobs))
            INTO done_jobs, broken_jobs, mended_jobs
            FROM (SELECT DISTINCT parent_job AS x FROM layer_dependencies
                  WHERE parent_job = ANY (job_ids) AND mode = 'whole') p;
    END IF;
    IF done_layers IS NOT NULL OR done_jobs IS NOT NULL THEN
        PERFORM masterd_satisfy_whole(done_layers, done_jobs);
    END IF;
    IF broken_layers IS NOT NULL OR broken_jobs IS NOT NULL
       OR mended_layers IS NOT NULL OR mended_jobs IS NOT NULL THEN
        PERFORM masterd_whole_failures(broken_layers, broken_jobs, mended_layers, mended_jobs);
    END IF;
END
$$;

-- Frame dependencies of the tasks whose state changed: satisfied by a done
-- parent, canceled after a failed or canceled one (with "on_failure":
-- "cancel"), waiting again after a retried one.
CREATE FUNCTION masterd_frame_dependencies(
    done_ids bigint[], broken_ids bigint[], mended_ids bigint[]
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    freed bigint[];
BEGIN
    PERFORM 1 FROM jobs WHERE id IN (
        SELECT c.job_id FROM task_dependencies d JOIN tasks c ON c.id = d.child
        WHERE d.parent = ANY (coalesce(done_ids, '{}') || coalesce(broken_ids, '{}')
                              || coalesce(mended_ids, '{}')))
        ORDER BY id FOR UPDATE;
    IF done_ids IS NOT NULL THEN
        -- Satisfied edges, the children's counts, and the release of those
        -- at zero, in one statement (the child jobs are locked: the layer's
        -- blockers read here are current).
        WITH s AS (
            UPDATE task_dependencies d SET satisfied = true
            WHERE d.parent = ANY (done_ids) AND NOT d.satisfied RETURNING d.child
        ), c AS (SELECT child, count(*)::integer AS n FROM s GROUP BY child),
        u AS (
            UPDATE tasks t SET wait_count = t.wait_count - c.n,
                state = CASE WHEN t.state = 'waiting' AND t.wait_count = c.n AND l.blockers = 0
                             THEN 'queued' ELSE t.state END
            FROM c, layers l WHERE t.id = c.child AND l.id = t.layer_id
            RETURNING t.job_id, t.state = 'queued' AND t.wait_count = 0 AS released
        )
        SELECT array_agg(DISTINCT job_id) FILTER (WHERE released) INTO freed FROM u;
        IF freed IS NOT NULL THEN
            PERFORM masterd_announce('', json_build_array(json_build_array('work', freed)));
        END IF;
    END IF;
    IF broken_ids IS NOT NULL THEN
        UPDATE tasks t SET state = 'canceled', dep_canceled = true, finished_at = now(),
                error = 'canceled: a task it depends on failed'
            FROM task_dependencies d
            WHERE d.parent = ANY (broken_ids) AND d.child = t.id AND d.on_failure = 'cancel'
              AND NOT d.satisfied AND t.state = 'waiting';
    END IF;
    IF mended_ids IS NOT NULL THEN
        UPDATE tasks t SET state = 'waiting', dep_canceled = false, finished_at = NULL,
                error = NULL
            FROM task_dependencies d
            WHERE d.parent = ANY (mended_ids) AND d.child = t.id AND d.on_failure = 'cancel'
              AND t.state = 'canceled' AND t.dep_canceled;
    END IF;
END
$$;

CREATE FUNCTION masterd_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    l bigint[]; j bigint[]; s text[]; d integer[];
BEGIN
    SELECT array_agg(layer_id), array_agg(job_id), array_agg(state), array_agg(n)
        INTO l, j, s, d
        FROM (SELECT layer_id, job_id, state, count(*)::integer AS n
              FROM new_tasks GROUP BY layer_id, job_id, state) c;
    IF j IS NOT NULL THEN
        PERFORM masterd_apply_task_deltas(l, j, s, d, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION masterd_tasks_updated() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    l bigint[]; j bigint[]; s text[]; d integer[];
    done_ids bigint[]; broken_ids bigint[]; mended_ids bigint[];
BEGIN
    SELECT array_agg(layer_id), array_agg(job_id), array_agg(state), array_agg(n)
        INTO l, j, s, d
        FROM (
            SELECT layer_id, job_id, state, sum(delta)::integer AS n FROM (
                SELECT nt.layer_id, nt.job_id, nt.state, 1 AS delta
                    FROM new_tasks nt JOIN old_tasks ot USING (id)
                    WHERE nt.state <> ot.state
                UNION ALL
                SELECT ot.layer_id, ot.job_id, ot.state, -1
                    FROM new_tasks nt JOIN old_tasks ot USING (id)
                    WHERE nt.state <> ot.state
            ) changes
            GROUP BY layer_id, job_id, state
            HAVING sum(delta) <> 0
        ) c;
    IF j IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM masterd_apply_task_deltas(l, j, s, d, false);
    IF NOT EXISTS (SELECT 1 FROM new_tasks WHERE has_children) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(nt.id) FILTER (WHERE nt.state = 'done'),
           array_agg(nt.id) FILTER (WHERE nt.state IN ('failed', 'canceled')
                                    AND ot.state NOT IN ('failed', 'canceled')),
           array_agg(nt.id) FILTER (WHERE ot.state IN ('failed', 'canceled')
                                    AND nt.state IN ('queued', 'waiting'))
        INTO done_ids, broken_ids, mended_ids
        FROM new_tasks nt JOIN old_tasks ot USING (id)
        WHERE nt.has_children AND nt.state <> ot.state;
    IF done_ids IS NOT NULL OR broken_ids IS NOT NULL OR mended_ids IS NOT NULL THEN
        PERFORM masterd_frame_dependencies(done_ids, broken_ids, mended_ids);
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
