#!/usr/bin/env bash
# Warden benchmark: one run, one machine, one load generator (wrk), three
# servers answering SkyPilot 0.14.1's RESTful admin-policy POST:
#
#   warden      target/release/warden serve --config bench/policy.yaml
#   ceiling     bench/ceiling: bare axum answering a fixed body (no parsing)
#   fastapi-w1  bench/fastapi_policy_server.py on uvicorn, 1 worker process
#   fastapi-w2  the same with --workers 2
#
# Every server gets the exact bytes of fixture 01 (sky launch, H100:8) from
# the same wrk command line; the script prints a Markdown table (req/s, p50,
# p99) and the ratios Warden/FastAPI (best FastAPI run) and Warden/ceiling.
# Raw outputs go to bench/results/ (gitignored). See bench/README.md.
#
# All traffic goes to 127.0.0.1; every wait and every load run is bounded.
#
# Environment (defaults in brackets):
#   BENCH_SERVERS      servers to run, in order ["ceiling warden fastapi-w1 fastapi-w2"]
#   BENCH_DURATION     seconds of measured load per server [10]
#   BENCH_WARMUP       seconds of unmeasured load before it [3]
#   BENCH_CONNECTIONS  wrk connections [32]
#   BENCH_THREADS      wrk threads [1]
#   BENCH_ROUNDS       rounds over all servers; the table shows each server's
#                      median-throughput round [3]
#   BENCH_FIXTURE      request body [tests/fixtures/skypilot-0.14.1/01_gpu_h100x8_sky_launch_client.json]
#   BENCH_RESULTS      output directory [bench/results]
#   BENCH_SKIP_BUILD   1: use the binaries already built [0]
#   BENCH_ENFORCE      1: exit 1 when a target is missed [0]
#   BENCH_PYTHON       python with skypilot+fastapi+uvicorn; skips the venv setup
#   WARDEN_VENV        venv made by scripts/setup-venv.sh [~/.cache/warden/venv]
#   CARGO_TARGET_DIR   cargo's target dir [target]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

SERVERS="${BENCH_SERVERS:-ceiling warden fastapi-w1 fastapi-w2}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-1}"
ROUNDS="${BENCH_ROUNDS:-3}"
FIXTURE="${BENCH_FIXTURE:-$REPO_ROOT/tests/fixtures/skypilot-0.14.1/01_gpu_h100x8_sky_launch_client.json}"
RESULTS="${BENCH_RESULTS:-$REPO_ROOT/bench/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
HOST=127.0.0.1
READY_TIMEOUT=90 # seconds a server may take to answer /healthz

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

server_port() {
  case "$1" in
    warden) echo 18081 ;;
    ceiling) echo 18082 ;;
    fastapi-w1) echo 18083 ;;
    fastapi-w2) echo 18084 ;;
    *) die "unknown server '$1' (known: warden ceiling fastapi-w1 fastapi-w2)" ;;
  esac
}

server_label() {
  case "$1" in
    warden) echo "Warden (axum, door + policy)" ;;
    ceiling) echo "ceiling (bare axum, fixed body)" ;;
    fastapi-w1) echo "FastAPI + sky.AdminPolicy (uvicorn, 1 worker)" ;;
    fastapi-w2) echo "FastAPI + sky.AdminPolicy (uvicorn, 2 workers)" ;;
  esac
}

wants() { [[ " $SERVERS " == *" $1 "* ]]; }
wants_fastapi() { wants fastapi-w1 || wants fastapi-w2; }

for s in $SERVERS; do server_port "$s" >/dev/null; done
[[ -f "$FIXTURE" ]] || die "fixture not found: $FIXTURE (set BENCH_FIXTURE)"
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 && "$DURATION" -le 600 ]] || die "BENCH_DURATION must be 1..600"
[[ "$WARMUP" =~ ^[0-9]+$ && "$WARMUP" -le 600 ]] || die "BENCH_WARMUP must be 0..600"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 && "$ROUNDS" -le 20 ]] || die "BENCH_ROUNDS must be 1..20"

# ---------------------------------------------------------------- wrk
if ! command -v wrk >/dev/null 2>&1; then
  if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "wrk is not installed and apt-get is unavailable; install wrk"
  fi
  log "installing wrk with apt-get"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >&2
fi
command -v curl >/dev/null 2>&1 || die "curl is required"

# ---------------------------------------------------------------- build
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  if wants warden; then
    log "building warden (release)"
    cargo build --release --bin warden >&2
  fi
  if wants ceiling; then
    log "building warden-bench-ceiling (release)"
    cargo build --release -p warden-bench-ceiling >&2
  fi
fi
WARDEN_BIN="$TARGET_DIR/release/warden"
CEILING_BIN="$TARGET_DIR/release/warden-bench-ceiling"
if wants warden; then [[ -x "$WARDEN_BIN" ]] || die "missing $WARDEN_BIN"; fi
if wants ceiling; then [[ -x "$CEILING_BIN" ]] || die "missing $CEILING_BIN"; fi

# ---------------------------------------------------------------- python
PY=""
if wants_fastapi; then
  if [[ -n "${BENCH_PYTHON:-}" ]]; then
    PY="$BENCH_PYTHON"
  elif [[ -x "$REPO_ROOT/scripts/setup-venv.sh" || -f "$REPO_ROOT/scripts/setup-venv.sh" ]]; then
    PY="$(bash "$REPO_ROOT/scripts/setup-venv.sh" | tail -n 1)"
  else
    PY="${WARDEN_VENV:-$HOME/.cache/warden/venv}/bin/python"
  fi
  [[ -x "$PY" ]] || die "python not found: $PY"
  "$PY" -c 'import sky, fastapi, uvicorn' \
    || die "$PY lacks skypilot/fastapi/uvicorn (skypilot==0.14.1 brings fastapi and uvicorn[standard])"
fi

# ---------------------------------------------------------------- servers
mkdir -p "$RESULTS"
# Drop the previous run's outputs so the summary only reads this run's.
rm -f "$RESULTS"/*.wrk.txt "$RESULTS"/*.warmup.txt "$RESULTS"/*.server.log \
  "$RESULTS"/*.response.json "$RESULTS"/summary.md "$RESULTS"/env.txt
SERVER_PID=""

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  local pid="$SERVER_PID"
  SERVER_PID=""
  # The server was started with setsid, so its pid is its process group:
  # this also stops uvicorn's worker processes.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "server $pid did not stop in 10 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'exit 130' INT TERM

start_server() {
  local name="$1" port="$2" logf="$3"
  case "$name" in
    warden)
      setsid "$WARDEN_BIN" serve --config bench/policy.yaml --listen "$HOST:$port" >"$logf" 2>&1 &
      ;;
    ceiling)
      setsid "$CEILING_BIN" --listen "$HOST:$port" >"$logf" 2>&1 &
      ;;
    fastapi-w1)
      setsid "$PY" bench/fastapi_policy_server.py --host "$HOST" --port "$port" --workers 1 >"$logf" 2>&1 &
      ;;
    fastapi-w2)
      setsid "$PY" bench/fastapi_policy_server.py --host "$HOST" --port "$port" --workers 2 >"$logf" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
}

wait_ready() {
  local name="$1" port="$2" deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if curl -sf -m 1 -o /dev/null "http://$HOST:$port/healthz"; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited before answering /healthz (see its log)"
    sleep 0.2
  done
  die "$name did not answer /healthz within ${READY_TIMEOUT}s"
}

# One POST of the fixture; the answer must be 200 and mention use_spot.
check_answer() {
  local name="$1" port="$2" out="$3" code
  code="$(curl -s -m 10 -o "$out" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' --data-binary "@$FIXTURE" \
    "http://$HOST:$port/skypilot")" || die "$name: POST /skypilot failed"
  [[ "$code" == 200 ]] || die "$name: POST /skypilot answered HTTP $code (body in $out)"
  grep -q 'use_spot' "$out" || die "$name: answer lacks use_spot (body in $out)"
}

run_wrk() {
  local port="$1" secs="$2" out="$3"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout 5s --latency \
    -s bench/post_fixture.lua "http://$HOST:$port/skypilot" -- "$FIXTURE" >"$out" 2>&1 \
    || die "wrk failed (see $out)"
}

json_field() { # json_field FIELD FILE
  sed -n "s/^WRK_JSON .*\"$1\":\([0-9.]*\).*/\1/p" "$2" | tail -n 1
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "host: $(uname -srm), $(nproc) cpus"
  echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
  echo "wrk: $(wrk -v 2>&1 | head -n 1)"
  echo "load: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s (warm-up ${WARMUP}s) --latency -s bench/post_fixture.lua; rounds: $ROUNDS"
  echo "fixture: $FIXTURE ($(wc -c <"$FIXTURE") bytes)"
  if [[ -n "$PY" ]]; then
    echo "python: $("$PY" -c 'import sys, sky, fastapi, uvicorn; print(sys.version.split()[0], "skypilot", sky.__version__, "fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)')"
  fi
} >"$RESULTS/env.txt"

bench_one() { # bench_one NAME ROUND
  local name="$1" round="$2" port stem
  port="$(server_port "$name")"
  stem="$RESULTS/$name.r$round"
  if curl -s -m 1 -o /dev/null "http://$HOST:$port/" 2>/dev/null; then
    die "something already listens on $HOST:$port; stop it first"
  fi
  log "$name (round $round/$ROUNDS): starting on $HOST:$port"
  start_server "$name" "$port" "$stem.server.log"
  wait_ready "$name" "$port"
  check_answer "$name" "$port" "$stem.response.json"
  if ((WARMUP > 0)); then
    log "$name: warm-up ${WARMUP}s"
    run_wrk "$port" "$WARMUP" "$stem.warmup.txt"
  fi
  log "$name: measuring ${DURATION}s at $CONNECTIONS connections"
  run_wrk "$port" "$DURATION" "$stem.wrk.txt"
  stop_server
  grep -q '^WRK_JSON ' "$stem.wrk.txt" || die "$name: no WRK_JSON line in $stem.wrk.txt"
  log "$name: $(json_field rps "$stem.wrk.txt") req/s, p50 $(json_field p50_us "$stem.wrk.txt") us, p99 $(json_field p99_us "$stem.wrk.txt") us"
}

# Rounds interleave the servers (A B C, A B C, ...) so slow drifts in the
# machine's speed hit every server alike.
for ((round = 1; round <= ROUNDS; round++)); do
  for name in $SERVERS; do
    bench_one "$name" "$round"
  done
done

# The wrk output of NAME's median-throughput round (the upper median for an
# even count).
median_file() {
  local name="$1" f
  for f in "$RESULTS/$name".r*.wrk.txt; do
    printf '%s %s\n' "$(json_field rps "$f")" "$f"
  done | sort -n -k1,1 | awk '{ f[NR] = $2 } END { print f[int(NR / 2) + 1] }'
}
all_rps() { # all rounds' req/s of NAME, rounded, in round order
  local name="$1" round out=""
  for ((round = 1; round <= ROUNDS; round++)); do
    out+="$(printf '%.0f' "$(json_field rps "$RESULTS/$name.r$round.wrk.txt")") "
  done
  echo "${out% }"
}
declare -A MED
for name in $SERVERS; do MED[$name]="$(median_file "$name")"; done

# ---------------------------------------------------------------- report
fmt_ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

summary="$RESULTS/summary.md"
failed=0 # non-2xx answers or socket errors: always fails the run
missed=0 # a target missed: fails the run only with BENCH_ENFORCE=1
{
  echo "### Warden benchmark"
  echo
  echo "\`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s\` (after a ${WARMUP}s warm-up), body: \`$(basename "$FIXTURE")\`; $(nproc) cpus; $(date -u +%Y-%m-%d)"
  echo
  if ((ROUNDS > 1)); then
    echo "$ROUNDS rounds; each row is the server's median-throughput round."
    echo
  fi
  echo "| server | req/s | p50 | p99 | non-2xx | socket errors | req/s, every round |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
  for name in $SERVERS; do
    f="${MED[$name]}"
    printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$(server_label "$name")" \
      "$(json_field rps "$f")" "$(fmt_ms "$(json_field p50_us "$f")")" \
      "$(fmt_ms "$(json_field p99_us "$f")")" "$(json_field non_2xx_3xx "$f")" \
      "$(json_field socket_errors "$f")" "$(all_rps "$name")"
  done
} >"$summary"

for f in "$RESULTS"/*.r*.wrk.txt; do
  if [[ "$(json_field non_2xx_3xx "$f")" != 0 || "$(json_field socket_errors "$f")" != 0 ]]; then
    log "$(basename "$f"): had non-2xx answers or socket errors"
    failed=1
  fi
done

best_fa="" best_fa_rps=0
for name in fastapi-w1 fastapi-w2; do
  wants "$name" || continue
  r="$(json_field rps "${MED[$name]}")"
  if [[ -z "$best_fa" ]] || ge "$r" "$best_fa_rps"; then
    best_fa="$name" best_fa_rps="$r"
  fi
done

{
  echo
  if wants warden; then
    w_rps="$(json_field rps "${MED[warden]}")"
    # The 100x target is judged against one uvicorn worker: the way
    # SkyPilot's example policy server runs (`uvicorn.run(app)`), which the
    # issue names as the baseline. Two workers are reported beside it.
    if wants fastapi-w1; then
      r="$(ratio "$w_rps" "$(json_field rps "${MED[fastapi-w1]}")")"
      if ge "$r" 100; then verdict="met"; else verdict="MISSED"; missed=1; fi
      echo "- Warden / FastAPI ($(server_label fastapi-w1), as SkyPilot's example server runs): **${r}x** (target >= 100x: $verdict)"
    fi
    if wants fastapi-w2; then
      r="$(ratio "$w_rps" "$(json_field rps "${MED[fastapi-w2]}")")"
      echo "- Warden / FastAPI ($(server_label fastapi-w2), one worker per core): **${r}x** (no target; reported for comparison)"
    fi
    if wants ceiling; then
      c_rps="$(json_field rps "${MED[ceiling]}")"
      r="$(ratio "$w_rps" "$c_rps")"
      pct="$(awk -v r="$r" 'BEGIN { printf "%.1f%%", r * 100 }')"
      if ge "$r" 0.5; then verdict="met"; else verdict="MISSED"; missed=1; fi
      echo "- Warden / ceiling: **${pct}** (target >= 50%: $verdict)"
      if ((ROUNDS > 1)); then
        # Each round runs the two back to back, so its ratio is the least
        # touched by the machine's drifts (a shared VM's speed wanders).
        paired="" list=""
        for ((round = 1; round <= ROUNDS; round++)); do
          p="$(ratio "$(json_field rps "$RESULTS/warden.r$round.wrk.txt")" \
            "$(json_field rps "$RESULTS/ceiling.r$round.wrk.txt")")"
          paired+="$p"$'\n'
          list+="$(awk -v r="$p" 'BEGIN { printf "%.1f%%", r * 100 }') "
        done
        med="$(printf '%s' "$paired" | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f%%", v[int((NR + 1) / 2)] * 100 }')"
        echo "- Warden / ceiling, round by round: ${list% } (median ${med})"
      fi
    fi
  else
    if [[ -n "$best_fa" ]] && wants ceiling; then
      c_rps="$(json_field rps "${MED[ceiling]}")"
      echo "- (no Warden run) ceiling / FastAPI ($(server_label "$best_fa")): $(ratio "$c_rps" "$best_fa_rps")x"
    fi
  fi
  echo
  echo "Raw wrk output, server logs and answers: \`bench/results/\`."
} >>"$summary"

cat "$summary"

if ((failed)); then
  log "failed: some runs had non-2xx answers or socket errors"
  exit 1
fi
if ((missed)) && [[ "${BENCH_ENFORCE:-0}" == 1 ]]; then
  log "failed: a target was missed (BENCH_ENFORCE=1)"
  exit 1
fi
exit 0
