-- A task's status message: the latest `openjd_status` its current (or last)
-- attempt printed, sent by the agent as TaskUpdate.status (docs/talkback.md)
-- and shown as `status` in the task document. NULL when none was given; a
-- new attempt starts without one. Not indexed, so that writing it keeps the
-- task row's updates in place (see 0005_hot_job_counts.sql).

ALTER TABLE tasks ADD COLUMN status_message text;
