-- Key roles (issue 12), postgres dialect; keep equivalent to the other file of
-- the same name. A key acts in its team with one of the five roles of
-- warden_core::access (admin, team-lead, ml-engineer, inference-operator,
-- viewer). Keys made before roles existed could launch and manage the
-- team's instances: they become `ml-engineer` keys, the default role of
-- `warden keys create`.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'ml-engineer'
    CHECK (role IN ('admin', 'team-lead', 'ml-engineer', 'inference-operator', 'viewer'));
