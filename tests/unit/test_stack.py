"""The local stack's process management, with real (tiny) processes standing in for the services."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from mlops.config.settings import Settings
from mlops.stack import local as stack

from tests.helpers import free_port, wait_http


def _required(settings):
    """Status rows of the required parts (the model endpoint is optional: no champion here)."""
    return [r for r in stack.status(settings) if not r["optional"]]


@pytest.fixture
def fake_services(monkeypatch, tmp_path):
    """Two real HTTP servers as the stack's services; no Airflow, no migrations."""
    settings = Settings(home=tmp_path / "home", start_timeout=30)
    ports = [free_port(), free_port()]

    def services(s):
        return [
            stack.Service(
                f"svc{i}",
                [sys.executable, "-m", "http.server", str(p), "--bind", "127.0.0.1"],
                p,
                lambda p=p: stack._http_ok(f"http://127.0.0.1:{p}/"),
            )
            for i, p in enumerate(ports)
        ]

    monkeypatch.setattr(stack, "services", services)
    monkeypatch.setattr(stack.observability, "installed", lambda: False)  # no Prometheus & co. here
    monkeypatch.setattr(stack, "_prepare", lambda s: (s.home / "logs").mkdir(parents=True, exist_ok=True))
    monkeypatch.setattr(stack.shutil, "which", lambda *a, **k: "/bin/true")
    monkeypatch.setattr(stack, "_champion_version", lambda s: None)  # no MLflow here: no endpoint
    return settings, ports


def test_up_is_idempotent_and_down_stops_only_ours(fake_services, capsys):
    settings, ports = fake_services
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stack.up(settings)
        wait_http(f"http://127.0.0.1:{ports[0]}/")
        pids = {r["service"]: r["pid"] for r in _required(settings)}
        assert all(r["health"] == "healthy" for r in _required(settings))

        stack.up(settings)  # second time: nothing new started
        assert "already running" in capsys.readouterr().out
        assert {r["service"]: r["pid"] for r in _required(settings)} == pids

        stack.down(settings)
        assert all(r["state"] == "stopped" for r in _required(settings))
        for p in ports:
            assert not stack.port_in_use("127.0.0.1", p)
        assert bystander.poll() is None  # a process we did not start is untouched
    finally:
        bystander.kill()
        stack.down(settings)


def test_port_taken_by_someone_else_is_named(fake_services):
    settings, ports = fake_services
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[1]))
        squatter.listen()
        with pytest.raises(stack.StackError, match=f"port {ports[1]} on 127.0.0.1 is already in use"):
            stack.up(settings)
    assert all(r["state"] == "stopped" for r in _required(settings))


def test_stale_pid_file_is_ignored(fake_services):
    settings, _ = fake_services
    run = settings.home / "run"
    run.mkdir(parents=True)
    (run / "svc0.pid").write_text('{"pid": 1, "start_time": "not-the-real-start-time"}')
    rows = {r["service"]: r for r in stack.status(settings)}
    assert rows["svc0"]["state"] == "stopped"
    assert not (run / "svc0.pid").exists()


def test_airflow_env_points_everything_at_local_state(tmp_path):
    s = Settings(home=tmp_path, airflow_port=18080)
    env = stack.airflow_env(s)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow/airflow.db"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert '"port": 5000' in env["AIRFLOW_CONN_MLFLOW_DEFAULT"]


def test_without_monitoring_packages_the_local_alert_source_is_named(fake_services, capsys):
    settings, _ = fake_services
    try:
        stack.up(settings)
        out = capsys.readouterr().out
        assert "alerts: local alert source (install the Debian packages: make monitoring)" in out
        rows = {r["service"]: r for r in stack.status(settings)}
        for name in ("prometheus", "pushgateway", "alertmanager"):
            assert rows[name]["optional"] and rows[name]["state"] == "not installed (make monitoring)"
    finally:
        stack.down(settings)


def test_monitoring_parts_start_and_stop_with_the_stack_when_installed(fake_services, monkeypatch, capsys):
    """Prometheus, Pushgateway and Alertmanager (tiny HTTP servers here) are optional parts of up/down/status."""
    settings, _ = fake_services
    ports = {name: free_port() for name in ("pushgateway", "alertmanager", "prometheus")}

    def monitoring(s):
        return [
            stack.observability.MonitoringService(
                name,
                [sys.executable, "-m", "http.server", str(p), "--bind", "127.0.0.1"],
                p,
                lambda p=p: stack._http_ok(f"http://127.0.0.1:{p}/"),
                f"http://127.0.0.1:{p}",
                "MLOPS_X_URL",
            )
            for name, p in ports.items()
        ]

    monkeypatch.setattr(stack.observability, "installed", lambda: True)
    monkeypatch.setattr(stack.observability, "services", monitoring)
    try:
        stack.up(settings)
        out = capsys.readouterr().out
        assert f"Prometheus   http://127.0.0.1:{ports['prometheus']}" in out
        assert f"Alertmanager http://127.0.0.1:{ports['alertmanager']}" in out
        assert (settings.home / "monitoring" / "prometheus.yml").exists()  # configs rendered
        rows = {r["service"]: r for r in stack.status(settings)}
        for name in ports:
            assert rows[name]["optional"] and rows[name]["health"] == "healthy", rows[name]
        assert all(r["health"] == "healthy" for r in _required(settings))
        env = stack.airflow_env(settings)
        assert env["MLOPS_ALERT_SOURCE"] == "alertmanager"
    finally:
        stack.down(settings)
    for p in ports.values():
        assert not stack.port_in_use("127.0.0.1", p)
    assert all(r["state"] == "stopped" for r in stack.status(settings) if r["service"] != "serving")
