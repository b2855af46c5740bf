from __future__ import annotations

import pytest

from tests.helpers import mlflow_server


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """One real MLflow tracking server for the integration session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


# --------------------------------------------------------------------------- monitoring stack


def require_monitoring() -> None:
    """Skip when Prometheus/Alertmanager/Pushgateway are not installed, except under CI (.ci/run installs them)."""
    import os

    from mlops.stack import observability

    missing = observability.missing()
    if not missing:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {', '.join(missing)} not installed (.ci/setup-monitoring.sh should have)")
    pytest.skip(f"{', '.join(missing)} not installed: `make monitoring` (root)")


class MonitoringStack:
    """Real Prometheus + Pushgateway + Alertmanager on free ports, configured as `make up` does."""

    def __init__(self, home):
        from mlops.config.secrets import ensure_secrets
        from mlops.config.settings import Settings
        from mlops.stack import observability

        from tests.helpers import free_port

        self.home = home
        self.settings = ensure_secrets(
            Settings(
                home=home,
                prometheus_url=f"http://127.0.0.1:{free_port()}",
                alertmanager_url=f"http://127.0.0.1:{free_port()}",
                pushgateway_url=f"http://127.0.0.1:{free_port()}",
                airflow_port=free_port(),  # the webhook's receiver: nothing listens there unless a test does
                serving_port=free_port(),
            )
        )
        self.rendered = observability.render(self.settings)
        self._services = {svc.name: svc for svc in observability.services(self.settings)}
        self.prometheus_url = self._services[observability.PROMETHEUS].url
        self.alertmanager_url = self._services[observability.ALERTMANAGER].url
        self.pushgateway_url = self._services[observability.PUSHGATEWAY].url

    def _pidfile(self, name):
        return self.home / "run" / f"{name}.pid"

    def start(self, name, timeout: float = 30.0) -> None:
        import os
        import time

        from mlops.deploy.local import procs

        svc = self._services[name]
        log = self.home / "logs" / f"{name}.log"
        procs.start_detached(svc.argv, dict(os.environ), log, self.home, self._pidfile(name))
        deadline = time.monotonic() + timeout
        while not svc.health()[0]:
            if procs.read_pid(self._pidfile(name)) is None:
                raise RuntimeError(f"{name} exited: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name} not ready after {timeout}s: {log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.2)

    def stop(self, name) -> None:
        from mlops.deploy.local import procs

        procs.stop(self._pidfile(name), timeout=20.0)

    def start_alertmanager(self) -> None:
        from mlops.stack.observability import ALERTMANAGER

        self.start(ALERTMANAGER)

    def stop_alertmanager(self) -> None:
        from mlops.stack.observability import ALERTMANAGER

        self.stop(ALERTMANAGER)

    def start_all(self) -> None:
        for name in self._services:  # pushgateway, alertmanager, prometheus
            self.start(name)

    def stop_all(self) -> None:
        for name in reversed(list(self._services)):
            self.stop(name)


@pytest.fixture(scope="module")
def monitoring_stack(tmp_path_factory):
    """Prometheus + Pushgateway + Alertmanager for the module (rules of infra/monitoring/rules/).

    Yields a :class:`MonitoringStack`: ``prometheus_url``, ``alertmanager_url``, ``pushgateway_url``,
    ``settings`` (the Settings the configs were rendered from), ``stop_alertmanager()`` and
    ``start_alertmanager()`` (an outage: Prometheus re-sends firing alerts within 5 s of its return).
    """
    require_monitoring()
    stack = MonitoringStack(tmp_path_factory.mktemp("monitoring"))
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()
