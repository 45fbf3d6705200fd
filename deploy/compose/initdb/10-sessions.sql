-- The compose stack's sample target: a `sessions` table with rows to delete. The postgres image
-- runs this once, when its data volume is empty (docker-entrypoint-initdb.d), as POSTGRES_USER in
-- POSTGRES_DB. reaper's own tables (reaper_jobs, reaper_audit) are created by the `migrate`
-- service, not here.
CREATE TABLE sessions (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Jobs filter on these columns: "erase user 42" and "sessions older than 30 days".
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_created_at ON sessions (created_at);

-- 100,000 sessions of 1,000 users, created over the last 90 days.
INSERT INTO sessions (user_id, created_at)
SELECT 1 + (i % 1000), now() - (i % 129600) * interval '1 minute'
FROM generate_series(1, 100000) AS i;

ANALYZE sessions;
