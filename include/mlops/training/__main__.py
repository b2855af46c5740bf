"""``python -m mlops.training``: the training entrypoint (exactly ``mlops train``: same arguments, logging
and error handling)."""

from __future__ import annotations

import os
import sys

from mlops.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
raise SystemExit(main(["train", *sys.argv[1:]]))
