-- Webhooks through a transactional outbox (docs/architecture.md, "Webhooks").
--
-- An event is written in the transaction of the change that caused it, by
-- masterd_webhook_event, with one delivery for each enabled webhook that
-- wants its kind: committed together with the change, or not at all. Any
-- master delivers: it leases a webhook (claimed_by, claimed_until) in a
-- short transaction with SKIP LOCKED, posts the webhook's oldest pending
-- delivery without holding a transaction open, and records the try. A
-- master that dies mid-delivery leaves a lease that expires, and another
-- master delivers the event.

CREATE TABLE webhooks (
    id              bigserial PRIMARY KEY,
    url             text NOT NULL,
    events          text[] NOT NULL,
    -- Kept as given: the HMAC of every delivery needs it. Never answered.
    secret          text NOT NULL,
    description     text NOT NULL DEFAULT '',
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    -- The lease: the master delivering this webhook's oldest pending
    -- delivery now, until when, and which claim (so that a master releases
    -- only its own).
    claimed_by      text,
    claimed_until   timestamptz,
    claim           uuid
);

CREATE TABLE webhook_events (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The master whose transaction recorded the event.
    master      text NOT NULL DEFAULT ''
);

CREATE TABLE webhook_deliveries (
    -- The idempotency key a receiver sees (X-Masterd-Delivery) on every try.
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id       bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    UNIQUE (webhook_id, event_id)
);
-- A webhook's head of line: its oldest pending delivery.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, event_id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_tries (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    -- The HTTP status, or NULL when none came (connection refused, timeout).
    status       integer,
    error        text,
    duration_ms  integer NOT NULL,
    master       text NOT NULL
);
CREATE INDEX webhook_tries_delivery ON webhook_tries (delivery_id, id);

-- Whether any enabled webhook wants this kind of event: what every caller
-- asks first, so that with no webhook an event costs one look at an empty
-- (or tiny) table and nothing is written.
CREATE FUNCTION masterd_webhook_wanted(kind text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (SELECT 1 FROM webhooks w WHERE w.enabled AND $1 = ANY (w.events))
$$;

-- Record an event and its deliveries, in the caller's transaction. The
-- master defaults to the connection's masterd.master setting (the pool of
-- each master sets it), which is how the triggers below know it.
CREATE FUNCTION masterd_webhook_event(kind text, body jsonb, master text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    event_id bigint;
BEGIN
    IF NOT masterd_webhook_wanted($1) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (kind, body, master)
        VALUES ($1, $2, coalesce($3, current_setting('masterd.master', true), ''))
        RETURNING id INTO event_id;
    INSERT INTO webhook_deliveries (webhook_id, event_id)
        SELECT w.id, event_id FROM webhooks w WHERE w.enabled AND $1 = ANY (w.events)
        ORDER BY w.id;
    RETURN event_id;
END
$$;

-- job.done, job.failed, job.canceled: a job's finished_at goes from NULL to
-- a time (masterd_apply_task_deltas sets it when the last task finishes).
-- The trigger names the column and has a WHEN clause, so the updates of a
-- job's counts on every task report never even call it.
CREATE FUNCTION masterd_webhook_job_finished() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    kind text := 'job.' || CASE NEW.state WHEN 'done' THEN 'done'
                                          WHEN 'failed' THEN 'failed' ELSE 'canceled' END;
BEGIN
    IF masterd_webhook_wanted(kind) THEN
        PERFORM masterd_webhook_event(kind, jsonb_build_object('job', jsonb_build_object(
            'id', NEW.id, 'href', '/api/v1/jobs/' || NEW.id, 'title', NEW.title,
            'owner', NEW.owner, 'state', NEW.state,
            'tasks', jsonb_build_object('total', NEW.n_total, 'done', NEW.n_done,
                                        'failed', NEW.n_failed, 'canceled', NEW.n_canceled))));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_webhook_finished AFTER UPDATE OF finished_at ON jobs
    FOR EACH ROW WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION masterd_webhook_job_finished();

-- task.failed: a task fails for good (its failures passed the job's
-- max_retries; a failed attempt with retries left goes back to queued).
-- A row trigger whose WHEN clause PostgreSQL evaluates per updated row,
-- without calling any function: a report that does not fail a task pays
-- for one comparison.
CREATE FUNCTION masterd_webhook_task_failed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF masterd_webhook_wanted('task.failed') THEN
        PERFORM masterd_webhook_event('task.failed', jsonb_build_object('task', jsonb_build_object(
            'id', NEW.id, 'href', '/api/v1/tasks/' || NEW.id, 'index', NEW.index,
            'job', jsonb_build_object('id', NEW.job_id, 'href', '/api/v1/jobs/' || NEW.job_id),
            'attempt', NEW.attempt, 'failures', NEW.failures, 'error', NEW.error,
            'exit_code', NEW.exit_code,
            'agent', CASE WHEN NEW.agent_id IS NULL THEN NULL ELSE jsonb_build_object(
                'id', NEW.agent_id, 'href', '/api/v1/agents/' || NEW.agent_id) END)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_webhook_failed AFTER UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.state = 'failed' AND OLD.state <> 'failed')
    EXECUTE FUNCTION masterd_webhook_task_failed();

-- master.down is said once per death: a master is announced when its
-- heartbeat is older than master.expire_s and it has not been announced
-- since it last heartbeat. Masters down before this migration are not
-- announced.
ALTER TABLE masters ADD COLUMN down_at timestamptz;
UPDATE masters SET down_at = now();
