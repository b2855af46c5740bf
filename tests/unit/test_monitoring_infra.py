"""infra/monitoring/ as data: the rule file, the rendered Prometheus/Alertmanager configs, the Grafana dashboard."""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml
from mlops.alerting.alerts import DRIFT_ALERT
from mlops.alerting.local import LocalAlertSource, load_rules, local_store
from mlops.config.settings import Settings
from mlops.deploy.local import procs
from mlops.deploy.local.router import Router
from mlops.deploy.local.target import LocalTarget
from mlops.monitoring import metrics
from mlops.monitoring.metrics import drift_samples, publish_drift
from mlops.serving.metrics import Metrics
from mlops.stack import local as stack
from mlops.stack import observability

RULES = {r.name: r for r in load_rules(observability.RULES_FILE)}


# --------------------------------------------------------------------------- rules


def test_rules_file_has_the_five_alerts_with_severity_and_model_labels():
    assert {n: r.labels["severity"] for n, r in RULES.items()} == {
        "ModelDriftDetected": "warning",
        "ModelHighErrorRate": "critical",
        "ModelHighLatency": "warning",
        "ModelNoTraffic": "warning",
        "PredictionLogFailing": "critical",
    }
    for name, rule in RULES.items():
        if name != "ModelDriftDetected":  # aggregated rules keep exactly the model identity
            assert "by (model, model_version" in rule.expr, name


def test_drift_rule_is_simple_enough_for_the_local_alert_source():
    drift = RULES["ModelDriftDetected"]
    assert drift.simple
    assert drift.expr == 'mlops_drift_detected{job="mlops_drift"} > 0'
    assert drift.for_s == 10
    for label in ("model", "model_version", "drifted_features", "dvc_rev"):
        assert f"$labels.{label}" in drift.annotations["summary"] + drift.annotations["description"]
    assert drift.annotations["report"] == "{{ $labels.report }}"


def test_rule_files_use_the_drift_metric_names_defined_once():
    """The rules name the metrics and the job the monitoring DAG publishes (mlops.monitoring.metrics)."""
    names = {v for k, v in vars(metrics).items() if k.startswith("DRIFT_") and isinstance(v, str)}
    assert RULES[DRIFT_ALERT].expr == f'{metrics.DRIFT_DETECTED}{{job="{metrics.DRIFT_JOB}"}} > 0'
    for path in sorted(observability.RULES_DIR.glob("*.yml")):
        used = set(re.findall(r"\bmlops_drift_[a-z_]+", path.read_text()))
        assert used and used <= names, (path.name, used - names)


def test_local_alert_source_evaluates_the_same_rule_file(tmp_path):
    store = local_store(tmp_path)
    summary = {"model": "churn", "model_version": "3", "dvc_rev": "abc123", "status": "drift",
               "drifted_features": ["tenure"], "report": "http://x/r.html", "features": []}  # fmt: skip
    publish_drift(summary, None, store)
    source = LocalAlertSource(store, observability.RULES_FILE, tmp_path / "state.json")
    assert source.unsupported == [
        "ModelHighErrorRate",
        "ModelHighLatency",
        "ModelNoTraffic",
        "PredictionLogFailing",
    ]
    assert source.firing(now=1000.0) == []  # pending
    (alert,) = source.firing(now=1010.0)
    assert alert.labels["model_version"] == "3" and alert.annotations["report"] == "http://x/r.html"
    assert "churn v3" in alert.annotations["summary"] and "tenure" in alert.annotations["description"]


# --------------------------------------------------------------------------- rendered configs


@pytest.fixture
def settings(tmp_path):
    return Settings(
        home=tmp_path / "home",
        prometheus_url="http://127.0.0.1:19090",
        alertmanager_url="http://127.0.0.1:19093",
        pushgateway_url="http://127.0.0.1:19091",
        airflow_port=18080,
        serving_port=18000,
        alert_webhook_token="s3cret",
    )


def test_prometheus_config(settings):
    rendered = observability.render(settings)
    assert rendered.prometheus_yml == settings.home / "monitoring" / "prometheus.yml"
    cfg = yaml.safe_load(rendered.prometheus_yml.read_text())
    assert cfg["global"]["scrape_interval"] == "5s" and cfg["global"]["evaluation_interval"] == "5s"
    (rules_glob,) = cfg["rule_files"]
    assert sorted(glob.glob(rules_glob)) == [str(observability.RULES_FILE)]  # not the promtool test file
    (am,) = cfg["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["127.0.0.1:19091"]
    router = jobs["mlops_router"]
    assert router["metrics_path"] == "/router/metrics"
    assert router["static_configs"][0]["targets"] == ["127.0.0.1:18000"]
    assert router["static_configs"][0]["labels"]["model"] == "churn"
    (files,) = jobs["mlops_models"]["file_sd_configs"][0]["files"]
    target = LocalTarget("churn", settings)
    assert fnmatch.fnmatch(str(target.targets_path), files)
    assert "*" not in os.path.dirname(files)  # Prometheus allows a glob in the last path segment only


def test_alertmanager_config_and_token_file(settings):
    rendered = observability.render(settings)
    cfg = yaml.safe_load(rendered.alertmanager_yml.read_text())
    route = cfg["route"]
    assert route["group_by"] == ["alertname", "model", "model_version"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("1s", "10s", "1h")
    (receiver,) = cfg["receivers"]
    assert receiver["name"] == route["receiver"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:18080/mlops/alerts/webhook"
    assert hook["send_resolved"] is False
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    token = Path(auth["credentials_file"])
    assert token.read_text() == "s3cret"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert "s3cret" not in rendered.alertmanager_yml.read_text()


def test_service_command_lines(settings):
    svcs = {s.name: s for s in observability.services(settings)}
    assert list(svcs) == ["pushgateway", "alertmanager", "prometheus"]  # Prometheus last: its targets are up
    data = settings.home / "monitoring" / "data"
    prom = svcs["prometheus"].argv
    assert "--web.enable-lifecycle" in prom and "--web.listen-address=127.0.0.1:19090" in prom
    assert f"--storage.tsdb.path={data / 'prometheus'}" in prom
    am = svcs["alertmanager"].argv
    assert "--cluster.listen-address=" in am and "--web.listen-address=127.0.0.1:19093" in am
    assert f"--storage.path={data / 'alertmanager'}" in am
    assert "--web.listen-address=127.0.0.1:19091" in svcs["pushgateway"].argv
    assert {s.port for s in svcs.values()} == {19090, 19091, 19093}
    assert svcs["prometheus"].url == "http://127.0.0.1:19090"


def test_pushgateway_defaults_to_9091(tmp_path):
    s = Settings(home=tmp_path)
    (pg,) = [svc for svc in observability.services(s) if svc.name == "pushgateway"]
    assert pg.port == 9091 and pg.url == "http://127.0.0.1:9091"


@pytest.mark.parametrize(
    ("installed", "overrides", "source", "pushgateway"),
    [
        (True, {}, "alertmanager", "http://127.0.0.1:9091"),
        (False, {}, "local", None),
        (True, {"alert_source": "prometheus", "pushgateway_url": "http://pg:1"}, "prometheus", "http://pg:1"),
        (False, {"alert_source": "alertmanager"}, "alertmanager", None),
    ],
)
def test_airflow_env_alert_source_and_pushgateway(
    monkeypatch, tmp_path, installed, overrides, source, pushgateway
):
    monkeypatch.delenv("MLOPS_ALERT_SOURCE", raising=False)
    monkeypatch.delenv("MLOPS_PUSHGATEWAY_URL", raising=False)
    monkeypatch.setattr(observability, "installed", lambda: installed)
    env = stack.airflow_env(Settings(home=tmp_path, **overrides))
    assert env["MLOPS_ALERT_SOURCE"] == source
    assert env.get("MLOPS_PUSHGATEWAY_URL") == pushgateway


# --------------------------------------------------------------------------- local target targets file


def test_local_target_writes_prometheus_targets_with_the_routing_table(tmp_path):
    target = LocalTarget("churn", Settings(home=tmp_path))
    live = tmp_path / "live.pid"
    procs.write_pid(live, os.getpid())  # a live process stands in for a backend
    with target.table() as state:
        state["backends"]["stable"] = {"version": "3", "url": "http://127.0.0.1:4101", "weight": 90,
                                       "pidfile": str(live)}  # fmt: skip
        state["backends"]["canary"] = {"version": "4", "url": "http://127.0.0.1:4102", "weight": 10,
                                       "pidfile": str(live)}  # fmt: skip
    assert target.targets_path == tmp_path / "serving" / "churn.prometheus-targets.json"
    assert json.loads(target.targets_path.read_text()) == [
        {"targets": ["127.0.0.1:4102"], "labels": {"model": "churn", "role": "canary", "model_version": "4"}},
        {"targets": ["127.0.0.1:4101"], "labels": {"model": "churn", "role": "stable", "model_version": "3"}},
    ]
    with target.table() as state:
        del state["backends"]["canary"]
    assert [g["labels"]["role"] for g in json.loads(target.targets_path.read_text())] == ["stable"]
    target.stop_all()  # nothing of ours is running: the file is emptied
    assert json.loads(target.targets_path.read_text()) == []


# --------------------------------------------------------------------------- Grafana dashboard

DASHBOARD = json.loads(
    (
        Path(__file__).resolve().parents[2] / "infra" / "monitoring" / "grafana" / "mlops-model.json"
    ).read_text()
)
_PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "scalar",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
    "bool", "topk", "bottomk", "label_values", "delta", "abs", "clamp_min", "clamp_max", "vector",
    "max_over_time", "min_over_time", "avg_over_time", "time", "inf", "nan",
}  # fmt: skip


def _panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def _exprs(dash) -> list[str]:
    out = [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return out


def _metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges ($__rate_interval)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set(re.findall(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text))
    return {n for n in names if n not in _PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", n)}


def _family_samples(registry) -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("_sum", "_count", "", "_created")}  # fmt: skip
    return {f.name + s for f in registry.collect() for s in suffixes.get(f.type, ("",))}


def _known_metrics(tmp_path) -> set[str]:
    serving = _family_samples(Metrics("stable", "1").registry)
    router = _family_samples(Router(tmp_path / "routes.json").registry)
    summary = {"model": "m", "model_version": "1", "status": "drift",
               "features": [{"name": "f", "status": "drift", "psi": 0.3, "p_value": 0.01}]}  # fmt: skip
    drift = {s.name for s in drift_samples(summary)}
    return serving | router | drift | {"ALERTS", "ALERTS_FOR_STATE", "up"}


def test_dashboard_is_a_grafana_dashboard_with_unique_panel_ids():
    assert DASHBOARD["schemaVersion"] >= 36
    ids = [p["id"] for p in _panels(DASHBOARD)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    titles = " / ".join(p["title"] for p in _panels(DASHBOARD)).lower()
    for topic in ("request rate", "error rate", "p95 latency", "score distribution", "drift share",
                  "drifted features", "psi", "traffic share", "drift alerts"):  # fmt: skip
        assert topic in titles, topic


def test_dashboard_datasource_and_model_variables():
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["model"]["definition"].startswith("label_values(")
    for p in _panels(DASHBOARD):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'model="$model"' in t["expr"], (p["title"], t["expr"])


def test_every_dashboard_query_uses_metrics_that_exist(tmp_path):
    known = _known_metrics(tmp_path)
    used = {n for e in _exprs(DASHBOARD) for n in _metric_names(e)}
    definition = DASHBOARD["templating"]["list"][1]["definition"]  # label_values(metric, label)
    used |= _metric_names(re.fullmatch(r"label_values\((\w+),\s*\w+\)", definition)[1])
    assert used, "no metric found: the expression parser is broken"
    assert used - known == set()
    for needed in ("mlops_drift_feature_drifted", "mlops_drift_feature_psi", "mlops_drift_share_ratio",
                   "mlops_http_request_duration_seconds_bucket", "mlops_prediction_score_bucket", "ALERTS"):  # fmt: skip
        assert needed in used, needed


def test_rule_expressions_use_metrics_that_exist(tmp_path):
    known = _known_metrics(tmp_path)
    for rule in RULES.values():
        assert _metric_names(rule.expr) - known == set(), rule.name


def test_metric_name_parser():
    expr = 'histogram_quantile(0.95, sum by (variant, le) (rate(a_bucket{x="y(z)"}[$__rate_interval]))) / scalar(b) > 0.5'
    assert _metric_names(expr) == {"a_bucket", "b"}
