-- Frame dependencies lock their child jobs cheaply (docs/performance.md,
-- "Production scheduling"): the jobs whose tasks may change are found from
-- the frame dependencies declared on the parents' layers and jobs (a few
-- rows) instead of from every edge of every parent task (two index lookups
-- a task, the most costly part of a done report in the production case).

DROP FUNCTION masterd_frame_dependencies(bigint[], bigint[], bigint[]);

-- Frame dependencies of the tasks whose state changed: satisfied by a done
-- parent, canceled after a failed or canceled one (with "on_failure":
-- "cancel"), waiting again after a retried one.
CREATE FUNCTION masterd_frame_dependencies(
    done_ids bigint[], broken_ids bigint[], mended_ids bigint[],
    parent_layers bigint[], parent_jobs bigint[]
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    freed bigint[];
BEGIN
    -- The child jobs, found from the frame dependencies declared on the
    -- parents' layers and jobs (a few rows), not from every edge.
    PERFORM 1 FROM jobs WHERE id IN (
        SELECT l.job_id FROM layer_dependencies d JOIN layers l ON l.id = d.child
        WHERE d.mode = 'frame' AND (d.parent_layer = ANY (coalesce(parent_layers, '{}'))
                                    OR d.parent_job = ANY (coalesce(parent_jobs, '{}'))))
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

-- The trigger passes the parents' layers and jobs.
CREATE OR REPLACE FUNCTION masterd_tasks_updated() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    l bigint[]; j bigint[]; s text[]; d integer[];
    done_ids bigint[]; broken_ids bigint[]; mended_ids bigint[];
    parent_layers bigint[]; parent_jobs bigint[];
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
                                    AND nt.state IN ('queued', 'waiting')),
           array_agg(DISTINCT nt.layer_id), array_agg(DISTINCT nt.job_id)
        INTO done_ids, broken_ids, mended_ids, parent_layers, parent_jobs
        FROM new_tasks nt JOIN old_tasks ot USING (id)
        WHERE nt.has_children AND nt.state <> ot.state;
    IF done_ids IS NOT NULL OR broken_ids IS NOT NULL OR mended_ids IS NOT NULL THEN
        PERFORM masterd_frame_dependencies(done_ids, broken_ids, mended_ids, parent_layers,
                                          parent_jobs);
    END IF;
    RETURN NULL;
END
$$;

-- An edge is updated once (satisfied): room on its page keeps the update
-- off the indexes (a HOT update).
ALTER TABLE task_dependencies SET (fillfactor = 70);

-- A claim's limits and caps in one round trip (masterd/scheduler/claims.py):
-- try the advisory lock of each key ('limit:NAME', 'job:ID', 'layer:ID'),
-- then read the room of those it got. The read is a statement of its own,
-- so (in this volatile function) its snapshot is taken after the locks: it
-- sees everything the claims that held them before committed. Keys whose
-- lock another claim holds are not returned; a key got whose limit, job or
-- layer is gone has no room (NULL).
CREATE FUNCTION masterd_claim_room(keys text[]) RETURNS TABLE (claim_key text, claim_room integer)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    got text[];
BEGIN
    SELECT array_agg(k) INTO got FROM unnest(keys) AS k
        WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0));
    IF got IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH g AS (SELECT k FROM unnest(got) AS k),
    r AS (
        SELECT 'limit:' || lim.name AS k, lim.max - coalesce((
            SELECT sum(l.n_assigned + l.n_running) FROM jobs j JOIN layers l ON l.job_id = j.id
            WHERE j.state IN ('running', 'paused') AND l.limits @> ARRAY[lim.name]), 0)::integer
            AS room
        FROM limits lim
        WHERE lim.name = ANY (ARRAY(SELECT substr(k, 7) FROM g WHERE k LIKE 'limit:%'))
        UNION ALL
        SELECT 'job:' || id, max_running - n_assigned - n_running FROM jobs
        WHERE id = ANY (ARRAY(SELECT substr(k, 5)::bigint FROM g WHERE k LIKE 'job:%'))
        UNION ALL
        SELECT 'layer:' || id, max_running - n_assigned - n_running FROM layers
        WHERE id = ANY (ARRAY(SELECT substr(k, 7)::bigint FROM g WHERE k LIKE 'layer:%'))
    )
    SELECT g.k, r.room FROM g LEFT JOIN r ON r.k = g.k;
END
$$;
