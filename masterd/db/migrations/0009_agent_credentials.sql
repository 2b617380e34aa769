-- Every agent is itself (docs/talkback.md, "Threat model"): an agent's first
-- hello with an agent-role token enrolls its id, and the master hands it a
-- secret of its own in the welcome. Only the secret's SHA-256 digest is kept;
-- from then on a hello for that id must present the secret. NULL: not
-- enrolled (an agent from before this migration, or one whose credential an
-- admin reset), so the next hello with an agent token enrolls it.
ALTER TABLE agents
    ADD COLUMN credential_sha256 bytea CHECK (length(credential_sha256) = 32),
    ADD COLUMN enrolled_at timestamptz;
