-- Summaries that keep what a reservation's checks cost independent of how
-- many allocations are live or fall in a budget's period, postgres dialect;
-- keep equivalent to the SQLite file of the same name. Every transaction
-- that grants or ends an allocation updates them, under the team's lock
-- (see src/usage.rs and src/budget.rs). Their rows are updated in place
-- many times a second, so PostgreSQL leaves room on each page for the new
-- versions (fillfactor), which keeps the updates HOT: no index entry per
-- version, and dead versions pruned as pages are read.

-- Live allocations summed per (team, user, GPU model): everything a quota
-- counts. A group without live allocations has no row. NULL user or model
-- is a group of its own, hence the expression index instead of a key; rows
-- are updated by id.
CREATE TABLE live_usage (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team          TEXT   NOT NULL,
    user_name     TEXT,
    gpu_model     TEXT,
    gpus          BIGINT NOT NULL CHECK (gpus >= 0),
    live          BIGINT NOT NULL CHECK (live > 0),
    hourly_micros BIGINT NOT NULL CHECK (hourly_micros >= 0)
) WITH (fillfactor = 50);

CREATE UNIQUE INDEX live_usage_group ON live_usage (
    team,
    COALESCE(user_name, ''), (user_name IS NULL),
    COALESCE(gpu_model, ''), (gpu_model IS NULL)
);

INSERT INTO live_usage (team, user_name, gpu_model, gpus, live, hourly_micros)
SELECT team, user_name, gpu_model, SUM(gpus), COUNT(*), SUM(hourly_micros)
FROM allocations
WHERE state = 'live'
GROUP BY team, user_name, gpu_model;

-- held_until_us: when the allocation's reservation is used up, the first
-- instant at which hourly × (t - started) >= reserved:
-- started_us + ceil(reserved_micros × 3,600,000,000 / hourly_micros);
-- started_us when it reserved nothing; 9223372036854775807 when never
-- (a free allocation, or beyond the representable range). Written with
-- every new row. Rows from before this migration get it when their team's
-- budget state is first built (the product needs more than 64 bits, which
-- SQLite's SQL cannot compute exactly); until then it is NULL.
ALTER TABLE allocations ADD COLUMN held_until_us BIGINT;

-- Live allocations by when their reservations are used up: a budget's
-- state moves them from holding to accruing as time passes.
CREATE INDEX allocations_live_held ON allocations (team, held_until_us) WHERE state = 'live';
-- Ended allocations by end: a budget check at an instant before a recorded
-- end (clocks of replicas differ) corrects for them.
CREATE INDEX allocations_team_ended ON allocations (team, ended_us) WHERE ended_us IS NOT NULL;

-- Per team, what its budgets' states have in common. At swept_us, every
-- live allocation with held_until_us <= swept_us is "accruing" (it counts
-- what it cost), every other one "holding" (it counts its reservation);
-- accruing_hourly_micros sums the accruing ones' prices. No holding
-- allocation's reservation is used up before fresh_until_us. Every
-- accruing allocation's held_until_us and every ended allocation's
-- ended_us that is <= swept_us is also <= last_break_us. Created when the
-- team's first budget is checked.
CREATE TABLE budget_teams (
    team                   TEXT   PRIMARY KEY,
    swept_us               BIGINT NOT NULL,
    accruing_hourly_micros BIGINT NOT NULL CHECK (accruing_hourly_micros >= 0),
    fresh_until_us         BIGINT NOT NULL,
    last_break_us          BIGINT NOT NULL
) WITH (fillfactor = 50);

-- Per (team, budget period start): what the budget counts at the team's
-- swept_us (spend since from_us plus what live allocations hold), exactly,
-- in micro-dollars × 3,600,000,000: a decimal integer, as it needs more
-- than 64 bits. Computed from the allocations when a budget with this
-- start is first checked; the least recently checked are dropped beyond a
-- few per team (and computed again if needed).
CREATE TABLE budget_periods (
    team        TEXT   NOT NULL REFERENCES budget_teams (team),
    from_us     BIGINT NOT NULL,
    used        TEXT   NOT NULL,
    touched_us  BIGINT NOT NULL,
    PRIMARY KEY (team, from_us)
) WITH (fillfactor = 50);
