#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser.py drives it through PyPI's playwright with
# executable_path=/usr/bin/chromium; `playwright install` would download a browser and cannot work here).
#
# Idempotent, as root, on Debian 12: installs the `chromium` package only when /usr/bin/chromium is
# missing (.ci/apt.sh), then checks that the binary starts. Running it again costs well under a second.
set -euo pipefail

PKGS=(chromium)
BIN=/usr/bin/chromium

source "$(dirname "$0")/apt.sh"
say() { echo "setup-browser: $*"; }

if [[ $EUID -ne 0 ]]; then
  say "must run as root (installs Debian packages)" >&2
  exit 1
fi

if [[ ! -x $BIN ]]; then
  APT_WITH_RECOMMENDS=1 apt_install setup-browser "${PKGS[@]}"  # fonts and the like come as recommends
fi

if [[ ! -x $BIN ]]; then
  say "$BIN still missing after the install" >&2
  exit 1
fi
say "$("$BIN" --version 2>/dev/null | head -n1)"
