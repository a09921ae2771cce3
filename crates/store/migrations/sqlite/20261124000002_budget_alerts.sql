-- Budget alerts (see src/alerts.rs); keep equivalent in both dialects.
--
-- One row per soft threshold crossed: team, period kind ('day' or 'month'),
-- the period's first instant, and the threshold in percent of the budget.
-- The primary key makes each alert fire once per period per threshold, even
-- with several replicas checking at the same moment.
CREATE TABLE budget_alerts (
    team          TEXT   NOT NULL,
    period        TEXT   NOT NULL CHECK (period IN ('day', 'month')),
    period_start  BIGINT NOT NULL,
    percent       BIGINT NOT NULL CHECK (percent > 0),
    at_us         BIGINT NOT NULL,
    spend_micros  BIGINT NOT NULL,
    budget_micros BIGINT NOT NULL,
    PRIMARY KEY (team, period, period_start, percent)
);
