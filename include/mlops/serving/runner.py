"""Running the server: uvicorn with one worker, gunicorn + uvicorn workers for several.

``mlops serve`` (:func:`add_arguments`, :func:`run`) and ``python -m mlops.serving`` (:func:`main`)
end in :func:`serve`. Nothing heavy is imported here: with several workers the multiprocess metrics
folder must be set before prometheus_client is imported (:mod:`mlops.serving.workers`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlops.serving.model import is_remote_uri, resolve_model
from mlops.serving.settings import (
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT_S,
    ENV_API_TOKEN,
    ENV_VARIANT,
    SCORING_ROUTES,
    ServingSettings,
)
from mlops.serving.workers import prepare_multiprocess, ready_marker

log = logging.getLogger(__name__)

#: The event loop and the model thread share the GIL: hand it over every 1 ms, not every 5 ms.
SWITCH_INTERVAL_S = 0.001


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mlops serve``."""
    p.add_argument(
        "--model-uri", required=True, help="models:/name/version, models:/name@alias, runs:/..., or a path"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--workers", type=int, default=1, help="1: uvicorn; N: gunicorn with N uvicorn workers")
    p.add_argument(
        "--variant",
        default=os.environ.get(ENV_VARIANT) or "stable",
        help="stable, canary, staging...",
    )
    p.add_argument("--model-name", help="name in metrics, logs and /version (default: from the URI)")
    p.add_argument(
        "--model-version", help="version label (default: resolved from a models:/ URI, else unknown)"
    )
    p.add_argument(
        "--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, then the local stack)"
    )
    p.add_argument(
        "--predictions-dir",
        type=Path,
        help="prediction log folder (default: $MLOPS_HOME/predictions/<model>)",
    )
    p.add_argument("--sample-rate", type=float, default=1.0, help="share of requests logged (0 = none)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="larger bodies get 413")
    p.add_argument(
        "--max-batch-rows",
        type=int,
        default=DEFAULT_MAX_BATCH_ROWS,
        help="rows of concurrent requests per model call (0 = off)",
    )
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="rows per request (more: 413)")
    p.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="seconds a scoring request may take (more: 504)",
    )
    p.add_argument(
        "--api-token-file",
        type=Path,
        help=f"file holding the bearer token /invocations and /predict require (or {ENV_API_TOKEN}); "
        "never on the command line",
    )
    p.add_argument(
        "--protect-metrics", action="store_true", help="/metrics and /version need the token too (not probes)"
    )


def run(args: argparse.Namespace) -> int:
    """``mlops serve`` with parsed arguments (the tracking URI defaults to the local stack's)."""
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri is None and args.model_uri.startswith(("models:/", "runs:/")):
        from mlops.config.settings import get_settings

        tracking_uri = get_settings().tracking_uri
    return serve(
        args.model_uri,
        host=args.host,
        port=args.port,
        workers=args.workers,
        variant=args.variant,
        tracking_uri=tracking_uri,
        model_name=args.model_name,
        model_version=args.model_version,
        predictions_dir=args.predictions_dir,
        sample_rate=args.sample_rate,
        max_body_bytes=args.max_body_bytes,
        max_batch_rows=args.max_batch_rows,
        max_rows=args.max_rows,
        request_timeout_s=args.request_timeout,
        api_token=_read_token(args.api_token_file),
        protected=SCORING_ROUTES | ({"/metrics", "/version"} if args.protect_metrics else set()),
    )


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the API token file {path}: {exc.strerror}") from exc
    if not token:
        raise ValueError(f"the API token file {path} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops.serving ...``: exactly ``mlops serve`` (same arguments, logging, errors)."""
    from mlops.cli import main as cli_main

    return cli_main(["serve", *(argv if argv is not None else sys.argv[1:])])


def serve(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 1,
    variant: str = "stable",
    **options: Any,
) -> int:
    """Run the server until SIGTERM/SIGINT: uvicorn with 1 worker, gunicorn + uvicorn workers for N.

    The model URI is resolved and downloaded once here, so every worker serves the same version.
    ``options`` are the other :class:`ServingSettings` fields (``tracking_uri``, ``predictions_dir``,
    ``sample_rate``, ``max_body_bytes``, ``model_version``, ...).
    """
    settings = ServingSettings.from_env(
        model_uri, host=host, port=port, workers=workers, variant=variant, **options
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, settings.model_threads)))
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    settings, metrics_dir = prepare_multiprocess(settings)
    download_dir = None
    try:
        if not settings.model_path:
            download_dir = (
                tempfile.mkdtemp(prefix="mlops-serve-model-") if is_remote_uri(settings.model_uri) else None
            )
            resolved = resolve_model(settings.model_uri, settings.tracking_uri, dst=download_dir)
            settings = replace(
                settings,
                model_path=resolved.path,
                model_name=settings.model_name or resolved.name,
                model_version=settings.model_version or resolved.version,
            )
        log.info(
            "mlops serve: %s (version %s, variant %s) on http://%s:%d with %d worker(s)",
            settings.model_uri,
            settings.model_version or "unknown",
            settings.variant,
            settings.host,
            settings.port,
            settings.workers,
        )
        if settings.workers == 1:
            return _run_uvicorn(settings)
        return _run_gunicorn(settings)
    finally:
        for d in (download_dir, metrics_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)


def _run_uvicorn(settings: ServingSettings) -> int:
    import uvicorn

    from mlops.serving.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=30,
    )

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises SIGTERM after its graceful shutdown, which kills the process before
            # serve() removes its temporary folders; stop gracefully and return 0 instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            import signal

            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    _Server(config).run()
    return 0


def _run_gunicorn(settings: ServingSettings) -> int:
    from gunicorn.app.base import BaseApplication

    from mlops.serving.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # uvicorn.workers: uvicorn-worker is not locked
        import uvicorn.workers  # noqa: F401 - imported once here, quietly

    state_dir = settings.state_dir

    def child_exit(server, worker):  # in the master: forget a dead worker's live gauges and marker
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
        if state_dir:
            with contextlib.suppress(OSError):
                ready_marker(state_dir, worker.pid).unlink()

    options = {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "uvicorn.workers.UvicornWorker",
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "child_exit": child_exit,
        "proc_name": f"mlops-serve-{settings.model_name or 'model'}",
    }

    class _App(BaseApplication):
        def load_config(self):
            for k, v in options.items():
                self.cfg.set(k, v)

        def load(self):
            return create_app(settings)

    _App().run()
    return 0
