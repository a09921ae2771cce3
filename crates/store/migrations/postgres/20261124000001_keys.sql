-- Team API keys (see src/keys.rs), postgres dialect; keep equivalent to the
-- SQLite file of the same name.
--
-- A key is shown once, when created; only its hash is kept. `id` is the
-- key's public part (16 lowercase hex characters, also inside the key
-- itself), so authenticating is one primary-key lookup. `hash` is the
-- lowercase hex SHA-256 of the key (encoding in src/keys.rs). Instants are
-- BIGINT microseconds since the Unix epoch, UTC: `expires_us` NULL means
-- never; `revoked_us` is set once, when revoked. `rotated_to` names the
-- key that replaced this one (`warden keys rotate`).
CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY CHECK (length(id) = 16),
    hash       TEXT    NOT NULL CHECK (length(hash) = 64),
    name       TEXT,
    team       TEXT    NOT NULL,
    user_name  TEXT,
    created_us BIGINT  NOT NULL,
    expires_us BIGINT,
    revoked_us BIGINT,
    rotated_to TEXT    REFERENCES api_keys (id)
);

-- `warden keys list --team T`.
CREATE INDEX api_keys_team ON api_keys (team);
