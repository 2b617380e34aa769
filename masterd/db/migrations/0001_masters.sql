-- Every master that has run against this database: each registers and
-- heartbeats here with its latest stats snapshot, so that any master can
-- describe the whole cluster. The instance tells runs of one name apart.
CREATE TABLE masters (
    name        text PRIMARY KEY,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    listen      text[] NOT NULL DEFAULT '{}',
    stats       jsonb NOT NULL DEFAULT '{}',
    instance    uuid
);
