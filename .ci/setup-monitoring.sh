#!/usr/bin/env bash
# Prometheus, Alertmanager and the Pushgateway from Debian's packages, for `make up` (which starts
# them with the project's own configs under $MLOPS_HOME/monitoring/) and the monitoring tests.
#
# Idempotent, as root, on Debian 12. Installs prometheus, prometheus-alertmanager and
# prometheus-pushgateway only when a binary is missing, with no service of their own started:
# a temporary /usr/sbin/policy-rc.d answering 101 ("action forbidden") covers the install (an
# existing policy-rc.d is left as it is). Should a package's daemon run anyway (systemd as init),
# it is stopped and disabled so ports 9090/9091/9093 stay free for the project's own processes.
# Running it again when everything is in place costs well under a second.
set -euo pipefail

PKGS=(prometheus prometheus-alertmanager prometheus-pushgateway)
BINS=(prometheus promtool prometheus-alertmanager amtool prometheus-pushgateway)
POLICY=/usr/sbin/policy-rc.d
MARKER="# temporary: written by mlops .ci/setup-monitoring.sh"

say() { echo "setup-monitoring: $*"; }
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/bin/$1 || -x /usr/sbin/$1 ]]; }

if [[ $EUID -ne 0 ]]; then
  say "must run as root (installs Debian packages)" >&2
  exit 1
fi

missing=0
for b in "${BINS[@]}"; do have "$b" || missing=1; done

if ((missing)); then
  wrote_policy=0
  cleanup() {
    if ((wrote_policy)) && grep -qF "$MARKER" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi
  }
  trap cleanup EXIT
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n%s\nexit 101\n' "$MARKER" >"$POLICY"
    chmod 755 "$POLICY"
    wrote_policy=1
  fi
  need_update=0
  for p in "${PKGS[@]}"; do
    # (captured, not piped into `grep -q`: with pipefail an early-exiting grep fails the pipeline)
    policy=$(apt-cache policy "$p" 2>/dev/null || true)
    [[ $policy == *"Candidate: "[0-9]* ]] || need_update=1
  done
  if ((need_update)); then
    say "no install candidate yet: apt-get update"
    apt-get update -qq
  fi
  say "installing ${PKGS[*]}"
  t0=$SECONDS
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null; then
    say "install failed (stale package index?): apt-get update and retry once"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  fi
  say "installed in $((SECONDS - t0))s"
  cleanup
  trap - EXIT
fi

# The packages' own daemons must not hold the ports the local stack uses.
for unit in prometheus prometheus-alertmanager prometheus-pushgateway prometheus-node-exporter; do
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
      say "stopping and disabling the system service $unit"
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  elif [[ -x /etc/init.d/$unit ]] && /etc/init.d/"$unit" status >/dev/null 2>&1; then
    say "stopping the system service $unit"
    /etc/init.d/"$unit" stop >/dev/null 2>&1 || true
  fi
done

for b in "${BINS[@]}"; do
  if ! have "$b"; then
    say "$b still missing after the install" >&2
    exit 1
  fi
done
say "$(prometheus --version 2>&1 | head -n1); $(prometheus-alertmanager --version 2>&1 | head -n1); $(prometheus-pushgateway --version 2>&1 | head -n1)"
