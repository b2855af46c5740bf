"""Configuration of one model-server process: :class:`ServingSettings` and the environment it reads."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_BATCH_ROWS = 256
DEFAULT_MAX_ROWS = 10_000
DEFAULT_REQUEST_TIMEOUT_S = 30.0
#: Routes that need the API token when one is set; health, readiness and metrics stay open for probes.
SCORING_ROUTES = frozenset({"/invocations", "/predict"})
ENV_VARIANT = "MLOPS_SERVE_VARIANT"
ENV_MODEL_VERSION = "MLOPS_SERVE_MODEL_VERSION"
ENV_MODEL_NAME = "MLOPS_SERVE_MODEL_NAME"
ENV_IMAGE_DIGEST = "MLOPS_IMAGE_DIGEST"
#: Bearer token the scoring routes require (empty: no authentication, the default on 127.0.0.1).
ENV_API_TOKEN = "MLOPS_SERVE_API_TOKEN"


@dataclass(frozen=True)
class ServingSettings:
    """Configuration of one server process (every worker gets the same)."""

    model_uri: str
    tracking_uri: str | None = None
    #: Local copy of the model (``serve`` resolves and downloads once, so every worker serves the same
    #: version even if ``@champion`` moves meanwhile). Empty: resolved from ``model_uri`` at load.
    model_path: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    variant: str = "stable"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    #: Folder of the JSONL prediction logs. Empty: ``$MLOPS_HOME/predictions/<model>``.
    predictions_dir: Path | None = None
    sample_rate: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Rows of concurrent requests merged into one model call; 0 or 1: one call per request.
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    log_queue_size: int = 10_000
    log_rotate_bytes: int = 64 << 20
    #: Distinct values counted per categorical feature (per process); the rest count as ``__other__``.
    max_categories: int = 50
    #: OpenMP/BLAS threads of the model per worker (1: the workers are the parallelism).
    model_threads: int = 1
    image_digest: str | None = None
    #: Where workers of a multi-worker server leave their ready markers (the multiprocess metrics dir).
    state_dir: str | None = None
    #: Bearer token of the protected routes (``protected``); None: no authentication.
    api_token: str | None = field(default=None, repr=False)
    protected: frozenset[str] = SCORING_ROUTES
    #: Rows per request (more: 413) and seconds a scoring request may take (more: 504).
    max_rows: int = DEFAULT_MAX_ROWS
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, got {self.sample_rate}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.api_token is not None and len(self.api_token) < 16:
            raise ValueError("the API token must be at least 16 characters")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.variant):
            raise ValueError(f"variant must be 1-64 letters, digits, '_', '-' or '.', got {self.variant!r}")

    @classmethod
    def from_env(cls, model_uri: str, **overrides: Any) -> ServingSettings:
        """Settings with ``variant``, ``model_version``, ``model_name`` and ``image_digest`` from env."""
        env = {
            "variant": os.environ.get(ENV_VARIANT),
            "model_version": os.environ.get(ENV_MODEL_VERSION),
            "model_name": os.environ.get(ENV_MODEL_NAME),
            "image_digest": os.environ.get(ENV_IMAGE_DIGEST),
            "api_token": os.environ.get(ENV_API_TOKEN),
        }
        values: dict[str, Any] = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model_uri=model_uri, **values)
