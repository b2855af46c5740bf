"""The demo's REST client: login, retries of transient database errors (SQLite under load)."""

from __future__ import annotations

import httpx
from mlops.demo.airflow_api import AirflowAPI


def test_a_transient_database_error_is_retried_and_other_errors_are_not():
    calls: list[str] = []
    locked = {"n": 2}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        assert request.headers["authorization"] == "Bearer t"
        if request.url.path.endswith("/dagRuns") and locked["n"]:
            locked["n"] -= 1
            return httpx.Response(500, json={"detail": {"reason": "Database error"}})
        if request.url.path.endswith("/broken"):
            return httpx.Response(500, json={"detail": "something else"})
        return httpx.Response(200, json={"dag_run_id": "r1"})

    api = AirflowAPI("http://airflow", "admin", "pw", transport=httpx.MockTransport(handler))
    assert api.trigger("d")["dag_run_id"] == "r1"
    assert calls.count("POST /api/v2/dags/d/dagRuns") == 3  # two "database is locked", then created
    assert api._request("GET", "/broken").status_code == 500
    assert calls.count("GET /broken") == 1  # not a database error: no retry


def test_a_read_that_times_out_is_retried_a_write_is_not():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if calls.count(f"{request.method} {request.url.path}") <= 2:
            raise httpx.ReadTimeout("busy", request=request)
        return httpx.Response(200, json={"dag_runs": []})

    api = AirflowAPI("http://airflow", "admin", "pw", transport=httpx.MockTransport(handler))
    assert api.runs("d") == [] and calls.count("GET /api/v2/dags/d/dagRuns") == 3
    try:
        api.trigger("d")
    except httpx.ReadTimeout:
        pass
    else:
        raise AssertionError("a timed-out trigger must not be sent again: it may have created the run")
    assert calls.count("POST /api/v2/dags/d/dagRuns") == 1
