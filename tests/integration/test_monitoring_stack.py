"""Prometheus, Pushgateway and Alertmanager for real: the rules, the rendered configs, a drift alert end to end."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
from mlops.alerting.alerts import DRIFT_ALERT
from mlops.alerting.sources import AlertmanagerSource, AlertSourceError, PrometheusSource
from mlops.config.secrets import ensure_secrets
from mlops.config.settings import Settings
from mlops.deploy.local.target import LocalTarget
from mlops.monitoring.metrics import drift_samples, push_samples
from mlops.stack import observability

from tests.integration.conftest import require_monitoring

DRIFT_SUMMARY = {
    "model": "churn",
    "model_version": "3",
    "dvc_rev": "abc123",
    "status": "drift",
    "drifted_features": ["monthly_charges"],
    "drifted_share": 0.3,
    "rows": 500,
    "report": "http://x/r.html",
    "features": [],
}


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [observability.which(name), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check_and_unit_tests():
    require_monitoring()
    check = _tool("promtool", "check", "rules", str(observability.RULES_FILE))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "5 rules found" in check.stdout
    tests = _tool("promtool", "test", "rules", str(observability.RULES_DIR / "mlops.rules.test.yml"))
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_rendered_configs_are_valid(tmp_path):
    require_monitoring()
    rendered = observability.render(ensure_secrets(Settings(home=tmp_path)))
    prom = _tool("promtool", "check", "config", str(rendered.prometheus_yml))
    assert prom.returncode == 0, prom.stdout + prom.stderr
    assert "1 rule files found" in prom.stdout
    am = _tool("amtool", "check-config", str(rendered.alertmanager_yml))
    assert am.returncode == 0, am.stdout + am.stderr
    assert "1 receivers" in am.stdout


def _wait_for(what: str, fn, timeout: float = 45.0, pause: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AlertSourceError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(pause)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r})")


def _query(prometheus_url: str, promql: str) -> list[dict]:
    r = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5, trust_env=False)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_pushed_drift_fires_in_prometheus_and_alertmanager(monitoring_stack):
    t0 = time.monotonic()
    samples = drift_samples(DRIFT_SUMMARY)
    push_samples(samples, monitoring_stack.pushgateway_url, {"model": "churn"})

    def drift_alerts(source):
        return [a for a in source.firing() if a.name == DRIFT_ALERT]

    am = AlertmanagerSource(monitoring_stack.alertmanager_url)
    (alert,) = _wait_for("ModelDriftDetected in Alertmanager", lambda: drift_alerts(am))
    fired_after = time.monotonic() - t0
    assert fired_after >= 10  # the rule's `for: 10s` was respected
    assert alert.labels["model"] == "churn" and alert.labels["model_version"] == "3"
    assert alert.labels["severity"] == "warning"
    assert alert.labels["drifted_features"] == "monthly_charges"
    assert alert.annotations["report"] == "http://x/r.html"
    conf = alert.for_conf()
    assert conf["drifted_features"] == ["monthly_charges"] and conf["dvc_rev"] == "abc123"

    (prom_alert,) = drift_alerts(PrometheusSource(monitoring_stack.prometheus_url))
    assert prom_alert.labels["model"] == "churn" and prom_alert.labels["model_version"] == "3"
    assert "churn v3" in prom_alert.annotations["summary"]


def test_backends_written_by_the_local_target_are_scraped(monitoring_stack):
    """The file_sd glob covers the targets file LocalTarget writes; model/role/version become target labels."""
    target = LocalTarget("churn", monitoring_stack.settings)
    # A live "backend": the Pushgateway's /metrics stands in for a model server's.
    host_port = monitoring_stack.pushgateway_url.removeprefix("http://")
    state = {"backends": {"stable": {"version": "3", "url": f"http://{host_port}"}}}
    target._write_targets(state)
    assert json.loads(target.targets_path.read_text())[0]["labels"]["role"] == "stable"

    up = _wait_for(
        "up{job='mlops_models'}",
        lambda: _query(monitoring_stack.prometheus_url, 'up{job="mlops_models", model="churn"} == 1'),
        timeout=30,
    )
    labels = up[0]["metric"]
    assert (labels["model"], labels["role"], labels["model_version"]) == ("churn", "stable", "3")
    target._write_targets(None)


def test_alertmanager_outage_and_return(monitoring_stack):
    """What a sensor sees: an error while Alertmanager is down, the firing alert again once it is back."""
    push_samples(drift_samples(DRIFT_SUMMARY), monitoring_stack.pushgateway_url, {"model": "churn"})
    am = AlertmanagerSource(monitoring_stack.alertmanager_url, timeout=2)
    monitoring_stack.stop_alertmanager()
    with pytest.raises(AlertSourceError):
        am.firing()
    monitoring_stack.start_alertmanager()
    alerts = _wait_for(
        "ModelDriftDetected after the restart",
        lambda: [a for a in am.firing() if a.name == DRIFT_ALERT],
        timeout=30,
    )
    assert alerts[0].labels["model"] == "churn"
