#!/usr/bin/env bash
# The dashboard's server time on a big ledger: 100,000 jobs and 10,000,000 audit rows in a
# PostgreSQL database (JOBS and AUDIT change the sizes). Fills a fresh database `reaper_ui_speed`
# on the test server, starts `reaper run` on it with the API on a free port, signs in and times
# every page 5 times (curl's time to the first byte of the answer, on loopback: the server's
# time), printing the median and the slowest of each. Takes a few minutes, most of it filling.
#
#   bash docs/dashboard-speed.sh                 # target/debug/reaper
#   REAPER_BIN=target/release/reaper bash docs/dashboard-speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PG="${REAPER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
JOBS="${JOBS:-100000}"
AUDIT="${AUDIT:-10000000}"
BIN="${REAPER_BIN:-target/debug/reaper}"
DB=reaper_ui_speed
URL="${PG%/*}/$DB"
TOKEN=speed-test-token-0123456789
PORT="${PORT:-18931}"
work="$(mktemp -d)"
daemon=""
cleanup() {
  [[ -n "$daemon" ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

psql -v ON_ERROR_STOP=1 -q "$PG" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql -v ON_ERROR_STOP=1 -q "$URL" -c "CREATE TABLE events (id bigserial PRIMARY KEY, tenant_id int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())" \
  -c "CREATE INDEX ON events (created_at)"
cat > "$work/reaper.toml" <<EOF
[database]
url = "$URL"

[queue]
backend = "sqlite"
url = "sqlite://$work/queue.db?mode=rwc"

[api]
listen = "127.0.0.1:$PORT"
token = "$TOKEN"

[targets.events]
table = "events"
primary_key = "id"
key_type = "int"

[targets.events.columns]
tenant_id = "int"
created_at = "timestamp"

[[retention]]
name = "old-events"
target = "events"
age_column = "created_at"
max_age = "30d"
schedule = "0 3 * * *"
EOF
"$BIN" --config "$work/reaper.toml" migrate >/dev/null

echo "filling: $JOBS jobs, $AUDIT audit rows"
started=$(date +%s)
# Ids sort like UUIDv7 (creation order). 90% done, 5% dead, 3% cancelled, 1% pending, 1% running;
# every 100th job a run of policy old-events.
psql -v ON_ERROR_STOP=1 -q "$URL" <<EOF
INSERT INTO reaper_jobs (id, idempotency_key, target, request, state, checkpoint, passes, rows_deleted,
  batches, attempts, max_attempts, lease_owner, last_error, created_at, updated_at, started_at,
  finished_at, locked_rows_skipped, policy)
SELECT id, id, 'events',
  '{"target":"events","filter":{"all":[{"column":"tenant_id","op":"eq","value":' || i || '}]},"requested_by":"svc-' || (i % 50) || '","reason":"speed"}',
  state, NULL, 1, 100000, 100, 1, 5,
  CASE WHEN state = 'running' THEN 'worker-' || (i % 4) END,
  CASE WHEN state = 'dead' THEN 'permanent: the table is gone' END,
  at, at, at, CASE WHEN state IN ('done', 'dead', 'cancelled') THEN at + interval '1 minute' END,
  false, CASE WHEN i % 100 = 0 THEN 'old-events' END
FROM (
  SELECT i, '0190' || lpad(to_hex(i), 28, '0') AS id,
    now() - (($JOBS - i) * interval '1 minute') AS at,
    CASE WHEN i % 100 < 90 THEN 'done' WHEN i % 100 < 95 THEN 'dead' WHEN i % 100 < 98 THEN 'cancelled'
         WHEN i % 100 = 98 THEN 'pending' ELSE 'running' END AS state
  FROM generate_series(1, $JOBS) AS i
) AS jobs;
INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, first_key, last_key, deleted_keys,
  requested_by, reason, created_at)
SELECT '0190' || lpad(to_hex(i % $JOBS + 1), 28, '0'), i / $JOBS + 1, 'events', 'hard', 1000,
  (i * 1000)::text, (i * 1000 + 999)::text, '[' || (i * 1000) || ',' || (i * 1000 + 999) || ']',
  'svc', 'speed', now() - ((($AUDIT - i)::float / $AUDIT) * interval '100 days')
FROM generate_series(0::bigint, $AUDIT - 1) AS i;
VACUUM ANALYZE reaper_jobs;
VACUUM ANALYZE reaper_audit;
EOF
echo "filled in $(( $(date +%s) - started )) s"

"$BIN" --config "$work/reaper.toml" run >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
jar="$work/cookies"
curl -sf -c "$jar" -o /dev/null -d "name=speed&token=$TOKEN" "http://127.0.0.1:$PORT/ui/login"

busy_job="0190$(printf '%028x' 50)"      # 100 audit rows, like every job
ids=$(psql -v ON_ERROR_STOP=1 -Atq "$URL" -c "SELECT string_agg(id, ',') FROM (SELECT id FROM reaper_jobs ORDER BY id DESC LIMIT 50) AS page")
printf '%-48s %10s %10s\n' page "median ms" "max ms"
for page in /ui /ui/jobs "/ui/jobs?state=dead" "/ui/jobs?state=paused" "/ui/jobs?target=events&before=0190$(printf '%028x' 5000)" \
    "/ui/jobs?requested_by=svc-7" "/ui/jobs?requested_by=svc-7&state=paused" "/ui/jobs/$busy_job" "/ui/jobs/$busy_job?audit_after=50" "/ui/jobs/$busy_job/series" \
    "/ui/live?ids=$ids" /ui/policies /ui/dead; do
  times=()
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -b "$jar" -o /dev/null -w '%{http_code} %{time_starttransfer}' "http://127.0.0.1:$PORT$page")")
  done
  printf '%s\n' "${times[@]}" | awk -v page="${page:0:48}" '
    $1 != 200 { bad = $1 } { ms[NR] = $2 * 1000 }
    END { n = asort(ms); if (bad) { printf "%-48s answered %s\n", page, bad; exit 1 }
          printf "%-48s %10.1f %10.1f\n", page, ms[int((n + 1) / 2)], ms[n] }'
done
