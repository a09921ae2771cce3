-- Warden store schema, PostgreSQL dialect. Keep equivalent to
-- ../sqlite/20260101000001_init.sql: same tables, columns, constraints and
-- indexes; only the spelling of types differs.
--
-- Money: BIGINT micro-dollars. Instants: BIGINT microseconds since the Unix
-- epoch, UTC. The audit payload is TEXT, not JSONB: the hash covers the exact
-- stored text, and JSONB would re-format it.

-- A granted launch. At most one live allocation per (door, team, name):
-- re-launching a live cluster reuses its row instead of counting twice.
CREATE TABLE allocations (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    door          TEXT    NOT NULL,
    team          TEXT    NOT NULL,
    user_name     TEXT,
    name          TEXT    NOT NULL,
    gpu_model     TEXT,
    gpus          BIGINT  NOT NULL CHECK (gpus >= 0),
    hourly_micros BIGINT  NOT NULL CHECK (hourly_micros >= 0),
    started_us    BIGINT  NOT NULL,
    ended_us      BIGINT,
    state         TEXT    NOT NULL CHECK (state IN ('live', 'ended')),
    CHECK ((state = 'live') = (ended_us IS NULL))
);

CREATE UNIQUE INDEX allocations_live_name
    ON allocations (door, team, name) WHERE state = 'live';
CREATE INDEX allocations_live_team
    ON allocations (team) WHERE state = 'live';

-- The hash-chained audit log (see src/audit.rs for the hash encoding).
CREATE TABLE audit (
    seq       BIGINT  PRIMARY KEY,
    at_us     BIGINT  NOT NULL,
    kind      TEXT    NOT NULL,
    payload   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

CREATE INDEX audit_at ON audit (at_us);

-- The chain head: the last record's seq and hash, updated in the same
-- transaction as every append. It serializes appends and lets `verify`
-- notice a truncated tail.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
