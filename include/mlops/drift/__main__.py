"""``python -m mlops.drift``: exactly ``mlops drift`` (same arguments, exit codes and messages)."""

from __future__ import annotations

import sys

from mlops.cli import main

raise SystemExit(main(["drift", *sys.argv[1:]]))
