# Sourced by the .ci/setup-*.sh scripts: install Debian packages the way every one of them needs it.
#
# apt_install TAG PKG...: apt-get install PKG... quietly, as root, without recommended packages unless
# APT_WITH_RECOMMENDS=1; apt-get update first
# when a package has no install candidate yet, and once more if the install fails on a stale index.
# No service of the packages is started meanwhile: a temporary /usr/sbin/policy-rc.d answering 101
# ("action forbidden") covers the install (an existing policy-rc.d is left as it is).

APT_POLICY=/usr/sbin/policy-rc.d
APT_MARKER="# temporary: written by mlops .ci/apt.sh"

apt_install() {
  local tag=$1
  shift
  local wrote_policy=0 t0=$SECONDS policy
  local opts=(-y -qq --no-install-recommends)
  [[ ${APT_WITH_RECOMMENDS:-0} == 1 ]] && opts=(-y -qq)
  if [[ ! -e $APT_POLICY ]]; then
    printf '#!/bin/sh\n%s\nexit 101\n' "$APT_MARKER" >"$APT_POLICY"
    chmod 755 "$APT_POLICY"
    wrote_policy=1
  fi
  # (captured, not piped into `grep -q`: with pipefail an early-exiting grep fails the pipeline)
  policy=$(apt-cache policy "$@" 2>/dev/null || true)
  if [[ $(grep -c "Candidate: [0-9]" <<<"$policy") -lt $# ]]; then
    echo "$tag: no install candidate yet: apt-get update"
    apt-get update -qq
  fi
  echo "$tag: installing $*"
  local rc=0
  if ! DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >/dev/null; then
    echo "$tag: install failed (stale package index?): apt-get update and retry once"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >/dev/null || rc=$?
  fi
  if ((wrote_policy)) && grep -qF "$APT_MARKER" "$APT_POLICY" 2>/dev/null; then rm -f "$APT_POLICY"; fi
  ((rc == 0)) || return "$rc"
  echo "$tag: installed in $((SECONDS - t0))s"
}
