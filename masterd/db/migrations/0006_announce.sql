-- One way to say "something changed" (docs/architecture.md): every NOTIFY
-- between masters goes through masterd_announce, from the master's code
-- (EventBus.announce) and from the task-count trigger alike, so that the
-- payload's envelope is written in one place. A NOTIFY is delivered at
-- commit, and only if the transaction commits.

CREATE FUNCTION masterd_announce(origin text, events json) RETURNS void
LANGUAGE sql
AS $$
    SELECT pg_notify('masterd', json_build_object('origin', origin, 'events', events)::text)
$$;

-- The count trigger's function, unchanged but for its announcement.
CREATE OR REPLACE FUNCTION masterd_apply_task_deltas(
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
        PERFORM masterd_announce('', json_build_array(json_build_array('work', released)));
    END IF;
END
$$;
