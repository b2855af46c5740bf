"""``python -m mlops.serving``: the model server (same arguments as ``mlops serve``)."""

from __future__ import annotations

from mlops.serving.runner import main

raise SystemExit(main())
