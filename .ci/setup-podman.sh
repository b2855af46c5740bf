#!/usr/bin/env bash
# Podman as the Docker-API engine of the `docker` training backend and of the image build (and of
# their integration tests), a local registry, and the local Python base image of the Dockerfile.
#
# Idempotent, as root, on Debian 12:
# 1. installs podman/buildah/runc/skopeo (+ busybox-static, the base of the docker-backend test image),
#    docker-registry (the local registry) and mmdebstrap (the base image);
# 2. writes the containers.conf this sandbox needs (no cgroup v2 controllers, no rlimits, see
#    ../shared/ENVIRONMENT.md) and marks the local registry insecure (plain HTTP) in
#    /etc/containers/registries.conf.d/;
# 3. serves the Docker Engine API on $MLOPS_PODMAN_SOCKET (default /run/podman/podman.sock = the
#    default of MLOPS_DOCKER_URL) until it answers `_ping`;
# 4. serves Debian's docker-registry on $MLOPS_REGISTRY (default 127.0.0.1:5001) until /v2/ answers;
# 5. makes the base image localhost/mlops-python-base:bookworm (infra/images/make-base-image.sh,
#    about 30 s) unless it exists.
# Running it again when everything is in place costs about a second.
set -euo pipefail

SOCK=${MLOPS_PODMAN_SOCKET:-/run/podman/podman.sock}
LOG=${MLOPS_PODMAN_LOG:-/var/log/mlops-podman-service.log}
PIDFILE=${SOCK%.sock}.pid
CONF=/etc/containers/containers.conf
MARKER="# written by mlops .ci/setup-podman.sh"
PKGS=(podman buildah runc skopeo busybox-static curl docker-registry mmdebstrap)
REGISTRY=${MLOPS_REGISTRY:-127.0.0.1:5001}
REG_DIR=${MLOPS_REGISTRY_DIR:-/var/lib/mlops-registry}
REG_CONF=/etc/mlops-registry/config.yml
REG_PIDFILE=/run/mlops-registry.pid
REG_LOG=/var/log/mlops-registry.log
REGISTRIES_CONF=/etc/containers/registries.conf.d/50-mlops-local-registry.conf
HERE=$(cd "$(dirname "$0")" && pwd)

say() { echo "setup-podman: $*"; }
answering() { [[ "$(curl -s --max-time 3 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" == OK ]]; }
# launch WHAT PIDFILE LOG CHECK TRIES PAUSE CMD...: start CMD detached, wait until CHECK succeeds.
launch() {
  local what=$1 pidfile=$2 log=$3 check=$4 tries=$5 pause=$6
  shift 6
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq "$tries"); do
    if "$check"; then
      say "$what answers (pid $(cat "$pidfile"))"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      say "$1 exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep "$pause"
  done
  say "$what did not answer in time; last lines of $log:" >&2
  tail -n 20 "$log" >&2
  return 1
}
registry_answering() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$REGISTRY/v2/" 2>/dev/null)" == 200 ]]
}

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

# 2b. The local registry speaks plain HTTP: Podman may push to it (and pull from it) without TLS.
#     (The service reads registries.conf once: a change restarts it, as for containers.conf.)
read -r -d '' WANT_REG <<EOF || true
$MARKER
[[registry]]
location = "$REGISTRY"
insecure = true
EOF
if [[ ! -f $REGISTRIES_CONF || "$(cat "$REGISTRIES_CONF")" != "$WANT_REG" ]]; then
  mkdir -p "$(dirname "$REGISTRIES_CONF")"
  printf '%s\n' "$WANT_REG" >"$REGISTRIES_CONF"
  say "wrote $REGISTRIES_CONF"
  restart=1
fi

# 3. The API service. Restarted only when the config changed under a running service.
start_service() {
  if ((restart)) && [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "config changed: restarting the service (pid $(cat "$PIDFILE"))"
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
  fi
  if answering; then
    say "$SOCK answers; $(podman --version)"
    return 0
  fi
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK" # a stale socket from a dead service would make the new one fail to bind
  say "starting podman system service on unix://$SOCK (log $LOG)"
  # setsid + nohup: the service outlives this script and the CI step's process group.
  launch "$SOCK" "$PIDFILE" "$LOG" answering 150 0.2 podman system service --time=0 "unix://$SOCK"
}
start_service

# 4. The local registry: Debian's docker-registry (distribution 2.8) with a config, storage, pid and
#    log file of its own. The Debian package's own config (:5000) is left alone.
start_registry() {
  local want changed=0
  read -r -d '' want <<EOF || true
$MARKER
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG_DIR
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
  mkdir -p "$REG_DIR" "$(dirname "$REG_CONF")"
  if [[ ! -f $REG_CONF || "$(cat "$REG_CONF")" != "$want" ]]; then
    printf '%s\n' "$want" >"$REG_CONF"
    say "wrote $REG_CONF"
    changed=1
  fi
  if [[ -f $REG_PIDFILE ]] && kill -0 "$(cat "$REG_PIDFILE")" 2>/dev/null; then
    if ((changed == 0)) && registry_answering; then
      say "registry http://$REGISTRY answers (pid $(cat "$REG_PIDFILE"))"
      return 0
    fi
    say "restarting the registry (pid $(cat "$REG_PIDFILE"))"
    kill "$(cat "$REG_PIDFILE")"
    for _ in $(seq 50); do kill -0 "$(cat "$REG_PIDFILE")" 2>/dev/null || break; sleep 0.1; done
  elif registry_answering; then
    say "something else answers on http://$REGISTRY/v2/ (not started by this script): using it" >&2
    return 0
  fi
  say "starting docker-registry on http://$REGISTRY (storage $REG_DIR, log $REG_LOG)"
  launch "http://$REGISTRY" "$REG_PIDFILE" "$REG_LOG" registry_answering 100 0.1 docker-registry serve "$REG_CONF"
}
start_registry

# 5. The Python base image of the Dockerfile (no registry to pull one from): made once, then reused.
bash "$HERE/../infra/images/make-base-image.sh"
