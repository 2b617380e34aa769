-- Accounts: tokens kept in the database (only their SHA-256 digests), and
-- the audit trail, written in the transaction of every change it records
-- (docs/architecture.md, "Accounts and the audit trail").

CREATE TABLE tokens (
    id          bigserial PRIMARY KEY,
    user_name   text NOT NULL,
    role        text NOT NULL
                CHECK (role IN ('viewer', 'user', 'operator', 'admin', 'agent')),
    sha256      bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    revoked_by  text
);
CREATE INDEX tokens_user ON tokens (user_name, id);

CREATE TABLE audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    role        text NOT NULL,
    -- NULL for a token of the configuration file.
    token_id    bigint,
    action      text NOT NULL,
    resource    text NOT NULL,
    changes     jsonb NOT NULL DEFAULT '{}',
    address     text,
    master      text NOT NULL
);
CREATE INDEX audit_at ON audit (at, id);
CREATE INDEX audit_actor ON audit (actor, id);
CREATE INDEX audit_resource ON audit (resource, id);
CREATE INDEX audit_action ON audit (action, id);
