#!/usr/bin/env bash
# PostgreSQL server binaries from Debian (postgresql 15), for the tests that run the alert ledger on a
# real PostgreSQL: each test starts its own throw-away server (initdb in a temporary folder, 127.0.0.1,
# a free port) as the `postgres` user the package creates; nothing uses the package's own cluster.
#
# Idempotent, as root, on Debian 12. Installs only when initdb is missing, with no service started
# (.ci/apt.sh).
set -euo pipefail

source "$(dirname "$0")/apt.sh"
say() { echo "setup-postgres: $*"; }
initdb_bin() { compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n1; }

if [[ $EUID -ne 0 ]]; then
  say "must run as root (installs Debian packages)" >&2
  exit 1
fi

if [[ -z "$(initdb_bin || true)" ]]; then
  apt_install setup-postgres postgresql
fi

bin=$(initdb_bin || true)
if [[ -z $bin ]] || ! id postgres >/dev/null 2>&1; then
  say "initdb or the postgres user still missing after the install" >&2
  exit 1
fi
say "$("$(dirname "$bin")/postgres" --version)"
