-- Where each master runs: a master restarted after a kill -9 finds its own
-- previous run in its row (same host, a process that is gone) and takes the
-- name over without the warning meant for two live masters sharing a name.
ALTER TABLE masters ADD COLUMN host text, ADD COLUMN pid integer;
