#!/usr/bin/env bash
# Podman as the Docker-API engine of the `docker` training backend (and its integration test).
#
# Idempotent, as root, on Debian 12: installs podman/buildah/runc/skopeo (+ busybox-static, the base of
# the test image), writes the containers.conf this sandbox needs (no cgroup v2 controllers, no rlimits,
# see ../shared/ENVIRONMENT.md), and serves the Docker Engine API on $MLOPS_PODMAN_SOCKET
# (default /run/podman/podman.sock = the default of MLOPS_DOCKER_URL) until it answers `_ping`.
# Running it again when everything is in place costs well under a second.
set -euo pipefail

SOCK=${MLOPS_PODMAN_SOCKET:-/run/podman/podman.sock}
LOG=${MLOPS_PODMAN_LOG:-/var/log/mlops-podman-service.log}
PIDFILE=${SOCK%.sock}.pid
CONF=/etc/containers/containers.conf
MARKER="# written by mlops .ci/setup-podman.sh"
PKGS=(podman buildah runc skopeo busybox-static curl)

say() { echo "setup-podman: $*"; }
answering() { [[ "$(curl -s --max-time 3 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" == OK ]]; }

if [[ $EUID -ne 0 ]]; then
  say "must run as root (installs packages, writes $CONF, serves $SOCK)" >&2
  exit 1
fi

# 1. Packages: apt-get update only when a missing package has no install candidate yet.
missing=()
for p in "${PKGS[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  for p in "${missing[@]}"; do
    # (captured, not piped into `grep -q`: with pipefail an early-exiting grep fails the pipeline)
    policy=$(apt-cache policy "$p" 2>/dev/null || true)
    if [[ $policy != *"Candidate: "[0-9]* ]]; then
      say "no candidate for $p: apt-get update"
      apt-get update -qq
      break
    fi
  done
  say "installing ${missing[*]}"
  t0=$SECONDS
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
    say "install failed (stale package index?): apt-get update and retry once"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  say "installed in $((SECONDS - t0))s"
fi

# 2. containers.conf for this sandbox. An admin's own file (no marker) is never overwritten.
read -r -d '' WANT <<EOF || true
$MARKER
[containers]
default_ulimits = []
pids_limit = 0

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
restart=0
if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
  say "keeping the existing $CONF (not written by this script)"
elif [[ ! -f $CONF || "$(cat "$CONF")" != "$WANT" ]]; then
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$WANT" >"$CONF"
  say "wrote $CONF"
  restart=1
fi

# 3. The API service. Restarted only when the config changed under a running service.
if ((restart)) && [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  say "config changed: restarting the service (pid $(cat "$PIDFILE"))"
  kill "$(cat "$PIDFILE")"
  for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
fi
if answering; then
  say "$SOCK answers; $(podman --version)"
  exit 0
fi
mkdir -p "$(dirname "$SOCK")"
rm -f "$SOCK"  # a stale socket from a dead service would make the new one fail to bind
say "starting podman system service on unix://$SOCK (log $LOG)"
# setsid + nohup: the service outlives this script and the CI step's process group.
setsid nohup podman system service --time=0 "unix://$SOCK" >>"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
for _ in $(seq 150); do
  if answering; then
    say "$SOCK answers (pid $(cat "$PIDFILE")); $(podman --version)"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "the service exited; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 0.2
done
say "$SOCK did not answer within 30s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
