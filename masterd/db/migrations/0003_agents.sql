-- Agents (render nodes), what they report, and the logs of their tasks.

CREATE TABLE agents (
    id              uuid PRIMARY KEY,
    hostname        text NOT NULL,
    os              text,
    version         text,
    cpus            integer NOT NULL DEFAULT 0,
    ram_mb          integer NOT NULL DEFAULT 0,
    gpus            integer NOT NULL DEFAULT 0,
    -- Tags the agent reports, and tags an operator added.
    tags            text[] NOT NULL DEFAULT '{}',
    extra_tags      text[] NOT NULL DEFAULT '{}',
    software        jsonb NOT NULL DEFAULT '{}',
    -- The agent's own limits (hello, limits messages) and an operator's
    -- (PATCH); the lower of the two applies.
    max_tasks       integer NOT NULL DEFAULT 1,
    agent_limits    jsonb NOT NULL DEFAULT '{}',
    operator_limits jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    -- The master holding the agent's talkback connection, and that
    -- connection's id: a master writes only while its session is current,
    -- so a stale connection can never overwrite a newer one.
    master          text,
    session         uuid,
    connected_at    timestamptz,
    disconnected_at timestamptz,
    last_seen       timestamptz,
    usage           jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_offline ON agents (disconnected_at) WHERE session IS NULL;

CREATE TABLE agent_exceptions (
    id          bigserial PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    message     text NOT NULL,
    traceback   text
);
CREATE INDEX agent_exceptions_agent ON agent_exceptions (agent_id, id DESC);

-- A task attempt's log, stored as it arrives: one row per log message,
-- numbered from 0 by line.
CREATE TABLE task_logs (
    task_id     bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    first_line  integer NOT NULL,
    lines       text[] NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt, first_line)
);
