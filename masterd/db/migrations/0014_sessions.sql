-- Sessions of the dashboard (docs/http-api.md, "Sessions"): a cookie's
-- secret exchanged for a token at POST /api/v1/session. Only the secret's
-- SHA-256 is stored, as for tokens; any master serves any session. A
-- session is only as good as its token: one of the database (token_id,
-- read again at each lookup: revoked or expired ends the session), or one
-- of the configuration file (token_sha256: gone from the file ends it).

CREATE TABLE sessions (
    id              bigserial PRIMARY KEY,
    sha256          bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    csrf            text NOT NULL,
    user_name       text NOT NULL,
    role            text NOT NULL,
    token_id        bigint REFERENCES tokens (id) ON DELETE CASCADE,
    token_sha256    bytea CHECK (length(token_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    address         text,
    CHECK ((token_id IS NULL) <> (token_sha256 IS NULL))
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_token ON sessions (token_id) WHERE token_id IS NOT NULL;
