-- Each master's latest stats snapshot, stored with its heartbeat, so that
-- any master can describe the whole cluster; and which instance of a name
-- is the live one.
ALTER TABLE masters
    ADD COLUMN stats jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN instance uuid;
