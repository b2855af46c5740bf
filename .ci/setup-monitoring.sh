#!/usr/bin/env bash
# Prometheus, Alertmanager and the Pushgateway from Debian's packages, for `make up` (which starts
# them with the project's own configs under $MLOPS_HOME/monitoring/) and the monitoring tests.
#
# Idempotent, as root, on Debian 12. Installs prometheus, prometheus-alertmanager and
# prometheus-pushgateway only when a binary is missing, with no service of their own started
# (.ci/apt.sh). Should a package's daemon run anyway (systemd as init),
# it is stopped and disabled so ports 9090/9091/9093 stay free for the project's own processes.
# Running it again when everything is in place costs well under a second.
set -euo pipefail

PKGS=(prometheus prometheus-alertmanager prometheus-pushgateway)
BINS=(prometheus promtool prometheus-alertmanager amtool prometheus-pushgateway)
source "$(dirname "$0")/apt.sh"

say() { echo "setup-monitoring: $*"; }
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/bin/$1 || -x /usr/sbin/$1 ]]; }

if [[ $EUID -ne 0 ]]; then
  say "must run as root (installs Debian packages)" >&2
  exit 1
fi

missing=0
for b in "${BINS[@]}"; do have "$b" || missing=1; done

if ((missing)); then
  apt_install setup-monitoring "${PKGS[@]}"
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
