"""Faults injected into real components: nothing half-done is left behind, nothing is lost.

Each test breaks a real service (SIGKILL of the MLflow server, a full filesystem, a file still being
written) at a chosen point and checks what is left afterwards. The figures these tests print are in
docs/RELIABILITY.md.
"""

from __future__ import annotations

import time

import pytest
import yaml
from mlops.config.model import BUILTIN_MODELS_DIR, load_model_config
from mlops.demo.datagen import generate_churn, write_frame
from mlops.registry.aliases import CHALLENGER, CHAMPION, alias_version

from tests.helpers import MlflowServer


@pytest.fixture
def churn_cfg(tmp_path, request):
    """The churn config under a model name of its own (fast settings)."""
    name = f"churn_fault_{request.node.name.lower()[-20:]}"
    raw = yaml.safe_load((BUILTIN_MODELS_DIR / "churn.yaml").read_text())
    raw["name"] = name
    raw["training"]["params"]["max_iter"] = 40
    path = tmp_path / "models" / f"{name}.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    return load_model_config(path)


@pytest.fixture
def mlflow_crashable(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-home")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _batch(tmp_path, seed):
    path = tmp_path / f"batch-{seed}.csv"
    return path if path.exists() else write_frame(generate_churn(2000, seed=seed), path)


def _versions_of_run(client, name, run_id):
    return [
        mv
        for mv in client.search_model_versions(f"name = '{name}'")
        if mv.tags.get("airflow.run_id") == run_id
    ]


def test_mlflow_killed_mid_training_leaves_no_half_registered_version(
    tmp_path, churn_cfg, mlflow_crashable, monkeypatch
):
    """The server dies after the version is registered, before it becomes @challenger; the retry cleans up."""
    from mlflow import MlflowClient
    from mlops.gate.judge import judge_candidate, promote_candidate
    from mlops.training import train as train_mod

    uri, name = mlflow_crashable.uri, churn_cfg.registered_model_name
    client = MlflowClient(uri)
    champion = train_mod.train(churn_cfg, [_batch(tmp_path, 1)], uri)
    promote_candidate(churn_cfg, uri, champion.model_version, forced=True)

    # fail fast while the server is away (the defaults retry for minutes: right for a task, slow for a test)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    airflow_tags = {"airflow.dag_id": f"{name}_training", "airflow.run_id": "manual__fault"}
    real_set_alias = train_mod.set_alias

    def server_dies_first(*args, **kwargs):
        mlflow_crashable.stop()  # SIGKILL, between registration and the alias
        return real_set_alias(*args, **kwargs)

    monkeypatch.setattr(train_mod, "set_alias", server_dies_first)
    with pytest.raises(Exception, match=r"(?i)connect|refused|max retries"):
        train_mod.train(churn_cfg, [_batch(tmp_path, 1), _batch(tmp_path, 2)], uri, tags=airflow_tags)
    monkeypatch.setattr(train_mod, "set_alias", real_set_alias)

    mlflow_crashable.start()  # the server is back: what did the crash leave?
    left = _versions_of_run(client, name, "manual__fault")
    assert len(left) == 1, "the dead try registered a version (with its lineage, in one request)"
    assert "gate" not in left[0].tags
    assert alias_version(client, name, CHALLENGER) is None
    assert alias_version(client, name, CHAMPION) == champion.model_version

    retry = train_mod.train(churn_cfg, [_batch(tmp_path, 1), _batch(tmp_path, 2)], uri, tags=airflow_tags)
    ours = _versions_of_run(client, name, "manual__fault")
    assert [mv.version for mv in ours] == [retry.model_version], "the half-registered version is gone"
    assert retry.model_version != left[0].version
    assert alias_version(client, name, CHALLENGER) == retry.model_version
    assert alias_version(client, name, CHAMPION) == champion.model_version, "the champion is untouched"

    # the surviving version gets its gate record like any other: complete, not half
    judge_candidate(churn_cfg, uri, retry.model_version, retry.run_id)
    assert client.get_model_version(name, retry.model_version).tags["gate"] in ("passed", "failed")
    # a judged version is a record: another try of the same run never deletes it
    from mlops.registry.aliases import remove_unjudged

    assert remove_unjudged(client, name, f"{name}_training", "manual__fault") == []
    print(
        f"\nFAULT mlflow-mid-training: orphan v{left[0].version} removed by the retry; v{retry.model_version} kept"
    )


def test_mlflow_killed_at_the_end_of_a_rollout_holds_traffic_on_stable_until_recorded(
    tmp_path, mlflow_crashable, monkeypatch
):
    """A canary passes, then the registry dies: no alias moves, traffic goes back to stable, nothing fails."""
    import json

    from mlflow import MlflowClient
    from mlops.config.model import AnalysisConfig, get_model_config
    from mlops.config.settings import Settings, get_settings
    from mlops.demo.traffic import Traffic
    from mlops.deploy import service
    from mlops.deploy.local.target import LocalTarget
    from mlops.deploy.rollout import PROMOTED, advance, plan
    from mlops.deploy.target import DeploymentError
    from mlops.registry.aliases import set_alias

    from tests.helpers import free_port, register_churn_model

    uri, name = mlflow_crashable.uri, "churn_fault_rollout"
    cfg = get_model_config("churn", get_settings().models_dir).model_copy(update={"name": name})
    v1, v2 = register_churn_model(uri, name, seed=1), register_churn_model(uri, name, seed=2)
    client = MlflowClient(uri)
    set_alias(client, name, CHAMPION, v1)
    target = LocalTarget(
        name, Settings(home=tmp_path / "home", mlflow_tracking_uri=uri, serving_port=free_port())
    )
    frame = generate_churn(200, seed=9)[cfg.features.all]
    rows = json.loads(frame.to_json(orient="records"))
    policy = AnalysisConfig(window_s=3, min_requests=15, max_wait_s=40)
    try:
        target.ensure_stable(v1)
        with Traffic(target.endpoint(), rows) as load:
            target.deploy("canary", v2)
            state, wait = advance(target, plan("canary", v2, v1, [20, 100]), policy)
            while wait is not None:
                time.sleep(wait)
                state, wait = advance(target, state, policy)
            assert state["outcome"] == PROMOTED, state["reasons"]
            assert target.weights() == {"stable": 0, "canary": 100}, "passed, not yet stable"

            mlflow_crashable.stop()  # SIGKILL: the registry is away when the rollout ends
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
            t0 = time.monotonic()
            for _ in range(2):  # two deferrals of the operator, each finding the registry still away
                state, result, retry = service.conclude(cfg, uri, target, state)
                assert result is None and retry == service.REGISTRY_RETRY_S
                assert target.weights() == {"stable": 100, "canary": 0}, "traffic held on stable"
                assert target.backends()["stable"].version == v1
                time.sleep(2)
            down_s = time.monotonic() - t0

            mlflow_crashable.start()
            state, result, retry = service.conclude(cfg, uri, target, state)
            assert retry is None and result == {"champion": v2, "previous": v1}
            assert target.backends()["stable"].version == v2 and set(target.backends()) == {"stable"}
            time.sleep(1)
        assert alias_version(client, name, CHAMPION) == v2
        rollout_tag = json.loads(client.get_model_version(name, v2).tags["deploy.rollout"])
        assert rollout_tag["outcome"] == PROMOTED
        assert load.failed == [], load.failed[:5]
        assert load.by_version.get(v1, 0) > 0 and load.by_version.get(v2, 0) > 0
        print(
            f"\nFAULT mlflow-down-at-rollout-end: {load.ok} requests ok, {len(load.failed)} failed; "
            f"registry away {down_s:.1f} s, traffic on stable meanwhile; @champion moved only after the record"
        )

        # Past the patience: the candidate is removed, the champion stays, the error says why.
        target.deploy("canary", v1)
        state = plan("canary", v1, v2, [100])
        state.update(outcome=PROMOTED, reasons=["every analysis window passed"], history=[])
        mlflow_crashable.stop()
        clock = iter([0.0, service.REGISTRY_PATIENCE_S + 1])
        with pytest.raises(DeploymentError, match="unreachable for .* nothing was promoted"):
            for _ in range(2):
                service.conclude(cfg, uri, target, state, now=lambda: next(clock))
        assert set(target.backends()) == {"stable"} and target.backends()["stable"].version == v2
    finally:
        target.stop_all()


def test_a_batch_still_being_uploaded_is_never_judged_until_complete(tmp_path, churn_cfg):
    """A real writer process appends a CSV in chunks while validation runs: left alone, then accepted."""
    import subprocess
    import sys

    from mlops.data.io import file_sha256
    from mlops.data.landing import landing_dir, quarantine_dir, validate_landing

    data_root = tmp_path / "data"
    source = _batch(tmp_path, 7)
    dest = landing_dir(data_root, churn_cfg.name) / "uploading.csv"
    dest.parent.mkdir(parents=True)
    writer = subprocess.Popen(  # 40 chunks, 0.15 s apart: about 6 s of upload
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "data = open(sys.argv[1], 'rb').read(); n = len(data) // 40 + 1\n"
            "with open(sys.argv[2], 'wb') as f:\n"
            "    for i in range(0, len(data), n):\n"
            "        f.write(data[i:i + n]); f.flush(); time.sleep(0.15)\n",
            str(source),
            str(dest),
        ]
    )
    try:
        checks = []
        while writer.poll() is None:
            checks.append(validate_landing(churn_cfg, data_root, tmp_path / "reports", probe_s=1.0))
            time.sleep(0.05)
        assert writer.wait() == 0
    finally:
        writer.kill()
    assert checks, "validation ran while the file was written"
    complete = {"path": str(dest), "sha256": file_sha256(source)}
    # never judged while partial: nothing refused; accepted only with the whole file's bytes (a last pass
    # may start after the final chunk, while the writer is still exiting)
    assert all(c.rejected == [] for c in checks), [c.rejected for c in checks]
    assert all(c.good in ([], [complete]) for c in checks), [c.good for c in checks]
    assert sum(c.waiting == ["uploading.csv"] for c in checks) >= 2, "the growing file was seen and skipped"
    assert all(c.waiting in ([], ["uploading.csv"]) for c in checks)
    assert not quarantine_dir(data_root, churn_cfg.name).exists(), "nothing quarantined by a race"

    done = validate_landing(churn_cfg, data_root, tmp_path / "reports", settle_s=0)
    assert done.good == [complete] and done.waiting == []
    seen = sum(c.waiting == ["uploading.csv"] for c in checks)
    print(
        f"\nFAULT partial-upload: {seen} passes left the growing file alone, 0 judged; accepted once complete"
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs as the state folder (root only: .ci/run runs as root; elsewhere the test skips)."""
    import os
    import subprocess

    mount = tmp_path / "state"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: cannot mount a tmpfs ({proc.stderr.strip()}): the disk-full test needs root")
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder):
    """Write a filler file until the filesystem is full; returns it (delete it to free the space)."""
    import errno

    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def _alert(n):
    from mlops.alerting import Alert

    return Alert(
        name="ModelDriftDetected",
        fingerprint=f"fp{n}",
        starts_at="2026-12-05T10:00:00Z",
        labels={"alertname": "ModelDriftDetected", "model": "churn", "model_version": "3"},
        annotations={"description": "x" * 200},
        source="test",
    )


def test_disk_full_the_ledger_refuses_loudly_and_keeps_what_it_had(small_disk):
    import sqlite3

    from mlops.alerting import LedgerUnavailable, open_ledger

    ledger = open_ledger(small_disk)
    assert ledger.record([_alert(i) for i in range(3)]) == 3
    filler = _fill(small_disk)
    recorded, refused = 3, None
    for i in range(200):  # deliveries of 20 alerts until the database or its WAL needs a page it cannot get
        try:
            recorded += ledger.record([_alert(1000 + 20 * i + j) for j in range(20)])
        except LedgerUnavailable as exc:
            refused = exc
            break
    assert refused is not None and "cannot be used now" in str(refused), refused
    filler.unlink()  # space is back (reads may fail too while the disk is full: same error, no change)
    assert len(ledger.entries("churn", limit=10_000)) == recorded, "the refused delivery left nothing behind"
    # the refused alerts are recorded when Alertmanager sends them again
    assert ledger.record([_alert(1000 + 20 * i + j) for j in range(20)]) == 20
    assert len(ledger.entries("churn", limit=10_000)) == recorded + 20
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"\nFAULT disk-full ledger: delivery {i + 1} refused ({refused}); 0 rows lost, integrity ok")


def test_disk_full_serving_keeps_answering_and_the_prediction_log_is_not_corrupted(small_disk, tmp_path):
    import json
    import os
    import subprocess
    from pathlib import Path

    import httpx

    from tests.helpers import VENV_BIN, free_port, save_churn_model, wait_http

    model = tmp_path / "model"
    _, cfg = save_churn_model(model, seed=5)
    rows = json.loads(generate_churn(50, seed=8)[cfg.features.all].to_json(orient="records"))
    port, preds = free_port(), small_disk / "predictions" / "churn"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLOPS_HOME": str(small_disk),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [str(Path(VENV_BIN) / "mlops"), "serve", "--model-uri", str(model), "--port", str(port)]
    argv += ["--workers", "2", "--model-version", "3", "--predictions-dir", str(preds)]
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def score(n):
        codes = []
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as c:
            for _ in range(n):
                codes.append(c.post("/invocations", json={"dataframe_records": rows}).status_code)
        return codes

    def counter(name):
        text = httpx.get(f"{base}/metrics", trust_env=False).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))

    try:
        wait_http(f"{base}/ready", timeout=120)
        assert set(score(20)) == {200}
        time.sleep(1)
        written_before = counter("mlops_prediction_log_records_total")
        assert written_before == 20 * len(rows)
        filler = _fill(small_disk)
        codes = score(200)  # 200 x 50 rows: far more than the buffer; the disk has no room left
        time.sleep(1.5)
        assert set(codes) == {200}, "serving keeps answering with a full disk"
        failed = counter("mlops_prediction_log_failed_total")
        assert failed > 0
        assert (
            "prediction log: cannot write" in log_path.read_text() and "No space left" in log_path.read_text()
        )

        filler.unlink()
        time.sleep(6)  # RETRY_AFTER_FAILURE_S: then writing resumes by itself
        assert set(score(20)) == {200}
        time.sleep(1.5)
        written_after = counter("mlops_prediction_log_records_total")
        assert written_after > written_before, "the log resumed once space was back"
        lines = [line for f in sorted(preds.glob("*.jsonl")) for line in f.read_bytes().splitlines()]
        assert all(json.loads(line)["model_version"] == "3" for line in lines), "no torn or partial line"
        assert len(lines) == written_after, (len(lines), written_after)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(
        f"\nFAULT disk-full serving: 240 requests, 0 failed; {failed:.0f} log rows lost to ENOSPC (counted), "
        f"{len(lines)} lines on disk, all whole"
    )
