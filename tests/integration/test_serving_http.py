"""`mlops serve` as a real process: 2 gunicorn/uvicorn workers, concurrent HTTP, summed metrics, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import VENV_BIN, free_port, save_churn_model, wait_http

REQUESTS = 200
THREADS = 8


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from mlops.demo.datagen import generate_churn

    path = tmp_path_factory.mktemp("model") / "churn"
    pipe, cfg = save_churn_model(path, seed=5)
    rows = generate_churn(REQUESTS, seed=8)[cfg.features.all]
    return path, pipe, rows


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and labels.items() <= s.labels.items():
                total += s.value
    return total


def test_two_workers_concurrent_requests_metrics_and_clean_stop(saved_model, tmp_path):
    path, pipe, rows = saved_model
    port = free_port()
    preds_dir = tmp_path / "predictions"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLOPS_HOME": str(tmp_path / "home"),
        "MLOPS_IMAGE_DIGEST": "sha256:" + "b" * 64,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [
        str(Path(VENV_BIN) / "mlops"),
        "serve",
        "--model-uri",
        str(path),
        "--port",
        str(port),
        "--workers",
        "2",
        "--variant",
        "canary",
        "--model-version",
        "3",
        "--predictions-dir",
        str(preds_dir),
    ]
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"{base}/ready", timeout=120)  # 200 only once both workers loaded and warmed the model
        version = httpx.get(f"{base}/version", trust_env=False).json()
        assert version["model_version"] == "3" and version["variant"] == "canary"
        assert version["image_digest"] == "sha256:" + "b" * 64

        records = json.loads(rows.to_json(orient="records"))
        expected = pipe.predict(rows).tolist()
        results: dict[int, tuple[int, object]] = {}
        lock = threading.Lock()
        deadline = time.monotonic() + 120

        def worker(k: int) -> None:
            with httpx.Client(base_url=base, timeout=30, trust_env=False) as c:
                for i in range(k, REQUESTS, THREADS):
                    if time.monotonic() > deadline:
                        return
                    cols = list(records[i])
                    body = {"dataframe_split": {"columns": cols, "data": [[records[i][c] for c in cols]]}}
                    r = c.post("/invocations", json=body)
                    with lock:
                        results[i] = (r.status_code, r.json().get("predictions"))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        assert len(results) == REQUESTS
        assert all(status == 200 for status, _ in results.values())
        assert [results[i][1] for i in range(REQUESTS)] == [[p] for p in expected]

        text = httpx.get(f"{base}/metrics", trust_env=False).text
        labels = {"variant": "canary", "model_version": "3"}
        ok = {"route": "/invocations", "status": "200", **labels}
        assert _metric(text, "mlops_http_requests_total", **ok) == REQUESTS
        assert _metric(text, "mlops_http_request_duration_seconds_count", **ok) == REQUESTS
        assert _metric(text, "mlops_prediction_score_count", **labels) == REQUESTS
        assert _metric(text, "mlops_predictions_total", **labels) == REQUESTS
        assert _metric(text, "mlops_feature_value_count", feature="age", **labels) == REQUESTS
        assert _metric(text, "mlops_http_requests_in_flight", **labels) >= 0
        # a second scrape (possibly answered by the other worker) sees the same totals
        text2 = httpx.get(f"{base}/metrics", trust_env=False).text
        assert _metric(text2, "mlops_http_requests_total", **ok) == REQUESTS
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    log_text = (tmp_path / "serve.log").read_text(errors="replace")
    assert code == 0, log_text[-3000:]
    files = sorted(preds_dir.glob("predictions-*.jsonl"))
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert len(lines) == REQUESTS, log_text[-3000:]  # every worker flushed its queue on SIGTERM
    assert {ln["variant"] for ln in lines} == {"canary"} and {ln["model_version"] for ln in lines} == {"3"}
    assert sorted(ln["prediction"] for ln in lines) == sorted(expected)
