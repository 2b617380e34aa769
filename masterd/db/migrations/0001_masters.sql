-- Every master that has run against this database. Later work registers and
-- heartbeats here so that any master can describe the whole cluster.
CREATE TABLE masters (
    name        text PRIMARY KEY,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    listen      text[] NOT NULL DEFAULT '{}'
);
