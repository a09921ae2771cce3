#!/usr/bin/env bash
# CPU work of one Kubernetes admission, counted in instructions: the
# release server runs under `valgrind --tool=callgrind`, which counts the
# instructions each thread executes (the same count for the same binary
# and inputs, whatever else the machine does, unlike the wall-clock numbers
# of bench/k8s.sh on a shared VM). The server gets bench/k8s.sh's config
# (SQLite, quotas and a hard budget, a labelling rule); after a warm-up the
# counters are zeroed, BENCH_REQUESTS distinct 1-GPU pod reviews (each
# allowed, reserved and patched) are sent from BENCH_CLIENTS connections,
# and the counters are dumped. Prints instructions per admission for each
# thread (HTTP, the store's writer task, the SQLite thread) and in all.
#
# One client gives batches of one write (every per-batch cost shows in
# full); 32 clients give batches as the writer forms them under load (under
# valgrind, which runs one thread at a time). Valgrind hides SHA-NI, so the
# audit chain's SHA-256 runs its software fallback here: the writer's count
# is higher than on a CPU that has it.
#
# Environment (defaults in brackets):
#   BENCH_REQUESTS    admissions counted [300]
#   BENCH_CLIENTS     concurrent client connections [1]
#   BENCH_SKIP_BUILD  1: use the release binary already built [0]
#   CARGO_TARGET_DIR  cargo's target dir [target]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
REQUESTS="${BENCH_REQUESTS:-300}"
CLIENTS="${BENCH_CLIENTS:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
PORT=18094
HOST=127.0.0.1

# shellcheck source=bench/k8s_common.sh
source "$REPO_ROOT/bench/k8s_common.sh"
log() { printf 'bench/k8s_cpu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in valgrind callgrind_control python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (valgrind: apt-get install valgrind)"
done
[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REQUESTS must be a positive whole number"
[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS must be a positive whole number"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building warden (release)"
  cargo build --release --bin warden >&2
fi
WARDEN="$TARGET_DIR/release/warden"
[[ -x "$WARDEN" ]] || die "missing $WARDEN"

WORK="$(mktemp -d)"
PID=""
cleanup() {
  # Under valgrind a clean exit takes longer.
  k8s_stop "$PID" 20
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

k8s_config "sqlite://$WORK/warden.db" >"$WORK/warden.yaml"

valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg.%p" \
  "$WARDEN" serve --config "$WORK/warden.yaml" --listen "$HOST:$PORT" 2>"$WORK/server.log" &
PID="$!"
for _ in $(seq 1 600); do
  curl -s -o /dev/null "http://$HOST:$PORT/healthz" && break
  kill -0 "$PID" 2>/dev/null || die "the server exited (see its log: $(tail -3 "$WORK/server.log"))"
  sleep 0.2
done
curl -sf -o /dev/null "http://$HOST:$PORT/healthz" || die "the server did not start under valgrind within 120 s"

send() { # COUNT FIRST CLIENTS
  python3 - "$HOST" "$PORT" "$1" "$2" "$3" <<'PY'
import http.client, sys, threading
host, port, count, first, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
TEMPLATE = ('{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"cpu-__N__",'
    '"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},'
    '"name":"p-__N__","namespace":"ml","operation":"CREATE","userInfo":{"username":"alice","groups":["system:authenticated"]},'
    '"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p-__N__","namespace":"ml","labels":{"run":"p"}},'
    '"spec":{"containers":[{"name":"c","image":"pytorch/pytorch:2.5.1","resources":{"limits":{"nvidia.com/gpu":"1"}}}],'
    '"nodeSelector":{"gpu.nvidia.com/class":"H100_NVLINK_80GB"},"restartPolicy":"Never","dnsPolicy":"ClusterFirst"},"status":{}},'
    '"oldObject":null,"dryRun":false}}')
failures = []
def client(k):
    conn = http.client.HTTPConnection(host, port, timeout=300)
    for i in range(k, count, clients):
        body = TEMPLATE.replace("__N__", str(first + i))
        conn.request("POST", "/k8s/admission", body, {"Content-Type": "application/json"})
        answer = conn.getresponse().read()
        if b'"allowed":true' not in answer or b'"patch"' not in answer:
            failures.append(answer[:300])
threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{len(failures)} admissions were not allowed with a patch; first answer: {failures[0]!r}")
PY
}

log "warm-up"
send 50 0 "$CLIENTS"
callgrind_control -z "$PID" >/dev/null 2>&1
log "counting $REQUESTS admissions from $CLIENTS connection(s)"
send "$REQUESTS" 1000000 "$CLIENTS"
callgrind_control -d "$PID" >/dev/null 2>&1

python3 - "$WORK" "$REQUESTS" "$CLIENTS" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import glob, re, sys
work, n, clients, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {}
# The dump after zeroing is part 1 of each thread (`cg.PID.1-TT`).
for path in sorted(glob.glob(work + "/cg.*.1-*")):
    text = open(path, errors="replace").read()
    total = int(re.search(r"^summary: (\d+)", text, re.M).group(1))
    if "sqlite3VdbeExec" in text:
        name = "SQLite thread"
    elif "parse_review" in text:
        name = "HTTP thread"
    elif "writer::run" in text:
        name = "store writer (tokio)"
    else:
        name = "other"
    rows[name] = rows.get(name, 0) + total
if not rows:
    sys.exit("no callgrind dump was written")
print(f"### Instructions per GPU admission (git {rev}, {n} admissions, {clients} connection(s))")
print()
print("| thread | instructions |")
print("| --- | ---: |")
for name in ("HTTP thread", "store writer (tokio)", "SQLite thread", "other"):
    if name in rows:
        print(f"| {name} | {rows[name] // n:,} |")
print(f"| all | {sum(rows.values()) // n:,} |")
PY
