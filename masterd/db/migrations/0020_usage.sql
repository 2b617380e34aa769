-- What each attempt used (issue 17; docs/jobs.md, "Usage"), as its agent
-- measured it for the task's own process tree and sent with the final
-- report (talkback task_update.usage). NULL where the attempt reported
-- none (it never ran, or its agent does not measure). Not indexed: writing
-- them keeps the attempt's update in place.

ALTER TABLE task_attempts
    ADD COLUMN wall_s double precision,
    ADD COLUMN cpu_user_s double precision,
    ADD COLUMN cpu_system_s double precision,
    ADD COLUMN peak_rss_kb bigint,
    ADD COLUMN gpu_memory_mb integer;
