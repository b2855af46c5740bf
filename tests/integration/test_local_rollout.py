"""Rollouts on the local target with real model servers, the real router and traffic the whole time."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from mlops.config.model import AnalysisConfig, get_model_config
from mlops.config.settings import Settings, get_settings
from mlops.demo.datagen import generate_churn
from mlops.demo.traffic import Traffic
from mlops.deploy.local import procs
from mlops.deploy.local.target import LocalTarget
from mlops.deploy.rollout import PROMOTED, ROLLED_BACK, plan, run
from mlops.deploy.target import DeploymentError

from tests.helpers import free_port, register_churn_model

POLICY = AnalysisConfig(window_s=4, min_requests=20, max_wait_s=40)


@pytest.fixture(scope="module")
def versions(mlflow_uri):
    name = "churn_rollout"
    return name, {
        "v1": register_churn_model(mlflow_uri, name, seed=1),
        "v2": register_churn_model(mlflow_uri, name, seed=2),
        "bad": register_churn_model(mlflow_uri, name, seed=3, constant=True),
    }


@pytest.fixture(scope="module")
def target(versions, mlflow_uri, tmp_path_factory):
    name, _ = versions
    s = Settings(
        home=tmp_path_factory.mktemp("home"), mlflow_tracking_uri=mlflow_uri, serving_port=free_port()
    )
    t = LocalTarget(name, s, ready_timeout=120)
    yield t
    t.stop_all()


@pytest.fixture(scope="module")
def rows():
    cfg = get_model_config("churn", get_settings().models_dir)
    frame = generate_churn(200, seed=9)[cfg.features.all]
    return json.loads(frame.to_json(orient="records"))


def test_canary_promotes_a_good_model_then_rolls_back_a_bad_one_with_zero_failed_requests(
    target, versions, rows
):
    _, v = versions
    target.ensure_stable(v["v1"])
    assert target.weights() == {"stable": 100}
    with Traffic(target.endpoint(), rows) as load:
        target.deploy("canary", v["v2"])
        state = run(target, plan("canary", v["v2"], v["v1"], [10, 50, 100]), POLICY)
        assert state["outcome"] == PROMOTED, state["reasons"]
        assert [h["phase"] for h in state["history"]] == [10, 50, 100]
        assert all(h["decision"] == "pass" for h in state["history"])
        assert target.backends()["stable"].version == v["v2"]
        assert set(target.backends()) == {"stable"}

        target.deploy("canary", v["bad"])
        state = run(target, plan("canary", v["bad"], v["v2"], [10, 50, 100]), POLICY)
        assert state["outcome"] == ROLLED_BACK
        assert "score distribution shifted" in state["reasons"][0], state["reasons"]
        assert state["history"][-1]["phase"] == 10  # caught at the first step
        assert target.backends()["stable"].version == v["v2"]
        assert set(target.backends()) == {"stable"} and target.weights() == {"stable": 100}
    assert load.failed == [], load.failed[:5]
    assert load.ok > 200
    assert load.by_version.get(v["v2"], 0) > 0 and load.by_version.get(v["bad"], 0) > 0


def test_blue_green_keeps_blue_warm_and_low_traffic_is_inconclusive(target, versions, rows):
    _, v = versions
    target.ensure_stable(v["v2"])
    with Traffic(target.endpoint(), rows, clients=2) as load:
        target.deploy("green", v["v1"])
        state = run(target, plan("blue_green", v["v1"], v["v2"], [100]), POLICY)
        assert state["outcome"] == PROMOTED, state["reasons"]
        assert [h["phase"] for h in state["history"]] == ["reference", 100]
        b = target.backends()
        assert b["stable"].version == v["v1"] and b["previous"].version == v["v2"]
        assert target.weights() == {"stable": 100, "previous": 0}
    assert load.failed == [], load.failed[:5]

    # No traffic at all: the canary can neither pass nor fail by accident -> inconclusive, rolled back.
    target.deploy("canary", v["v2"])
    quiet = AnalysisConfig(window_s=1, min_requests=20, max_wait_s=3)
    state = run(target, plan("canary", v["v2"], v["v1"], [10, 100]), quiet)
    assert state["outcome"] == ROLLED_BACK
    assert "inconclusive" in state["reasons"][0]
    assert state["history"][-1]["decision"] == "inconclusive"
    assert target.backends()["stable"].version == v["v1"]


def test_target_refuses_unsafe_operations(target, versions):
    _, v = versions
    with pytest.raises(DeploymentError, match="summing to 100"):
        target.set_weights({"stable": 50})
    with pytest.raises(DeploymentError, match="not deployed"):
        target.set_weights({"stable": 50, "canary": 50})
    with pytest.raises(DeploymentError, match="takes 100% of the traffic"):
        target.remove("stable")
    with pytest.raises(DeploymentError, match="takes 100% of the traffic"):
        target.deploy("stable", v["bad"])


def _wait(check, timeout: float) -> float:
    """Seconds until ``check()`` is true; fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"not within {timeout:.0f}s"
        time.sleep(0.2)
    return time.monotonic() - t0


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_supervision_restarts_a_killed_model_server_and_router_under_load(target, versions, rows):
    """kill -9 of a backend: at most the in-flight requests fail, the rest go to the other backend, and
    the server is back within 30 s; kill -9 of the router: the endpoint answers again within 10 s."""
    _, v = versions
    target.ensure_stable(v["v1"])
    assert target.supervisor_running()
    canary = target.deploy("canary", v["v2"])
    target.set_weights({"stable": 50, "canary": 50})
    clients = 2
    with Traffic(target.endpoint(), rows, clients=clients) as load:
        _wait(lambda: load.ok > 100, 60)
        with target.table() as state:
            pidfile = Path(state["backends"]["canary"]["pidfile"])
        os.killpg(procs.read_pid(pidfile), signal.SIGKILL)
        back = _wait(lambda: target.restarts().get("canary") == 1 and _up(f"{canary.url}/ready"), 30)
        failed_backend = len(load.failed)
        ok_before = load.ok
        _wait(lambda: load.by_version.get(v["v2"], 0) > 0 and load.ok > ok_before + 50, 30)

        os.killpg(procs.read_pid(target.dir / "router.pid"), signal.SIGKILL)
        killed = time.monotonic()
        _wait(lambda: _up(f"{target.endpoint()}/router/health"), 10)
        endpoint_back = time.monotonic() - killed
        ok_before = load.ok
        _wait(lambda: load.ok > ok_before + 50, 30)
    print(f"backend back in {back:.1f}s with {failed_backend} failed requests; endpoint back in "
          f"{endpoint_back:.1f}s; {load.ok} ok, {len(load.failed)} failed in all")  # fmt: skip
    assert failed_backend <= clients, load.failed[:5]  # only what was in flight on the killed server
    restarts = target.restarts()  # (a blue-green test before may have left a warm `previous`: 0 too)
    assert {k: n for k, n in restarts.items() if n} == {"canary": 1, "router": 1}, restarts
    assert restarts["stable"] == 0
    log = (target.dir / "supervisor.log").read_text()
    assert "canary (v" in log and "restarted (restart 1" in log and "router on port" in log
    target.set_weights({"stable": 100})
    target.remove("canary")
    assert set(target.backends()) - {"previous"} == {"stable"}  # the warm `previous` is not ours


def test_an_endpoint_token_protects_every_backend_and_the_smoke_test_sends_it(
    versions, mlflow_uri, rows, tmp_path
):
    """With ``endpoint_token`` set the local target's servers require it (restarts too); the smoke test
    and client traffic that send it pass, a request without it gets 401 through the router."""
    import pandas as pd
    from mlops.config.model import SmokeConfig
    from mlops.deploy.smoke import smoke_test

    name, v = versions
    token = "endpoint-token-for-the-rollout-test"
    s = Settings(
        home=tmp_path, mlflow_tracking_uri=mlflow_uri, serving_port=free_port(), endpoint_token=token
    )
    t = LocalTarget(name, s, ready_timeout=120)
    try:
        t.ensure_stable(v["v1"])
        canary = t.deploy("canary", v["v2"])
        token_file = t.dir / "api-token"
        assert token_file.stat().st_mode & 0o777 == 0o600 and token_file.read_text().strip() == token
        with t.table() as state:
            pids = [procs.read_pid(Path(b["pidfile"])) for b in state["backends"].values()]
        for pid in pids:  # the file is the only place: not in the servers' argv or environment
            assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        features = pd.DataFrame(rows)
        cfg = SmokeConfig(rows=20, requests=5, max_p95_ms=5000)
        good = smoke_test(canary.url, v["v2"], features, None, cfg, headers=s.endpoint_headers())
        assert good.passed, good.failures()
        bare = smoke_test(canary.url, v["v2"], features, None, cfg)
        assert not bare.passed and any("401" in f for f in bare.failures()), bare.failures()
        one = {"dataframe_records": rows[:1]}
        assert httpx.post(f"{t.endpoint()}/invocations", json=one, trust_env=False).status_code == 401
        with Traffic(t.endpoint(), rows, clients=1, headers=s.endpoint_headers()) as load:
            t.set_weights({"stable": 50, "canary": 50})
            _wait(lambda: load.ok > 40, 60)
        assert load.failed == [] and set(load.by_version) == {v["v1"], v["v2"]}
        # a restarted server keeps the token (the supervisor has no secret: it passes the file on)
        with t.table() as state:
            pidfile = Path(state["backends"]["canary"]["pidfile"])
        os.killpg(procs.read_pid(pidfile), signal.SIGKILL)
        _wait(lambda: t.restarts().get("canary") == 1 and _up(f"{canary.url}/ready"), 30)
        assert httpx.post(f"{canary.url}/invocations", json=one, trust_env=False).status_code == 401
        ok = httpx.post(f"{canary.url}/invocations", json=one, headers=s.endpoint_headers(), trust_env=False)
        assert ok.status_code == 200, ok.text
    finally:
        t.stop_all()
