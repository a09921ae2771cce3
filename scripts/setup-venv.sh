#!/usr/bin/env bash
# Create (or reuse) the Python venv holding the real client packages that
# Warden's compatibility tests drive (tests/client/, tests/it/skypilot_client.rs),
# and the Kubernetes schema validator (tests/it/k8s_render.rs).
#
# The venv lives outside the repo, at ${WARDEN_VENV:-$HOME/.cache/warden/venv}.
# A stamp file inside it records the pinned requirement list it was built
# from; when the list is unchanged the script does no pip work at all, so it
# is cheap to run before every test run and easy to cache in CI.
#
# Progress goes to stderr; the last (and only) line on stdout is the venv's
# python, so `PY="$(scripts/setup-venv.sh)"` works.
#
# Environment:
#   WARDEN_VENV    venv directory (default $HOME/.cache/warden/venv)
#   WARDEN_PYTHON  interpreter that creates the venv (default python3)
set -euo pipefail

# Pinned client packages, one per line. Adding a client is one line here.
REQUIREMENTS=(
  "skypilot==0.14.1"
  "vastai==1.9.1"
  # Kubernetes API schemas: `warden k8s render` output is validated against
  # them (tests/it/k8s_render.rs); it brings PyYAML, which reads the YAML
  # output back as a YAML 1.1 reader would.
  "kubernetes-validate==1.37.0"
)

VENV="${WARDEN_VENV:-${HOME:?HOME is not set; set HOME or WARDEN_VENV}/.cache/warden/venv}"
BASE_PYTHON="${WARDEN_PYTHON:-python3}"
STAMP="$VENV/.warden-requirements"
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"

log() { printf 'setup-venv: %s\n' "$*" >&2; }

venv_python_works() {
  [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

# `python3 -m venv` needs the venv and ensurepip modules; Debian and Ubuntu
# ship them separately as python3-venv.
install_venv_module() {
  if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "error: '$BASE_PYTHON -m venv' is unavailable; install the python3-venv package (or equivalent) and re-run"
    exit 1
  fi
  log "the venv module is missing; installing python3-venv with apt-get"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
}

create_venv() {
  # Only ever clear a directory that is empty or already a venv: WARDEN_VENV
  # pointing at some other directory must not wipe it.
  if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]] && [[ -n "$(ls -A "$VENV" 2>/dev/null)" ]]; then
    log "error: $VENV exists, is not empty and is not a venv; choose another WARDEN_VENV"
    exit 1
  fi
  mkdir -p "$(dirname "$VENV")"
  if ! "$BASE_PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    install_venv_module
  fi
  log "creating venv with $("$BASE_PYTHON" --version 2>&1)"
  "$BASE_PYTHON" -m venv --clear "$VENV" >&2
}

log "venv: $VENV"

if venv_python_works && [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  log "requirements unchanged since the last install ($STAMP); nothing to do"
  printf '%s\n' "$VENV/bin/python"
  exit 0
fi

if ! venv_python_works; then
  create_venv
fi

log "installing: ${REQUIREMENTS[*]}"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip >&2
"$VENV/bin/python" -m pip install --disable-pip-version-check "${REQUIREMENTS[@]}" >&2

# Write the stamp last and atomically, so an interrupted install is retried.
printf '%s\n' "$WANT" >"$STAMP.tmp.$$"
mv -f "$STAMP.tmp.$$" "$STAMP"

log "done"
printf '%s\n' "$VENV/bin/python"
