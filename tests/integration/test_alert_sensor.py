"""The retraining sensor's trigger against real Alertmanager + Prometheus + Pushgateway (Debian packages):
it survives an Alertmanager outage (logs, backs off, keeps waiting) and fires once the alert arrives."""

from __future__ import annotations

import asyncio
import re
import time

from mlops.alerting.ledger import open_ledger
from mlops.monitoring.metrics import drift_samples, push_samples

SUMMARY = {
    "model": "churn_outage", "model_version": "7", "dvc_rev": "abc123", "status": "drift",
    "drifted_features": ["monthly_charges"], "drifted_share": 0.3, "rows": 500,
    "report": "http://127.0.0.1:8080/mlops/reports/drift/r.html", "features": [],
}  # fmt: skip


def test_sensor_survives_an_alertmanager_outage_and_resumes(monitoring_stack, tmp_path, monkeypatch, capfd):
    from mlops_airflow.alerts import AlertWaitTrigger

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    source = {"kind": "alertmanager", "alertmanager_url": monitoring_stack.alertmanager_url,
              "prometheus_url": monitoring_stack.prometheus_url}  # fmt: skip
    trigger = AlertWaitTrigger("churn_outage", source, poll_interval=1.0, max_wait_s=240)
    monitoring_stack.stop_alertmanager()

    async def scenario():
        waiting = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(8)  # Alertmanager is down: the trigger logs, backs off, keeps waiting
        assert not waiting.done(), "the trigger ended while its source was down"
        await asyncio.to_thread(monitoring_stack.start_alertmanager)
        await asyncio.to_thread(
            push_samples, drift_samples(SUMMARY), monitoring_stack.pushgateway_url,
            {"model": "churn_outage"},
        )  # fmt: skip
        t0 = time.monotonic()
        event = await asyncio.wait_for(waiting, timeout=180)
        return event, time.monotonic() - t0

    event, seconds = asyncio.run(scenario())
    assert event.payload == {"status": "alert", "pending": 1}
    logged = capfd.readouterr()
    lines = (logged.out + logged.err).splitlines()  # the trigger logs through Airflow's structlog
    errors = [ln for ln in lines if "still waiting; next try in" in ln]
    assert len(errors) >= 2, "each failed poll is logged"
    delays = [float(re.search(r"next try in (\d+)s", ln)[1]) for ln in errors]
    assert delays == sorted(delays) and delays[-1] > delays[0], f"no backoff: {delays}"
    assert any("alert source is back" in ln for ln in lines)
    (entry,) = open_ledger(tmp_path).entries("churn_outage")
    assert entry["name"] == "ModelDriftDetected" and entry["source"] == "alertmanager"
    assert entry["alert"]["labels"]["model_version"] == "7" and entry["decision"] is None
    assert entry["alert"]["labels"]["drifted_features"] == "monthly_charges"
    print(f"alert seen {seconds:.1f}s after the metric was pushed (rule for: 10s + evaluation + grouping)")
