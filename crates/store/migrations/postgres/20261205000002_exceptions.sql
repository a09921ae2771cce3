-- Time-limited exceptions (issue 12; see src/exceptions.rs), postgres dialect;
-- keep equivalent to the SQLite file of the same name.
--
-- An exception lets `team` (or one `user_name` of it) go past one `rule`
-- from `granted_us` until `until_us`, or until `revoked_us`. `expired_us`
-- is set once, when Warden records that it ran out (`exception.expired`
-- in the audit chain). Instants are BIGINT microseconds since the Unix
-- epoch, UTC.
CREATE TABLE exceptions (
    id         BIGSERIAL PRIMARY KEY,
    team       TEXT    NOT NULL,
    user_name  TEXT,
    rule       TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    granted_by TEXT    NOT NULL,
    granted_us BIGINT  NOT NULL,
    until_us   BIGINT  NOT NULL CHECK (until_us > granted_us),
    revoked_us BIGINT,
    expired_us BIGINT
);

-- The active ones of a team, at every denial.
CREATE INDEX exceptions_team_until ON exceptions (team, until_us);
