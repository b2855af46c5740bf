"""The rollout policy and its analysis, on a scripted fake target (pure logic; the real local target
is exercised in tests/integration/test_local_rollout.py)."""

from __future__ import annotations

import math

import pytest
from mlops.deploy.analysis import (
    FAIL,
    PASS,
    WAIT,
    analyze_window,
    histogram_ks_distance,
    histogram_quantile,
    snapshot_from_dict,
    snapshot_from_text,
    snapshot_to_dict,
)
from mlops.deploy.rollout import PROMOTED, ROLLED_BACK, advance, plan, run
from mlops.deploy.target import Backend, MetricsSnapshot
from mlops.modelconfig import AnalysisConfig, DeploymentConfig

INF = math.inf
LAT = (0.005, 0.01, 0.05, 0.1, INF)
SCORE = (0.25, 0.5, 0.75, 1.0, INF)


def snap(requests=0, errors=0, lat=(), score=(), t=0.0) -> MetricsSnapshot:
    """Cumulative buckets from per-bucket counts."""

    def cum(bounds, counts):
        out, acc = {}, 0.0
        for le, c in zip(bounds, list(counts) + [0] * (len(bounds) - len(counts)), strict=True):
            acc += c
            out[le] = acc
        return out

    return MetricsSnapshot(requests, errors, cum(LAT, lat), cum(SCORE, score), taken_at=t)


POLICY = AnalysisConfig(window_s=10, min_requests=50, max_wait_s=30, p95_slack_ms=0)


def test_histogram_quantile_interpolates_like_promql():
    buckets = snap(lat=(0, 50, 50)).latency_buckets  # half in (5,10] ms, half in (10,50] ms
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.01 + 0.04 * 0.9)
    assert histogram_quantile(0.95, snap().latency_buckets) is None
    assert histogram_quantile(0.99, snap(lat=(0, 0, 0, 0, 10)).latency_buckets) == 0.1  # +Inf: top bound


def test_ks_distance_of_score_histograms():
    same = histogram_ks_distance(
        snap(score=(10, 10, 10, 10)).score_buckets, snap(score=(20, 20, 20, 20)).score_buckets
    )
    assert same == 0
    const = histogram_ks_distance(
        snap(score=(0, 40)).score_buckets, snap(score=(10, 10, 10, 10)).score_buckets
    )
    assert const == pytest.approx(0.5)


def test_analysis_waits_for_enough_canary_traffic_never_judging_early():
    v = analyze_window(snap(10, 10, lat=(10,)), snap(500, lat=(500,)), POLICY, 10)
    assert v.decision == WAIT and "10 canary requests" in v.reasons[0]


@pytest.mark.parametrize(
    ("canary", "reason"),
    [
        (snap(100, 5, lat=(100,), score=(25, 25, 25, 25)), "error rate 5.00% (5/100) significantly above"),
        (
            snap(100, 0, lat=(0, 0, 0, 100), score=(25, 25, 25, 25)),
            "canary slower: 100/100 requests over 10 ms",
        ),
        (snap(100, 0, lat=(100,), score=(0, 100)), "score distribution shifted"),
    ],
)
def test_analysis_fails_on_each_criterion(canary, reason):
    stable = snap(900, 0, lat=(900,), score=(225, 225, 225, 225))
    v = analyze_window(canary, stable, POLICY, 10)
    assert v.decision == FAIL and any(reason in r for r in v.reasons), v.reasons


def test_a_few_unlucky_requests_never_fail_a_small_canary():
    stable = snap(900, 0, lat=(900,), score=(225, 225, 225, 225))
    # 1 error and 3 slow requests of 60, scores a little off: chance at this size, not a regression.
    canary = snap(60, 1, lat=(57, 0, 3), score=(20, 15, 15, 10))
    v = analyze_window(canary, stable, AnalysisConfig(min_requests=50), 10)
    assert v.decision == PASS, v.reasons


def test_analysis_passes_a_canary_like_stable_and_uses_reference_when_stable_is_idle():
    stable = snap(900, 1, lat=(800, 100), score=(225, 225, 225, 225))
    canary = snap(100, 0, lat=(90, 10), score=(25, 25, 25, 25))
    v = analyze_window(canary, stable, POLICY, 10)
    assert v.decision == PASS and v.compared_with == "stable"
    v = analyze_window(canary, None, POLICY, 10, reference=v.stable, reference_scores=stable.score_buckets)
    assert v.decision == PASS and v.compared_with == "reference"


def test_snapshot_parsing_of_a_real_metrics_page_and_dict_round_trip():
    text = """# TYPE mlops_http_requests_total counter
mlops_http_requests_total{route="/invocations",status="200",variant="canary",model_version="2"} 90.0
mlops_http_requests_total{route="/invocations",status="500",variant="canary",model_version="2"} 3.0
mlops_http_requests_total{route="/predict",status="200",variant="canary",model_version="2"} 7.0
mlops_http_requests_total{route="/metrics",status="200",variant="canary",model_version="2"} 50.0
# TYPE mlops_http_request_duration_seconds histogram
mlops_http_request_duration_seconds_bucket{le="0.01",route="/invocations",status="200",variant="canary",model_version="2"} 80.0
mlops_http_request_duration_seconds_bucket{le="+Inf",route="/invocations",status="200",variant="canary",model_version="2"} 90.0
mlops_http_request_duration_seconds_bucket{le="0.01",route="/metrics",status="200",variant="canary",model_version="2"} 50.0
mlops_http_request_duration_seconds_bucket{le="+Inf",route="/metrics",status="200",variant="canary",model_version="2"} 50.0
# TYPE mlops_prediction_score histogram
mlops_prediction_score_bucket{le="0.5",variant="canary",model_version="2"} 60.0
mlops_prediction_score_bucket{le="+Inf",variant="canary",model_version="2"} 97.0
"""
    s = snapshot_from_text(text, taken_at=5.0)
    assert (s.requests, s.errors) == (100.0, 3.0)  # /metrics scrapes are not traffic
    assert s.latency_buckets == {0.01: 80.0, INF: 90.0}
    assert s.score_buckets == {0.5: 60.0, INF: 97.0}
    assert snapshot_from_dict(snapshot_to_dict(s)) == s


def test_minus_treats_a_counter_reset_as_a_restart_from_zero():
    assert snap(30).minus(snap(100)).requests == 30
    assert snap(130).minus(snap(100)).requests == 30


class FakeTarget:
    """Backends whose metrics grow by scripted per-window amounts; records every call."""

    kind = "fake"

    def __init__(self, canary_window, stable_window=None):
        self.w = {"stable": 100}
        self.b = {
            "stable": Backend("stable", "1", "http://stable"),
            "canary": Backend("canary", "2", "http://c"),
        }
        self.calls: list[tuple] = []
        self.totals = {r: snap() for r in self.b}
        self.windows = {
            "canary": canary_window,
            "stable": stable_window or snap(900, lat=(900,), score=(225,) * 4),
        }

    def endpoint(self):
        return "http://endpoint"

    def backends(self):
        return dict(self.b)

    def weights(self):
        return dict(self.w)

    def deploy(self, role, version, image=None):
        raise AssertionError("the rollout never deploys")

    def set_weights(self, weights):
        self.calls.append(("weights", dict(weights)))
        self.w = {r: weights.get(r, 0) for r in self.b}

    def promote(self, role, keep_previous=False):
        self.calls.append(("promote", role, keep_previous))
        self.b = {"stable": self.b[role]}
        self.w = {"stable": 100}

    def remove(self, role):
        assert self.w.get(role, 0) == 0, "removed while taking traffic"
        self.calls.append(("remove", role))
        self.b.pop(role, None)

    def snapshot(self, role):
        return self.totals[role]

    def tick(self):
        """One window of traffic, split by the current weights."""
        for role in self.b:
            share = self.w.get(role, 0)
            if share:
                win = self.windows["canary" if role == "canary" else "stable"]
                t = self.totals[role]
                self.totals[role] = MetricsSnapshot(
                    t.requests + win.requests,
                    t.errors + win.errors,
                    {k: t.latency_buckets.get(k, 0) + v for k, v in win.latency_buckets.items()},
                    {k: t.score_buckets.get(k, 0) + v for k, v in win.score_buckets.items()},
                )


def drive(target, state, policy=POLICY):
    clock = [0.0]

    def sleep(s):
        clock[0] += s
        target.tick()

    state, wait = advance(target, state, policy, now=lambda: clock[0])
    while wait is not None:
        sleep(wait)
        state, wait = advance(target, state, policy, now=lambda: clock[0])
    return state


GOOD = snap(100, 0, lat=(100,), score=(25,) * 4)


def test_canary_walks_every_step_then_promotes():
    t = FakeTarget(GOOD)
    state = drive(t, plan("canary", "2", "1", [10, 50, 100]))
    assert state["outcome"] == PROMOTED
    assert [c for c in t.calls if c[0] == "weights"] == [
        ("weights", {"canary": 10, "stable": 90}),
        ("weights", {"canary": 50, "stable": 50}),
        ("weights", {"canary": 100}),
    ]
    assert t.calls[-1] == ("promote", "canary", False)
    assert state["history"][-1]["compared_with"] == "reference"  # stable idle at 100 %


def test_failed_step_rolls_back_all_traffic_and_removes_the_canary():
    t = FakeTarget(snap(100, 20, lat=(100,), score=(25,) * 4))
    state = drive(t, plan("canary", "2", "1", [10, 50, 100]))
    assert state["outcome"] == ROLLED_BACK and "error rate" in state["reasons"][0]
    assert t.calls[-2:] == [("weights", {"stable": 100}), ("remove", "canary")]
    assert len(state["history"]) == 1


def test_no_traffic_is_inconclusive_never_a_pass():
    t = FakeTarget(snap(0))
    state = drive(t, plan("canary", "2", "1", [10, 100]))
    assert state["outcome"] == ROLLED_BACK and "inconclusive" in state["reasons"][0]
    assert state["history"][-1]["decision"] == "inconclusive"


def test_blue_green_measures_stable_first_then_switches_and_keeps_blue_warm():
    t = FakeTarget(GOOD)
    t.b["green"] = t.b.pop("canary")
    t.totals["green"] = t.totals.pop("canary")
    t.windows["green"] = t.windows["canary"]
    state = drive(t, plan("blue_green", "2", "1", [100]))
    assert state["outcome"] == PROMOTED
    assert [h["phase"] for h in state["history"]] == ["reference", 100]
    assert t.calls[-1] == ("promote", "green", True)


def test_first_deployment_goes_straight_to_production():
    t = FakeTarget(GOOD)
    state = run(t, plan("canary", "2", None, [10, 100]), POLICY, sleep=lambda s: None)
    assert state["outcome"] == PROMOTED and state["history"][0]["phase"] == "direct"


def test_plan_and_config_refuse_bad_input():
    with pytest.raises(ValueError, match="unknown strategy"):
        plan("yolo", "2", "1", [100])
    for steps in ([50, 10, 100], [10, 50], [0, 100], []):
        with pytest.raises(ValueError, match="steps must rise"):
            DeploymentConfig(steps=steps)
