"""Alert sources, local rule semantics, the alert ledger's storm protection, and the webhook receiver."""

from __future__ import annotations

import json
import sqlite3

import pytest
from mlops.alerting.alerts import Alert, fingerprint
from mlops.alerting.ledger import AlertLedger, retrain_run_id
from mlops.alerting.local import LocalAlertSource, LocalMetricStore, Rule, parse_duration
from mlops.alerting.webhook import alerts_from_webhook
from mlops.monitoring.metrics import Sample, drift_samples, publish_drift

SUMMARY = {
    "model": "churn",
    "model_version": "3",
    "dvc_rev": "0123456789abcdef",
    "status": "drift",
    "drifted_features": ["monthly_charges", "contract_type"],
    "drifted_share": 0.25,
    "rows": 600,
    "report": "/tmp/r.html",
    "report_url": "http://127.0.0.1:8080/mlops/reports/drift/churn/r.html",
    "features": [
        {"name": "monthly_charges", "kind": "numeric", "status": "drift", "psi": 0.8, "p_value": 1e-9},
        {"name": "age", "kind": "numeric", "status": "no_drift", "psi": 0.01, "p_value": 0.6},
        {"name": "region", "kind": "categorical", "status": "no_drift", "psi": None, "p_value": float("nan")},
    ],
}

RULES = """
groups:
  - name: test
    rules:
      - alert: ModelDriftDetected
        expr: mlops_drift_detected{job="mlops_drift"} > 0
        for: 30s
        labels: {severity: warning}
        annotations:
          summary: "Drift in {{ $labels.model }} v{{ $labels.model_version }}: {{ $labels.drifted_features }}"
      - alert: ModelHighErrorRate
        expr: sum by (model) (rate(mlops_http_requests_total{status=~"5.."}[5m])) > 0.05
        for: 5m
"""


def test_drift_samples_name_units_and_labels():
    samples = drift_samples(SUMMARY, now=1000.0)
    by_name = {}
    for s in samples:
        by_name.setdefault(s.name, []).append(s)
    detected = by_name["mlops_drift_detected"][0]
    assert detected.value == 1.0
    assert detected.labels == {
        "model": "churn", "model_version": "3", "dvc_rev": "0123456789ab",
        "drifted_features": "contract_type,monthly_charges", "report": SUMMARY["report_url"],
    }  # fmt: skip
    assert by_name["mlops_drift_share_ratio"][0].value == 0.25
    assert by_name["mlops_drift_check_timestamp_seconds"][0].value == 1000.0
    flags = {s.labels["feature"]: s.value for s in by_name["mlops_drift_feature_drifted"]}
    assert flags == {"monthly_charges": 1.0, "age": 0.0, "region": 0.0}
    # a missing / NaN statistic is left out, never published as NaN
    assert {s.labels["feature"] for s in by_name["mlops_drift_feature_p_value"]} == {"monthly_charges", "age"}
    assert {s.labels["feature"] for s in by_name["mlops_drift_feature_psi"]} == {"monthly_charges", "age"}
    no_drift = drift_samples({**SUMMARY, "status": "no_drift", "drifted_features": []})
    assert no_drift[0].value == 0.0 and no_drift[0].labels["drifted_features"] == ""


def test_rules_parse_durations_and_only_simple_ones_are_local():
    assert parse_duration("1m30s") == 90 and parse_duration("") == 0
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5 minutes")


def test_the_default_retraining_alert_is_a_shipped_rule_the_local_source_can_judge():
    from mlops.alerting.local import load_rules
    from mlops.config.model import DRIFT_ALERT, RetrainingConfig
    from mlops.config.resources import alert_rules_file

    assert RetrainingConfig().alerts == [DRIFT_ALERT]
    (rule,) = [r for r in load_rules(alert_rules_file()) if r.name == DRIFT_ALERT]
    assert rule.simple, rule.expr


def _source(tmp_path):
    (tmp_path / "rules.yml").write_text(RULES)
    store = LocalMetricStore(tmp_path / "metrics.json")
    return store, LocalAlertSource(store, tmp_path / "rules.yml", tmp_path / "state.json")


def test_local_source_applies_threshold_and_for_duration(tmp_path):
    store, source = _source(tmp_path)
    assert [r.name for r in source.rules] == ["ModelDriftDetected"]
    assert source.unsupported == ["ModelHighErrorRate"]
    publish_drift(SUMMARY, None, store)
    assert source.firing(now=1000.0) == []  # pending
    assert source.firing(now=1029.0) == []  # still pending: for 30s
    (alert,) = source.firing(now=1030.0)
    assert alert.name == "ModelDriftDetected" and alert.source == "local"
    assert alert.labels["model"] == "churn" and alert.labels["severity"] == "warning"
    assert alert.labels["job"] == "mlops_drift"
    assert alert.annotations["summary"] == "Drift in churn v3: contract_type,monthly_charges"
    assert alert.starts_at == "1970-01-01T00:17:10Z"  # 1030 s: when the for-duration was reached
    assert alert.for_conf()["drifted_features"] == ["contract_type", "monthly_charges"]
    # a later check without drift resolves it; drift again is a new firing with a new key
    publish_drift({**SUMMARY, "status": "no_drift"}, None, store)
    assert source.firing(now=1100.0) == []
    publish_drift(SUMMARY, None, store)
    assert source.firing(now=1200.0) == []
    (again,) = source.firing(now=1230.0)
    assert again.fingerprint == alert.fingerprint and again.key != alert.key


def test_local_source_matchers(tmp_path):
    rule = Rule("X", 'm{model="churn",model_version=~"1|2",env!="dev"} >= 1', 0)
    ok = Sample("m", {"model": "churn", "model_version": "2"}, 1.0)
    assert rule.matches(ok)
    assert not rule.matches(Sample("m", {"model": "churn", "model_version": "3"}, 1.0))
    assert not rule.matches(Sample("m", {"model": "churn", "model_version": "1", "env": "dev"}, 1.0))
    assert not rule.matches(Sample("m", {"model": "churn", "model_version": "1"}, 0.5))
    assert not rule.matches(Sample("other", ok.labels, 1.0))


def _alerts(n: int, version: str = "3", name: str = "ModelDriftDetected", t: str = "2026-11-26T10:00:00Z"):
    return [
        Alert(
            name,
            {"alertname": name, "model": "churn", "model_version": version, "i": str(i)},
            {},
            fingerprint({"i": str(i), "name": name}),
            t,
            "test",
        )  # fmt: skip
        for i in range(n)
    ]


POLICY = {"alert_names": ["ModelDriftDetected"], "champion": "3", "cooldown_s": 3600.0, "daily_budget": 3}


def test_storm_of_50_alerts_starts_exactly_one_retrain_and_a_second_wave_none(tmp_path):
    ledger = AlertLedger(tmp_path / "ledger.db")
    now = 1_800_000_000.0
    assert ledger.record(_alerts(50), now=now) == 50
    assert ledger.pending("churn") == 50
    first = ledger.decide("churn", in_flight=[], now=now + 1, **POLICY)
    assert first.accepted is not None and len(first.suppressed) == 49
    assert first.accepted["run_id"] == retrain_run_id(first.accepted)
    ledger.mark_launched(first.accepted["key"])
    assert all("coalesced into the retrain" in reason for _, reason in first.suppressed)
    assert ledger.pending("churn") == 0
    # the same 50 alerts re-sent (Alertmanager repeats): duplicates, nothing pending
    assert ledger.record(_alerts(50), now=now + 5) == 0 and ledger.pending("churn") == 0
    # a second wave (new firings) inside the cooldown: no retrain, each one recorded with the reason
    wave = _alerts(50, t="2026-11-26T10:10:00Z")
    assert ledger.record(wave, now=now + 600) == 50
    second = ledger.decide("churn", in_flight=[], now=now + 601, **POLICY)
    assert second.accepted is None and len(second.suppressed) == 50
    assert all(reason.startswith("cooldown") for _, reason in second.suppressed)
    rows = ledger.entries("churn")
    assert len(rows) == 100
    assert sum(r["decision"] == "retrain" for r in rows) == 1
    assert all(r["decision"] == "suppressed" and r["reason"] for r in rows if r["decision"] != "retrain")
    assert max(r["seen"] for r in rows) == 2


def test_in_flight_budget_champion_and_alert_name(tmp_path):
    ledger = AlertLedger(tmp_path / "ledger.db")
    day = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    ledger.record(_alerts(1, t="t1"), now=day)
    d = ledger.decide("churn", in_flight=["1 run(s) of churn_training"], now=day, **POLICY)
    assert d.accepted is None and "in flight" in d.suppressed[0][1]
    policy = {**POLICY, "cooldown_s": 0.0, "daily_budget": 2}
    for i in range(3):
        ledger.record(_alerts(1, t=f"b{i}"), now=day + i)
        d = ledger.decide("churn", in_flight=[], now=day + i, **policy)
        assert (d.accepted is not None) == (i < 2)
        if d.accepted:
            ledger.mark_launched(d.accepted["key"])
    assert "daily budget used: 2 of 2" in d.suppressed[0][1]
    assert ledger.blocker("churn", cooldown_s=0, daily_budget=2, now=day + 10).startswith("daily budget")
    assert ledger.blocker("churn", cooldown_s=0, daily_budget=2, now=day + 86400) is None
    ledger.record(_alerts(1, t="next-day"), now=day + 86400)
    d = ledger.decide("churn", in_flight=[], now=day + 86400, **policy)
    assert d.accepted is not None
    ledger.mark_launched(d.accepted["key"])
    ledger.record(_alerts(1, version="2", t="old"), now=day + 86401)
    ledger.record(_alerts(1, name="ModelHighLatency", t="lat"), now=day + 86401)
    d = ledger.decide("churn", in_flight=[], now=day + 86402, **{**policy, "daily_budget": 10})
    assert d.accepted is None
    reasons = sorted(r for _, r in d.suppressed)
    assert "not the serving @champion v3" in reasons[0] and "does not start retraining" in reasons[1]


def test_a_retried_admission_gets_the_same_alert_and_run_id_never_loses_it(tmp_path):
    ledger = AlertLedger(tmp_path / "ledger.db")
    now = 1_800_000_000.0
    ledger.record(_alerts(3), now=now)
    first = ledger.decide("churn", in_flight=[], now=now, **POLICY)
    # the admitting task died before its training run was created: the retry hands the same alert out
    again = ledger.decide("churn", in_flight=["1 run(s) of churn_training"], now=now + 60, **POLICY)
    assert (
        again.accepted["key"] == first.accepted["key"]
        and again.accepted["run_id"] == first.accepted["run_id"]
    )
    assert [u["run_id"] for u in ledger.unlaunched("churn")] == [first.accepted["run_id"]]
    ledger.mark_launched(first.accepted["key"], now=now + 61)
    assert ledger.unlaunched("churn") == []
    assert ledger.decide("churn", in_flight=[], now=now + 62, **POLICY).accepted is None
    # an accepted alert whose run never appeared within the hour is given up, with the reason
    ledger.record(_alerts(1, t="later"), now=now + 7200)
    lost = ledger.decide("churn", in_flight=[], now=now + 7200, **POLICY)
    assert lost.accepted is not None
    d = ledger.decide("churn", in_flight=[], now=now + 7200 + 3601, **POLICY)
    assert d.accepted is None and "was never created" in d.suppressed[0][1]


def test_stale_alerts_start_nothing(tmp_path):
    ledger = AlertLedger(tmp_path / "ledger.db")
    ledger.record(_alerts(1, t="old"), now=1_800_000_000.0)
    d = ledger.decide("churn", in_flight=[], now=1_800_000_000.0 + 25 * 3600, **POLICY)
    assert d.accepted is None and d.suppressed[0][1].startswith("stale")


def test_ledger_is_shared_between_writers(tmp_path):
    a, b = AlertLedger(tmp_path / "l.db"), AlertLedger(tmp_path / "l.db")
    a.record(_alerts(3))
    assert b.record(_alerts(3)) == 0 and b.pending("churn") == 3
    with sqlite3.connect(tmp_path / "l.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_webhook_payload_parsing():
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "ModelDriftDetected", "model": "churn"},
             "annotations": {"summary": "s"}, "startsAt": "2026-11-26T10:00:00.123Z", "fingerprint": "abc"},
            {"status": "resolved", "labels": {"alertname": "ModelDriftDetected", "model": "churn"},
             "startsAt": "2026-11-26T09:00:00Z", "fingerprint": "old"},
        ],
    }  # fmt: skip
    (alert,) = alerts_from_webhook(payload)
    # what other senders (and our own tests) use as fingerprints is accepted too
    plain = {"status": "firing", "labels": {"alertname": "X"}, "fingerprint": "issue10-0-1764921600000000000"}
    assert alerts_from_webhook({"version": "4", "alerts": [plain]})[0].fingerprint == plain["fingerprint"]
    assert (
        alert.fingerprint == "abc" and alert.starts_at == "2026-11-26T10:00:00Z" and alert.source == "webhook"
    )
    for bad, msg in (
        ({"alerts": []}, "version"),
        ({"version": "4", "alerts": {}}, "list"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}, "alertname"),
        ({"version": "4", "alerts": [{"status": "odd", "labels": {"alertname": "X"}}]}, "status"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "startsAt": "soon"}]},
         "startsAt"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X"},
                                      "fingerprint": "x y/../evil"}]}, "fingerprint"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X", "v": "a" * 9000}}]},
         r"labels\['v'\]"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X"},
                                      "annotations": {"s": "a\x00b"}}]}, "control characters"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X", "n": 3}}]}, "string"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            alerts_from_webhook(bad)


@pytest.fixture
def app_client(tmp_path, monkeypatch, airflow_auth):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_TOKEN", "s3cret")
    from mlops_airflow.reports_app import create_app

    # the ledger is a page people open: an Airflow login (the webhook has its own token)
    return TestClient(create_app(), headers={"Authorization": f"Bearer {airflow_auth()}"})


WEBHOOK = {
    "version": "4",
    "status": "firing",
    "receiver": "mlops",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "ModelDriftDetected", "model": "churn", "model_version": "3"},
         "annotations": {}, "startsAt": "2026-11-26T10:00:00Z", "fingerprint": "f1"},
    ],
}  # fmt: skip


def test_webhook_receiver_refuses_unauthenticated_and_malformed(app_client, tmp_path):
    url = "/alerts/webhook"
    assert app_client.post(url, json=WEBHOOK).status_code == 401
    assert app_client.post(url, json=WEBHOOK, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert app_client.post(url, json=WEBHOOK, headers={"Authorization": "Basic s3cret"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    # unauthenticated AND malformed: still 401 (auth is checked before the body is read)
    assert app_client.post(url, content=b"{nope").status_code == 401
    r = app_client.post(url, content=b"{nope", headers=auth)
    assert r.status_code == 422 and "webhook payload" in r.json()["detail"]
    r = app_client.post(url, json={"version": "4", "alerts": [{"labels": {}}]}, headers=auth)
    assert r.status_code == 422 and "alertname" in r.json()["detail"]
    assert app_client.get("/alerts/ledger.json").json() == []  # nothing recorded, nothing triggered
    r = app_client.post(url, json=WEBHOOK, headers=auth)
    assert r.status_code == 200 and r.json() == {"received": 1, "new": 1}
    assert app_client.post(url, json=WEBHOOK, headers=auth).json() == {"received": 1, "new": 0}
    (entry,) = app_client.get("/alerts/ledger.json", params={"model": "churn"}).json()
    assert entry["fingerprint"] == "f1" and entry["decision"] is None and entry["seen"] == 2
    page = app_client.get("/alerts/")
    assert page.status_code == 200 and "f1" in page.text and "pending" in page.text
    assert json.loads(json.dumps(entry))["alert"]["labels"]["model_version"] == "3"


def test_webhook_answers_503_when_the_ledger_cannot_be_written(app_client, monkeypatch):
    """Disk full (tests/integration/test_faults.py does it for real): 503 so Alertmanager sends it again."""
    import contextlib

    from mlops.alerting import ledger as ledger_mod

    auth = {"Authorization": "Bearer s3cret"}
    assert app_client.post("/alerts/webhook", json=WEBHOOK, headers=auth).status_code == 200
    real_db, broken = ledger_mod.AlertLedger._db, [True]

    @contextlib.contextmanager
    def read_only_db(self):
        with real_db(self) as db:
            if broken[0]:
                db.exec_driver_sql("PRAGMA query_only = ON")  # every write fails, as on a full disk
            yield db

    monkeypatch.setattr(ledger_mod.AlertLedger, "_db", read_only_db)
    later = {**WEBHOOK, "alerts": [{**WEBHOOK["alerts"][0], "fingerprint": "f2"}]}
    r = app_client.post("/alerts/webhook", json=later, headers=auth)
    assert r.status_code == 503 and "no change was made" in r.json()["detail"], r.text
    assert r.headers["retry-after"] == "30"
    assert [e["fingerprint"] for e in app_client.get("/alerts/ledger.json").json()] == ["f1"]
    broken[0] = False  # space is back: Alertmanager's next attempt is recorded
    assert app_client.post("/alerts/webhook", json=later, headers=auth).json() == {"received": 1, "new": 1}


def test_retrains_today_counts_what_the_daily_budget_counts(tmp_path):
    ledger = AlertLedger(tmp_path / "ledger.db")
    day = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    ledger.record(_alerts(1, t="t1"), now=day - 86_400)
    assert ledger.decide("churn", in_flight=[], now=day - 86_400, **POLICY).accepted  # yesterday
    ledger.record(_alerts(1, t="t2"), now=day)
    assert ledger.decide("churn", in_flight=[], now=day, **POLICY).accepted
    assert ledger.retrains_today("churn", now=day + 60) == 1
    assert ledger.retrains_today("other", now=day + 60) == 0


def test_retrain_run_ids_are_valid_airflow_run_ids_whatever_the_alert_says():
    import re

    allowed = re.compile(r"^[A-Za-z0-9_.~:+-]+$")  # Airflow's [scheduler] allowed_run_id_pattern default
    plain = {
        "name": "ModelDriftDetected",
        "fingerprint": "3b90299675b2d8a4",
        "starts_at": "2026-11-26T10:00:00Z",
    }
    evil = {"name": "x y/../<b>é", "fingerprint": "x y/../evil", "starts_at": "2026-11-26T10:00:00Z"}
    for alert in (plain, evil, {**plain, "name": ""}):
        assert allowed.match(retrain_run_id(alert)), retrain_run_id(alert)
    assert retrain_run_id(plain).startswith("retrain__ModelDriftDetected__")
    assert retrain_run_id(plain) == retrain_run_id(dict(plain))  # a retried admission: the same run
    assert retrain_run_id(plain) != retrain_run_id({**plain, "starts_at": "2026-11-26T11:00:00Z"})
    assert "evil" not in retrain_run_id(evil) and ".." not in retrain_run_id(evil)
