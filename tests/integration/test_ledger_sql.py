"""The alert ledger on a real PostgreSQL server and on SQLite: the same decisions, and admission stays
atomic with writers in several processes (the webhook receiver, sensors, the retraining DAG)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from mlops.alerting import LedgerUnavailable
from mlops.alerting.alerts import Alert
from mlops.alerting.ledger import AlertLedger

from tests.helpers import postgres_server

WRITERS, ALERTS, ROUNDS = 4, 50, 6
ROUND_S = 1.5  # seconds between the rounds' start barriers (a round takes well under a second)


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as (url, env):
        yield url, env


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request, tmp_path, monkeypatch):
    """(URL, environment) of an empty ledger database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}", {}
    url, env = request.getfixturevalue("postgres")
    monkeypatch.setenv("PGPASSWORD", env["PGPASSWORD"])
    name = f"t{time.time_ns()}"  # one database per test: no state shared between tests
    admin = AlertLedger(url).engine
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}", env


def admit(ledger: AlertLedger, model: str):
    """One admission as the retraining DAG makes it: champion v3, nothing in flight, a 1 h cooldown."""
    return ledger.decide(
        model, alert_names=["ModelDriftDetected"], champion="3", in_flight=[], cooldown_s=3600, daily_budget=5
    )


def _alert(i: int, name: str = "ModelDriftDetected", version: str = "3", model: str = "churn") -> Alert:
    return Alert(
        name=name,
        fingerprint=f"{model}-{i:04d}",  # the ledger's key is fingerprint@start: one per model
        starts_at=f"2026-12-06T01:{i // 60:02d}:{i % 60:02d}Z",
        labels={"alertname": name, "model": model, "model_version": version},
        annotations={},
        source="test",
    )


def test_the_same_decisions_on_either_database(ledger_at):
    url, _ = ledger_at
    ledger = AlertLedger(url)
    assert ledger.record([_alert(1), _alert(2), _alert(3, name="Other"), _alert(4, version="2")]) == 4
    assert ledger.record([_alert(1)]) == 0  # seen again, counted
    assert ledger.pending("churn") == 4
    decision = admit(ledger, "churn")
    assert decision.accepted is not None and decision.accepted["fingerprint"] in ("churn-0001", "churn-0002")
    reasons = dict(decision.suppressed)
    other = _alert(2 if decision.accepted["fingerprint"] == "churn-0001" else 1)
    assert "coalesced" in reasons[other.key] and "retraining.alerts" in reasons[_alert(3, name="Other").key]
    assert "not the serving @champion v3" in reasons[_alert(4, version="2").key]
    assert ledger.unlaunched("churn")[0]["run_id"] == decision.accepted["run_id"]
    again = admit(ledger, "churn")  # a retried admission gets the same alert, not a second retrain
    assert again.accepted["run_id"] == decision.accepted["run_id"]
    ledger.mark_launched(decision.accepted["key"])
    assert ledger.unlaunched("churn") == [] and ledger.retrains_today("churn") == 1
    assert ledger.blocker("churn", cooldown_s=600, daily_budget=3).startswith("cooldown")
    rows = ledger.entries("churn")
    assert (
        len(rows) == 4
        and rows[0]["seen"] in (1, 2)
        and {r["decision"] for r in rows} == {"retrain", "suppressed"}
    )


_WRITER = """
import json, sys, time
sys.path.insert(0, {repo!r})
from mlops.alerting.ledger import AlertLedger
from tests.integration.test_ledger_sql import ROUND_S, _alert, admit
url, first, n, start, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
ledger = AlertLedger(url)
accepted = {{}}
for r in range(rounds):  # one model per round; every writer starts each round at the same moment
    model = f"churn{{r}}"
    time.sleep(max(0.0, start + r * ROUND_S - time.time()))
    for i in range(first, first + n):  # record each alert, then admit, as the webhook and the sensor do
        ledger.record([_alert(i, model=model)])
        d = admit(ledger, model)
        if d.accepted is not None:
            accepted.setdefault(model, []).append(d.accepted["run_id"])
print(json.dumps(accepted))
"""


def test_alerts_admitted_concurrently_from_four_processes_start_exactly_one_retrain(ledger_at):
    """Per model, 50 alerts from 4 processes recording and admitting at once: exactly one starts a retrain.

    ROUNDS independent races (one model each): without the ledger's lock two writers regularly accept
    different alerts (seen: 1 round in 3 on PostgreSQL), so several rounds make the check bite.
    """
    from tests.helpers import REPO

    url, env = ledger_at
    AlertLedger(url)  # the schema exists before the race (as the api-server's first request makes it)
    per = ALERTS // WRITERS + 1
    script = _WRITER.format(repo=str(REPO))
    start = time.time() + 8  # after every interpreter has started and imported
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, str(w * per), str(min(per, ALERTS - w * per)),
                          str(start), str(ROUNDS)],
                         env={**env, "PYTHONPATH": str(REPO)} if env else None, stdout=subprocess.PIPE, text=True)
        for w in range(WRITERS)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * WRITERS, outs
    ledger = AlertLedger(url)
    for r in range(ROUNDS):
        model = f"churn{r}"
        accepted = {
            run_id for out in outs for run_id in json.loads(out.strip().splitlines()[-1]).get(model, [])
        }
        rows = ledger.entries(model, limit=1000)
        assert len(rows) == ALERTS
        retrains = [row for row in rows if row["decision"] == "retrain"]
        assert len(retrains) == 1 and accepted == {retrains[0]["run_id"]}, (model, accepted, retrains)
        # the others: suppressed, or still pending behind the accepted alert until its run exists; then
        # the next admission suppresses them all (cooldown): none ever starts a second retrain
        ledger.mark_launched(retrains[0]["key"])
        last = admit(ledger, model)
        assert last.accepted is None and all(reason.startswith("cooldown") for _, reason in last.suppressed)
        decisions = sorted(row["decision"] for row in ledger.entries(model, limit=1000))
        assert decisions == ["retrain"] + ["suppressed"] * (ALERTS - 1)
    print(
        f"\n{url.split(':')[0]}: {ROUNDS} rounds of {ALERTS} alerts from {WRITERS} processes -> 1 retrain each"
    )


def test_postgresql_down_is_unavailable_not_a_crash(tmp_path):
    """A server that does not answer: LedgerUnavailable (the webhook answers 503), nothing half-written."""
    from tests.helpers import free_port

    with pytest.raises(
        LedgerUnavailable, match=r"alert ledger postgresql\+psycopg://mlops:\*\*\*@127\.0\.0\.1"
    ):
        AlertLedger(f"postgresql+psycopg://mlops:pw-not-shown@127.0.0.1:{free_port()}/mlops")
