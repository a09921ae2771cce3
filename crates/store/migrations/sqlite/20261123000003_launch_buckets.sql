-- Launch rate limits (see src/launches.rs), sqlite dialect; keep equivalent
-- to the PostgreSQL file of the same name.
--
-- One token bucket per (team, scope, user for a per-user limit, max, per):
-- user_name is NULL for a per-team bucket, and for the per-user bucket that
-- launches without a user share. The bucket is full again at
-- full_at_us + full_at_frac / max_launches (µs since the epoch, exactly);
-- at an instant t before that it holds
-- max_launches - (full_at - t) × max_launches / per_us launches. A bucket
-- without a row is full. Read and written under the team's lock.
CREATE TABLE launch_buckets (
    id           INTEGER PRIMARY KEY,
    team         TEXT   NOT NULL,
    scope        TEXT   NOT NULL CHECK (scope IN ('team', 'user')),
    user_name    TEXT,
    max_launches BIGINT NOT NULL CHECK (max_launches > 0),
    per_us       BIGINT NOT NULL CHECK (per_us > 0),
    full_at_us   BIGINT NOT NULL,
    full_at_frac BIGINT NOT NULL CHECK (full_at_frac >= 0 AND full_at_frac < max_launches),
    CHECK (scope = 'user' OR user_name IS NULL)
);

CREATE UNIQUE INDEX launch_buckets_key ON launch_buckets (
    team, scope, COALESCE(user_name, ''), (user_name IS NULL), max_launches, per_us
);
