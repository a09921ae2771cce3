# Sourced by bench/k8s.sh and bench/k8s_cpu.sh: the config both serve and
# how both stop the server.

# k8s_config STORAGE_URL: quotas and a hard budget that hold every admission
# of a run (each is checked and counted in the decision's transaction), a
# rule, team labels and a deadline cap (the JSONPatch).
k8s_config() {
  cat <<YAML
storage: $1
teams:
  ml:
    kubernetes:
      labels: {cost-centre: cc-1234}
      max_active_deadline_seconds: 86400
    quotas: {max_gpus: 100000000, max_live: 100000000, max_live_hourly_usd: 1000000000}
    budgets: {monthly_usd: 1000000000000, mode: hard}
rules:
  - {name: tag, match: {doors: [k8s]}, add_labels: {owner: "\${user}"}}
YAML
}

# k8s_stop PID SECONDS: SIGTERM, up to SECONDS for the process to drain and
# exit, then SIGKILL. Nothing when PID is empty.
k8s_stop() {
  [[ -n "$1" ]] || return 0
  kill -TERM "$1" 2>/dev/null || true
  local _
  for _ in $(seq 1 $(( $2 * 10 ))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
