#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser.py drives it through PyPI's playwright with
# executable_path=/usr/bin/chromium; `playwright install` would download a browser and cannot work here).
#
# Idempotent, as root, on Debian 12: installs the `chromium` package only when /usr/bin/chromium is
# missing (apt-get update first when it has no install candidate yet, and once more if the install
# fails on a stale index), then checks that the binary starts. Running it again costs well under a second.
set -euo pipefail

PKGS=(chromium)
BIN=/usr/bin/chromium

say() { echo "setup-browser: $*"; }

if [[ $EUID -ne 0 ]]; then
  say "must run as root (installs Debian packages)" >&2
  exit 1
fi

if [[ ! -x $BIN ]]; then
  # (captured, not piped into `grep -q`: with pipefail an early-exiting grep fails the pipeline)
  policy=$(apt-cache policy "${PKGS[@]}" 2>/dev/null || true)
  if [[ $policy != *"Candidate: "[0-9]* ]]; then
    say "no install candidate yet: apt-get update"
    apt-get update -qq
  fi
  say "installing ${PKGS[*]}"
  t0=$SECONDS
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PKGS[@]}" >/dev/null; then
    say "install failed (stale package index?): apt-get update and retry once"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PKGS[@]}" >/dev/null
  fi
  say "installed in $((SECONDS - t0))s"
fi

if [[ ! -x $BIN ]]; then
  say "$BIN still missing after the install" >&2
  exit 1
fi
say "$("$BIN" --version 2>/dev/null | head -n1)"
