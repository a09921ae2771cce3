-- Settled placeholders (see src/settle.rs), PostgreSQL dialect; keep equivalent
-- to the SQLite file of the same name.
--
-- When a placeholder allocation is settled (renamed to the real name), the
-- name it was reserved under and the instant: a retried create finds the
-- allocation its earlier attempt became by them, after a reconciler settled
-- it. NULL for allocations never settled.
ALTER TABLE allocations ADD COLUMN settled_from TEXT;
ALTER TABLE allocations ADD COLUMN settled_us BIGINT;

CREATE INDEX allocations_settled
    ON allocations (door, team, settled_us) WHERE settled_us IS NOT NULL;
