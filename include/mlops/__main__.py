"""``python -m mlops``: the ``mlops`` command line."""

from __future__ import annotations

from mlops.cli import main

raise SystemExit(main())
