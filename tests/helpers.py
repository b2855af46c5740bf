"""Helpers for tests that start real services (MLflow server, Airflow processes) on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from mlops.config.settings import Settings
from mlops.deploy.local import procs
from mlops.stack import local as stack

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    return procs.free_port()


def wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


class MlflowServer:
    """A real MLflow tracking server (SQLite store, served artifacts), started exactly as `make up` does.

    ``stop()`` kills it (SIGKILL: a crash, not a shutdown) and ``start()`` brings it back on the same
    port and store: for fault tests.
    """

    def __init__(self, home: Path):
        self.home = home
        self.settings = Settings(home=home, mlflow_port=free_port())
        (home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        self.uri = f"http://127.0.0.1:{self.settings.mlflow_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        svc = next(s for s in stack.services(self.settings) if s.name == "mlflow")
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        with open(self.home / "mlflow.log", "ab") as log:
            self.proc = subprocess.Popen(
                svc.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_http(f"{self.uri}/health")
        return self.uri

    def stop(self, sig: int = 9) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None


@contextmanager
def mlflow_server(home: Path) -> Iterator[str]:
    """A real MLflow tracking server for the duration of the block (see :class:`MlflowServer`)."""
    server = MlflowServer(home)
    try:
        yield server.start()
    finally:
        server.stop(15)


@contextmanager
def postgres_server() -> Iterator[tuple[str, dict[str, str]]]:
    """A throw-away PostgreSQL server (Debian's binaries) on 127.0.0.1: ``(SQLAlchemy URL, environment)``.

    The server runs as the ``postgres`` user with password authentication; the URL carries no password,
    the environment (``PGPASSWORD``) does, as the platform documents for ``alert_ledger_url``. Skipped
    without the binaries, except under CI (``.ci/setup-postgres.sh`` installs them).
    """
    import glob
    import secrets
    import shutil
    import tempfile

    import pytest

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or shutil.which("runuser") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI: PostgreSQL is not installed (.ci/setup-postgres.sh should have)")
        pytest.skip("PostgreSQL is not installed: bash .ci/setup-postgres.sh (root)")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))  # not under pytest's 0700 root-owned folder
    shutil.chown(root, "postgres", "postgres")
    password = secrets.token_urlsafe(24)
    (root / "pw").write_text(password + "\n")
    shutil.chown(root / "pw", "postgres", "postgres")
    port = free_port()

    def as_postgres(*argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120
        )

    as_postgres(str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={root / 'pw'}", "--no-sync")  # fmt: skip
    (root / "pw").unlink()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(
        str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-o", opts, "-w", "start"
    )
    env = {**os.environ, "PGPASSWORD": password}
    try:
        subprocess.run([str(bindir.parent / "bin" / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "mlops"], env=env, check=True, capture_output=True, timeout=60)  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlops", env
    finally:
        as_postgres(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def save_churn_model(path: Path, seed: int, max_iter: int = 30):
    """A small real churn pipeline saved as an MLflow model (signature, input example) at ``path``.

    Returns ``(pipeline, model config)``. No MLflow server needed: for serving tests.
    """
    import warnings

    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlops.config.model import get_model_config
    from mlops.config.settings import get_settings
    from mlops.demo.datagen import generate_churn
    from mlops.training.artifacts import KNOWN_CATEGORIES
    from mlops.training.train import build_pipeline

    cfg = get_model_config("churn", get_settings().models_dir)
    df = generate_churn(1500, seed=seed)
    X = df[cfg.features.all]
    pipe = build_pipeline(cfg, {"max_iter": max_iter}).fit(X, df[cfg.target])
    example = X.head(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            pipe,
            str(path),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            signature=infer_signature(example, pipe.predict(example)),
            input_example=example,
            metadata={  # as training records them (mlops.training.train)
                KNOWN_CATEGORIES: {c: sorted(map(str, X[c].unique())) for c in cfg.features.categorical}
            },
        )
    return pipe, cfg


def register_churn_model(tracking_uri: str, name: str, seed: int, constant: bool = False) -> str:
    """Log and register a small real churn pipeline under ``name``; returns the new version.

    ``constant``: a deliberately bad model (a prior-only classifier: the same score for every row)
    with the same signature, for rollback tests.
    """
    import warnings

    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlops.config.model import get_model_config
    from mlops.config.settings import get_settings
    from mlops.demo.datagen import generate_churn
    from mlops.training.train import build_pipeline
    from sklearn.dummy import DummyClassifier

    cfg = get_model_config("churn", get_settings().models_dir)
    df = generate_churn(1500, seed=seed)
    X = df[cfg.features.all]
    pipe = build_pipeline(cfg, {"max_iter": 30})
    if constant:
        pipe.steps[-1] = (pipe.steps[-1][0], DummyClassifier(strategy="prior"))
    pipe.fit(X, df[cfg.target])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.simplefilter("ignore")
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            signature=infer_signature(X.head(5), pipe.predict(X.head(5))),
            input_example=X.head(5),
            registered_model_name=name,
        )
    return str(info.registered_model_version)
