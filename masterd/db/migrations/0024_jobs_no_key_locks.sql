-- The functions the task triggers run lock jobs FOR NO KEY UPDATE, not
-- FOR UPDATE. That is the lock their UPDATE of a job's counts takes anyway.
-- It does not conflict with the KEY SHARE lock that inserting a task
-- attempt takes on its job (the attempt's foreign key).
--
-- Under FOR UPDATE, a deadlock was possible between two masters' batches:
--   - master 1's claim inserted an attempt of job B and waited on master
--     2's batch, which held B's counts;
--   - master 2's claim waited the same way on master 1's batch, which held
--     job A.
-- PostgreSQL broke such a deadlock after a second by failing one of the
-- batches (docs/architecture.md, "Failure handling at the database").
--
-- Only the strength of the lock changes. Each function is redefined from
-- its own current definition. A deletion still takes the strongest lock.
DO $$
DECLARE
    f record;
    changed text[] := '{}';
BEGIN
    FOR f IN SELECT p.oid, p.proname FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema() AND p.proname LIKE 'masterd\_%'
               AND p.prosrc LIKE '%PERFORM 1 FROM jobs%ORDER BY id FOR UPDATE%'
    LOOP
        EXECUTE replace(pg_get_functiondef(f.oid), 'ORDER BY id FOR UPDATE',
                        'ORDER BY id FOR NO KEY UPDATE');
        changed := changed || f.proname::text;
    END LOOP;
    IF NOT changed @> ARRAY['masterd_apply_task_deltas', 'masterd_satisfy_whole',
                            'masterd_whole_failures', 'masterd_frame_dependencies'] THEN
        RAISE EXCEPTION 'unexpected functions: %', changed;
    END IF;
END
$$;
