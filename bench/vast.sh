#!/usr/bin/env bash
# Vast door benchmark: what the proxy costs. The same requests, from the
# same load generator (wrk), go
#
#   direct   to `warden sim` (the marketplace simulator) with its key, and
#   warden   to `warden serve`'s Vast door with a team key, which
#            authenticates the key (a store read), applies the team's
#            constraints, calls the same simulator and filters the answer.
#
# Requests: `search offers` (POST /api/v0/bundles/ with the CLI's default
# query) and `show instances` (GET /api/v1/instances/ as the CLI pages it,
# with 5 instances of the team). The team has no constraints unless
# BENCH_TEAM=constrained (RTX GPUs at <= $1.50/h), so both paths answer the
# same offers. Prints a Markdown table (req/s, p50, p99 per path and
# concurrency) and the added latency. Raw outputs go to bench/results/vast/.
#
# Environment (defaults in brackets):
#   BENCH_DURATION     seconds of measured load per run [10]
#   BENCH_WARMUP       seconds of unmeasured load before it [2]
#   BENCH_CONCURRENCY  wrk connection counts, one run each ["1 8"]
#   BENCH_TEAM         open | constrained [open]
#   BENCH_SKIP_BUILD   1: use the release binary already built [0]
#   CARGO_TARGET_DIR   cargo's target dir [target]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 8}"
TEAM="${BENCH_TEAM:-open}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
RESULTS="$REPO_ROOT/bench/results/vast"
SIM_PORT=18091
WARDEN_PORT=18092
HOST=127.0.0.1

log() { printf 'bench/vast: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$TEAM" == open || "$TEAM" == constrained ]] || die "BENCH_TEAM must be open or constrained"
command -v wrk >/dev/null 2>&1 || die "wrk is not installed (bench/run.sh installs it with apt-get)"
command -v curl >/dev/null 2>&1 || die "curl is required"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building warden (release)"
  cargo build --release --bin warden >&2
fi
WARDEN="$TARGET_DIR/release/warden"
[[ -x "$WARDEN" ]] || die "missing $WARDEN"

mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.txt "$RESULTS"/*.log
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # PORT NAME
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://$HOST:$1/" && return 0
    sleep 0.1
  done
  die "$2 did not start on port $1 (see $RESULTS/$2.log)"
}

SIM_KEY="bench-sim-key-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
"$WARDEN" sim --listen "$HOST:$SIM_PORT" --api-key "$SIM_KEY" 2>"$RESULTS/sim.log" &
PIDS+=("$!")
wait_port "$SIM_PORT" sim

cat >"$WORK/warden.yaml" <<YAML
storage: sqlite://$WORK/warden.db
teams:
  open: {}
  constrained:
    allowed_gpus: [RTX_4090, RTX_3090]
    max_hourly_usd: 1.5
vast:
  upstream_url: http://$HOST:$SIM_PORT
  api_key_env: BENCH_SIM_KEY
YAML
TEAM_KEY="$("$WARDEN" keys create --config "$WORK/warden.yaml" --team "$TEAM" 2>/dev/null)"
BENCH_SIM_KEY="$SIM_KEY" WARDEN_LOG=info "$WARDEN" serve --config "$WORK/warden.yaml" \
  --listen "$HOST:$WARDEN_PORT" 2>"$RESULTS/warden.log" &
PIDS+=("$!")
wait_port "$WARDEN_PORT" warden

# The CLI's default `search offers` query, and its `show instances` query.
printf '%s' '{"verified": {"eq": true}, "external": {"eq": false}, "rentable": {"eq": true}, "order": [["score", "desc"]], "type": "on-demand", "allocated_storage": 5.0}' >"$WORK/search.json"
LIST_QUERY='select_filters=%7B%7D&order_by=%5B%7B%22col%22%3A+%22id%22%2C+%22dir%22%3A+%22asc%22%7D%5D&limit=25'

# Five instances of the team, created through Warden (so it owns them).
offers="$(curl -sf -X POST -H "Authorization: Bearer $TEAM_KEY" -H 'Content-Type: application/json' \
  --data-binary @"$WORK/search.json" "http://$HOST:$WARDEN_PORT/vast/api/v0/bundles/")"
ids="$(printf '%s' "$offers" | grep -o '"ask_contract_id":[0-9]*' | head -n 5 | cut -d: -f2)"
[[ "$(printf '%s\n' "$ids" | grep -c .)" -eq 5 ]] || die "fewer than 5 offers to rent"
for id in $ids; do
  curl -sf -X PUT -H "Authorization: Bearer $TEAM_KEY" -H 'Content-Type: application/json' \
    --data '{"client_id": "me", "image": "pytorch/pytorch", "env": {}, "price": null, "disk": 10.0, "runtype": "ssh"}' \
    "http://$HOST:$WARDEN_PORT/vast/api/v0/asks/$id/" >/dev/null || die "create of offer $id failed"
done
n="$(curl -sf -H "Authorization: Bearer $TEAM_KEY" "http://$HOST:$WARDEN_PORT/vast/api/v1/instances/?$LIST_QUERY" | grep -o '"total_instances":[0-9]*' | cut -d: -f2)"
[[ "$n" == 5 ]] || die "Warden lists $n instances, not 5"

json_field() { sed -n 's/^WRK_JSON //p' "$2" | tr ',{}' '\n\n\n' | sed -n "s/^\"$1\"://p"; }

run() { # NAME PORT PATH METHOD KEY [BODY]
  local name="$1" url="http://$HOST:$2$3" method="$4" key="$5" body="${6:-}" c
  for c in $CONCURRENCY; do
    local out="$RESULTS/$name.c$c.txt"
    wrk -t1 -c"$c" -d"${WARMUP}s" --timeout 5s -s bench/vast.lua "$url" -- "$method" "$key" $body >/dev/null 2>&1 || true
    wrk -t1 -c"$c" -d"${DURATION}s" --timeout 5s --latency -s bench/vast.lua "$url" -- "$method" "$key" $body >"$out" 2>&1 \
      || die "wrk failed (see $out)"
    local bad
    bad="$(( $(json_field non_2xx_3xx "$out") + $(json_field socket_errors "$out") ))"
    [[ "$bad" -eq 0 ]] || die "$name c=$c: $bad failed requests (see $out)"
    log "$name c=$c: $(json_field rps "$out") req/s, p50 $(json_field p50_us "$out") us, p99 $(json_field p99_us "$out") us"
  done
}

run search.direct "$SIM_PORT" /api/v0/bundles/ POST "$SIM_KEY" "$WORK/search.json"
run search.warden "$WARDEN_PORT" /vast/api/v0/bundles/ POST "$TEAM_KEY" "$WORK/search.json"
run list.direct "$SIM_PORT" "/api/v1/instances/?$LIST_QUERY" GET "$SIM_KEY"
run list.warden "$WARDEN_PORT" "/vast/api/v1/instances/?$LIST_QUERY" GET "$TEAM_KEY"

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
{
  echo "### Vast door overhead ($(date -u +%Y-%m-%d), $(nproc) cpus, team \`$TEAM\`, git $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "\`wrk -t1 -cN -d${DURATION}s --latency\` after ${WARMUP}s of warm-up; release build; simulator and Warden on this machine."
  echo
  echo "| request | path | conns | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for req in search list; do
    label="search offers"; [[ "$req" == list ]] && label="show instances"
    for c in $CONCURRENCY; do
      d="$RESULTS/$req.direct.c$c.txt"; w="$RESULTS/$req.warden.c$c.txt"
      echo "| $label | direct (sim) | $c | $(json_field rps "$d") | $(ms "$(json_field p50_us "$d")") | $(ms "$(json_field p99_us "$d")") | | |"
      echo "| $label | via Warden | $c | $(json_field rps "$w") | $(ms "$(json_field p50_us "$w")") | $(ms "$(json_field p99_us "$w")") | $(ms $(( $(json_field p50_us "$w") - $(json_field p50_us "$d") ))) | $(ms $(( $(json_field p99_us "$w") - $(json_field p99_us "$d") ))) |"
    done
  done
} | tee "$RESULTS/summary.md"
