-- Budgets (see src/spend.rs), sqlite dialect; keep equivalent to the
-- PostgreSQL file of the same name.
--
-- reserved_micros: what the allocation reserved against its team's budgets
-- when granted (the largest `reservation` of the request's budget limits;
-- 0 when it had none). While live, it holds whatever of that amount it has
-- not yet accrued, so launches in quick succession cannot all spend the same
-- headroom.
ALTER TABLE allocations
    ADD COLUMN reserved_micros BIGINT NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0);

-- Spend over a window reads a team's allocations by start.
CREATE INDEX allocations_team_started ON allocations (team, started_us);
