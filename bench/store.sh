#!/usr/bin/env bash
# Store benchmark (issue 3): decisions/s of the SkyPilot door when every
# request is a NEW GPU launch that reserves an allocation against the team's
# quotas (GPUs, live clusters, $/hour, launches per user) and daily and
# monthly budgets, on SQLite and on PostgreSQL; and the same door with
# stateless rules only (`storage: none`) for comparison.
#
#   bench/store.sh            # all three, 10 s each after 3 s warm-up
#
# Environment: BENCH_MODES ["stateless sqlite postgres"], BENCH_DURATION [10],
# BENCH_WARMUP [3], BENCH_CONNECTIONS [32], BENCH_PG_URL
# [postgres://postgres@127.0.0.1:5432/warden_bench] (dropped and re-created),
# BENCH_SKIP_BUILD [0], BENCH_RATE [0] (1: also a launch-rate limit per
# user, a token bucket in the store), CARGO_TARGET_DIR [target].
# Prints a Markdown table; raw outputs in bench/results/store-*.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
MODES="${BENCH_MODES:-stateless sqlite postgres}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/warden_bench}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
RESULTS="$REPO_ROOT/bench/results"
PORT=18091
log() { printf 'bench-store: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
if ! command -v wrk >/dev/null 2>&1; then
  [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null || die "wrk is not installed; install wrk"
  log "installing wrk with apt-get"
  apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >&2
fi
mkdir -p "$RESULTS"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --bin warden >&2
fi
BIN="$TARGET_DIR/release/warden"
WORK="$(mktemp -d)"
PID=""
cleanup() { [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# The request template: fixture 07 (the API server's worker launching a
# cluster as user `root`) with an H100:1 task and a placeholder cluster name.
python3 - "$WORK/template.json" <<'PY'
import json, sys
raw = open("tests/fixtures/skypilot-0.14.1/07_launch_server_worker.json").read()
v = json.loads(json.loads(raw))
v["request_options"]["cluster_name"] = "WARDENCLUSTER"
v["task"] = "name: bench\nresources:\n  accelerators: H100:1\n"
open(sys.argv[1], "w").write(json.dumps(json.dumps(v)))
PY

write_config() { # write_config MODE FILE
  local storage
  case "$1" in
    stateless) storage="none" ;;
    sqlite) storage="sqlite://$WORK/bench.db" ;;
    postgres) storage="$PG_URL" ;;
  esac
  {
    echo "storage: $storage"
    echo "teams:"
    echo "  ml:"
    echo "    users: [root]"
    echo "    allowed_gpus: [H100]"
    echo "    max_gpus_per_launch: 8"
    if [[ "$1" != stateless ]]; then
      local rate=""
      if [[ "${BENCH_RATE:-0}" == 1 ]]; then
        rate=", max_launches_per_user: 1000000, launch_window_minutes: 1"
      fi
      echo "    quotas: {max_gpus: 100000000, max_gpus_by_model: {H100: 100000000}, max_live: 100000000, max_live_per_user: 100000000, max_live_hourly_usd: 1000000000$rate}"
      echo "    budgets: {daily_usd: 1000000000, monthly_usd: 10000000000, reservation_hours: 1}"
    fi
    echo "rules:"
    echo "  - name: spot-for-gpu"
    echo "    match: {resource: 'resource.gpus > 0'}"
    echo "    use_spot: true"
  } >"$2"
}

printf '| mode | req/s | p50 | p90 | p99 | non-2xx |\n|---|---:|---:|---:|---:|---:|\n'
for mode in $MODES; do
  if [[ "$mode" == postgres ]]; then
    admin="${PG_URL%/*}/postgres"
    db="${PG_URL##*/}"
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
    psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
  fi
  cfg="$WORK/$mode.yaml"
  write_config "$mode" "$cfg"
  WARDEN_LOG=warn "$BIN" serve --config "$cfg" --listen "127.0.0.1:$PORT" >"$RESULTS/store-$mode.server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "@$WORK/template.json" "http://127.0.0.1:$PORT/skypilot")"
  [[ "$code" == 200 ]] || die "$mode: a launch answered HTTP $code (see $RESULTS/store-$mode.server.log)"
  if [[ "$WARMUP" -gt 0 ]]; then
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/fresh_launch.lua \
      "http://127.0.0.1:$PORT/skypilot" -- "$WORK/template.json" "w$mode" >/dev/null 2>&1
  fi
  if [[ "$mode" == postgres ]]; then
    # What autovacuum does within a minute of a table's first rows: without
    # statistics the planner may pick the per-team index for the live-name
    # lookup (a cold-start artifact; see crates/store/examples/write_bench.rs).
    psql "$PG_URL" -qc "ANALYZE" >/dev/null
  fi
  out="$RESULTS/store-$mode.wrk.txt"
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency -s bench/fresh_launch.lua \
    "http://127.0.0.1:$PORT/skypilot" -- "$WORK/template.json" "m$mode" >"$out" 2>&1
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  f() { sed -n "s/^WRK_JSON .*\"$1\":\([0-9.]*\).*/\1/p" "$out"; }
  printf '| %s | %s | %.2f ms | %.2f ms | %.2f ms | %s |\n' "$mode" "$(f rps)" \
    "$(echo "$(f p50_us)/1000" | bc -l)" "$(echo "$(f p90_us)/1000" | bc -l)" \
    "$(echo "$(f p99_us)/1000" | bc -l)" "$(f non_2xx_3xx)"
done
