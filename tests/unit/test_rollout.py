"""The rollout policy and its analysis, on a scripted fake target (pure logic; the real local target
is exercised in tests/integration/test_local_rollout.py)."""

from __future__ import annotations

import math

import pytest
from mlops.config.model import AnalysisConfig, DeploymentConfig
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
from mlops.deploy.rollout import (
    PROMOTED,
    ROLLED_BACK,
    advance,
    complete,
    describe_window,
    live_requests,
    plan,
    run,
)
from mlops.deploy.service import _compact
from mlops.deploy.target import Backend, MetricsSnapshot

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


def drive(target, state, policy=POLICY, replayer=None):
    clock = [0.0]

    def sleep(s):
        clock[0] += s
        target.tick()

    state, wait = advance(target, state, policy, replayer, now=lambda: clock[0])
    while wait is not None:
        sleep(wait)
        state, wait = advance(target, state, policy, replayer, now=lambda: clock[0])
    return complete(target, state)


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


# -- live vs replayed traffic -------------------------------------------------------------------------

REPLAY_POLICY = AnalysisConfig(window_s=10, min_requests=50, max_wait_s=30, p95_slack_ms=0, replay=True)


def fake_replayer(target):
    """Like service.replayer: each logged request goes straight to every backend (stable and candidate);
    returns how many reached the candidate. The replayed requests look like stable's traffic."""
    sent: list[int] = []

    def replay(n):
        for role in target.b:
            t = target.totals[role]
            win = snap(n, lat=(n,), score=(n / 4,) * 4)
            target.totals[role] = MetricsSnapshot(
                t.requests + n,
                t.errors,
                {k: t.latency_buckets.get(k, 0) + v for k, v in win.latency_buckets.items()},
                {k: t.score_buckets.get(k, 0) + v for k, v in win.score_buckets.items()},
            )
        sent.append(n)
        return n

    replay.sent = sent
    return replay


def test_live_requests_are_the_window_count_minus_what_was_replayed_never_negative():
    assert live_requests(57.0, 5) == 52
    assert live_requests(50.0, 50) == 0
    assert live_requests(3.0, 5) == 0  # replayed requests not (yet) counted by the server: clamp at 0
    assert isinstance(live_requests(57.0, 5), int)


def test_replay_only_window_waits_for_live_traffic_then_is_inconclusive_and_rolls_back(caplog):
    t = FakeTarget(snap(0))  # no live request ever reaches the canary
    replay = fake_replayer(t)
    with caplog.at_level("INFO", logger="mlops.deploy.rollout"):
        state = drive(t, plan("canary", "2", "1", [10, 50, 100]), REPLAY_POLICY, replay)
    assert state["outcome"] == ROLLED_BACK
    assert "no live request reached the candidate (50 replayed)" in state["reasons"][0]
    assert "inconclusive after 30s" in state["reasons"][0]
    assert replay.sent == [50]  # topped up once; then only waited for live traffic until max_wait_s
    last = state["history"][-1]
    assert (last["phase"], last["decision"], last["live"], last["replayed"]) == (10, "inconclusive", 0, 50)
    assert (
        last["window"] == 3
    )  # window 1: too few -> replay; window 2: replay only -> wait; window 3: timeout
    assert "would have passed" in last["reasons"][1]
    assert t.calls[-2:] == [("weights", {"stable": 100}), ("remove", "canary")]
    record = _compact(state)
    assert record["requests"] == {"live": 0, "replayed": 50} and record["allow_replay_only"] is False
    assert record["steps"][0]["live"] == 0 and record["steps"][0]["replayed"] == 50
    waits = [r.getMessage() for r in caplog.records if "→ wait" in r.getMessage()]
    assert any(
        "no live request reached the candidate (50 replayed); waiting for live traffic" in m for m in waits
    )


def test_allow_replay_only_promotes_on_replayed_traffic_and_the_record_says_so():
    t = FakeTarget(snap(0))
    replay = fake_replayer(t)
    policy = REPLAY_POLICY.model_copy(update={"allow_replay_only": True})
    state = drive(t, plan("canary", "2", "1", [10, 50, 100]), policy, replay)
    assert state["outcome"] == PROMOTED, state["reasons"]
    assert [(h["phase"], h["live"], h["replayed"]) for h in state["history"]] == [
        (10, 0, 50),
        (50, 0, 50),
        (100, 0, 50),
    ]
    assert all("passed on 50 replayed requests alone" in h["reasons"][-1] for h in state["history"])
    record = _compact(state)
    assert record["requests"] == {"live": 0, "replayed": 150} and record["replayed"] == 150
    assert record["allow_replay_only"] is True
    assert [(s["live"], s["replayed"]) for s in record["steps"]] == [(0, 50)] * 3


def test_mixed_live_and_replayed_counts_are_recorded_exactly():
    t = FakeTarget(snap(20, lat=(20,), score=(5,) * 4))  # 20 live canary requests per window
    replay = fake_replayer(t)
    state = drive(t, plan("canary", "2", "1", [10, 100]), REPLAY_POLICY, replay)
    assert state["outcome"] == PROMOTED, state["reasons"]
    # each step: window 1 has 20 live (< 50) -> 30 replayed; window 2: 20 + 30 + 20 = 70 = 40 live + 30 replayed
    assert [(h["canary"]["requests"], h["live"], h["replayed"]) for h in state["history"]] == [
        (70, 40, 30),
        (70, 40, 30),
    ]
    assert replay.sent == [30, 30]
    assert _compact(state)["requests"] == {"live": 80, "replayed": 60}


def test_a_failure_on_replayed_traffic_alone_still_rolls_back():
    t = FakeTarget(snap(0))
    t.b["canary"] = Backend("canary", "2", "http://c")

    def bad_replay(n):  # the candidate errors on the logged requests
        for role in t.b:
            tot = t.totals[role]
            errors = n if role == "canary" else 0
            t.totals[role] = MetricsSnapshot(tot.requests + n, tot.errors + errors, tot.latency_buckets,
                                             tot.score_buckets)  # fmt: skip
        return n

    state = drive(t, plan("canary", "2", "1", [10, 100]), REPLAY_POLICY, bad_replay)
    assert state["outcome"] == ROLLED_BACK and "error rate" in state["reasons"][0]
    assert state["history"][-1]["decision"] == "fail" and state["history"][-1]["live"] == 0


# -- the log: one readable line per step / window -------------------------------------------------------


def test_window_line_is_one_readable_line():
    entry = {
        "phase": 10,
        "window": 1,
        "decision": "pass",
        "canary": {"requests": 57.0, "errors": 0.0, "p95_ms": 12.3},
        "stable": {"requests": 480.0, "errors": 1.0, "p95_ms": 11.0},
        "live": 52,
        "replayed": 5,
        "score_shift": 0.041,
        "reasons": ["canary 57 requests ..."],
    }
    line = describe_window(entry)
    assert line == (
        "step 10%: window 1 — canary 57 req (52 live, 5 replayed), stable 480 req, p95 12 ms vs 11 ms, "
        "errors 0 vs 1, score shift 0.04 → pass"
    )
    idle = describe_window({**entry, "stable": None, "decision": "fail", "reasons": ["too slow"]},
                           reference={"requests": 400.0, "errors": 0.0, "p95_ms": 9.5})  # fmt: skip
    assert idle.endswith("p95 12 ms vs 9.5 ms (reference), errors 0 vs 0, score shift 0.04 → fail: too slow")


def _messages(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "mlops.deploy.rollout"]


def test_rollout_log_has_one_line_per_step_and_window_never_the_state(caplog):
    t = FakeTarget(GOOD)
    with caplog.at_level("INFO", logger="mlops.deploy.rollout"):
        drive(t, plan("canary", "2", "1", [10, 50, 100]))
    msgs = _messages(caplog)
    assert {lvl for lvl, _ in msgs} == {"INFO"}
    assert all("\n" not in m and "{" not in m and "'" not in m for _, m in msgs), msgs
    windows = [m for _, m in msgs if ": window " in m]
    assert [w.split(" — ")[0] for w in windows] == [
        "step 10%: window 1",
        "step 50%: window 1",
        "step 100%: window 1",
    ]
    assert windows[0].startswith("step 10%: window 1 — canary 100 req (100 live, 0 replayed), stable 900 req")
    assert windows[0].endswith("→ pass")
    assert "stable idle" in windows[2] and "(reference)" in windows[2]
    assert sum("traffic canary" in m for _, m in msgs) == 3  # one line per step start
    assert "promoted" in msgs[-1][1]

    caplog.clear()
    t = FakeTarget(snap(100, 20, lat=(100,), score=(25,) * 4))
    with caplog.at_level("INFO", logger="mlops.deploy.rollout"):
        drive(t, plan("canary", "2", "1", [10, 100]))
    msgs = _messages(caplog)
    assert "ERROR" not in {lvl for lvl, _ in msgs}
    assert [lvl for lvl, m in msgs if "→ fail" in m or "rolled back" in m] == ["WARNING", "WARNING"]


def test_trigger_and_event_print_a_summary_but_carry_the_whole_state():
    import asyncio

    from mlops_airflow.rollout import RolloutWaitTrigger

    state = plan("canary", "2", "1", [10, 50, 100])
    state.update(observing=True, window=2, baseline={"canary": {"requests": 1.0}})
    trigger = RolloutWaitTrigger(10, state)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.rollout.RolloutWaitTrigger" and kwargs == {
        "seconds": 10.0,
        "state": state,
    }
    assert repr(trigger) == "<RolloutWaitTrigger rollout v2 step 10%, window 2: next analysis in 10 s>"

    trigger.seconds = 0

    async def first_event():
        async for ev in trigger.run():
            return ev

    event = asyncio.run(first_event())
    assert event.payload == {"state": state}
    assert repr(event) == "TriggerEvent<rollout v2 step 10%, window 2: analysis window due>"
    assert "baseline" not in repr(event) and "baseline" not in str(event)
