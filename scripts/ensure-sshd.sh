#!/usr/bin/env bash
# Makes sure the OpenSSH server binary is installed for the Vast door's
# pre-destroy test (tests/it/vast.rs starts its own throwaway sshd on a free
# loopback port; nothing is enabled or started system-wide). Installs
# Debian's openssh-server (as root) when sshd is missing. Idempotent.
set -euo pipefail
if [ -x /usr/sbin/sshd ] || [ -x /usr/bin/sshd ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-sshd: sshd is not installed; install openssh-server" >&2
  exit 1
fi
echo "ensure-sshd: installing openssh-server" >&2
apt-get update -qq
# policy-rc.d exit 101: do not start the system sshd on install (only when
# the machine has no policy of its own).
ours=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  ours=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
if [ "$ours" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
