#!/usr/bin/env bash
# The Python base image of the Dockerfile, made locally: no container registry is reachable here, so
# nothing can be pulled. A Debian 12 (bookworm) minbase root filesystem with python3 + python3-venv
# and CA certificates, from Debian's own mirrors (security updates included) by mmdebstrap, then
# `podman import`ed. About 180 MB, about 30 s on a 2-core machine.
#
# Idempotent: does nothing when $MLOPS_BASE_IMAGE exists with the current recipe label (bump RECIPE
# when the recipe changes); MLOPS_BASE_IMAGE_FORCE=1 rebuilds. Root, Debian, mmdebstrap and podman
# (.ci/setup-podman.sh installs both and calls this script).
set -euo pipefail

IMAGE=${MLOPS_BASE_IMAGE:-localhost/mlops-python-base:bookworm}
RECIPE=1
SUITE=bookworm
MIRROR=${MLOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${MLOPS_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
LOCK=/run/lock/mlops-base-image.lock

say() { echo "make-base-image: $*"; }
current_recipe() {
  podman image inspect --format '{{ index .Labels "io.mlops.base.recipe" }}' "$IMAGE" 2>/dev/null || true
}

if [[ $EUID -ne 0 ]]; then
  say "must run as root (mmdebstrap chroot, podman import into root's storage)" >&2
  exit 1
fi
# One builder at a time (two CI steps on one machine): the second waits, then finds the image.
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9

if [[ ${MLOPS_BASE_IMAGE_FORCE:-0} != 1 && "$(current_recipe)" == "$RECIPE" ]]; then
  say "$IMAGE exists (recipe $RECIPE)"
  exit 0
fi

tmp=$(mktemp -d /var/tmp/mlops-base-image.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
say "building $IMAGE from Debian $SUITE ($MIRROR) with mmdebstrap"
t0=$SECONDS
# minbase: Essential + apt; no docs, man pages or translations (copyright files kept).
if ! mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "$SUITE" "$tmp/rootfs.tar" \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY $SUITE-security main" >"$tmp/mmdebstrap.log" 2>&1; then
  say "mmdebstrap failed; last lines of its log:" >&2
  tail -n 30 "$tmp/mmdebstrap.log" >&2
  exit 1
fi
t1=$SECONDS
podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL io.mlops.base.recipe=$RECIPE" \
  --change "LABEL org.opencontainers.image.title=mlops-python-base" \
  --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase + python3 + python3-venv (mmdebstrap)" \
  --change "LABEL org.opencontainers.image.created=$(date -u +%FT%TZ)" \
  "$tmp/rootfs.tar" "$IMAGE" >/dev/null
python=$(podman run --rm --network none "$IMAGE" python3 -c 'import platform, venv; print(platform.python_version())')
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE: Python $python, $((size / 1000000)) MB, mmdebstrap $((t1 - t0))s + import $((SECONDS - t1))s"
