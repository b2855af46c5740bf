"""A small client of Airflow 3's public REST API (``/api/v2``), as a user or a script uses it.

Plain HTTP (httpx), no ``airflow`` import: the demo and tests drive Airflow exactly the way a user's
own tooling would.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowAPIError(RuntimeError):
    """The Airflow REST API refused a call, or what was waited for did not happen in time."""

    pass


def _transient_db_error(r: httpx.Response) -> bool:
    return r.status_code == 500 and "Database error" in r.text


class AirflowAPI:
    """A small client of the Airflow 3 REST API (``/api/v2``), logged in with a user's JWT."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, trust_env=False, transport=transport
        )
        self._token: str | None = None

    # -- auth -------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (SimpleAuthManager and FAB both offer it)."""
        r = self._http.post("/auth/token", json={"username": self._username, "password": self._password})
        if r.status_code not in (200, 201):
            raise AirflowAPIError(f"login as {self._username!r} failed: HTTP {r.status_code} {r.text[:200]}")
        return r.json()["access_token"]

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One API call; an expired token logs in again, transient failures are retried.

        On the embedded default (SQLite) a write can meet ``database is locked`` while the scheduler
        writes: the API answers 500 "Database error" and rolls the request back, so trying again is safe.
        A read (GET) that times out or cannot connect (an api-server busy on a loaded machine) is tried
        again too; a write that timed out is not (it may have happened).
        """
        from tenacity import (
            retry,
            retry_if_exception,
            retry_if_result,
            stop_after_attempt,
            wait_exponential,
        )

        def transport_error_on_read(exc: BaseException) -> bool:
            return method == "GET" and isinstance(exc, httpx.TransportError)

        @retry(
            retry=retry_if_result(_transient_db_error) | retry_if_exception(transport_error_on_read),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        def call() -> httpx.Response:
            if self._token is None:
                self._token = self.token()
            r = self._http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kw)
            if r.status_code == 401:  # expired token: log in again once
                self._token = self.token()
                r = self._http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kw)
            return r

        return call()

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        r = self._request(method, path, **kw)
        if r.status_code not in ok:
            raise AirflowAPIError(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()

    # -- DAGs and runs ------------------------------------------------------------------
    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG's details, or None while it is not parsed yet."""
        r = self._request("GET", f"/api/v2/dags/{dag_id}")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise AirflowAPIError(f"GET dag {dag_id}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()

    def import_errors(self) -> list[dict[str, Any]]:
        """The DAG files Airflow could not import, with their stack traces."""
        return self._json("GET", "/api/v2/importErrors").get("import_errors", [])

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until ``dag_id`` is parsed and return it; on timeout, raise naming any import errors."""
        deadline = time.monotonic() + timeout
        while True:
            dag = self.get_dag(dag_id)
            if dag is not None:
                return dag
            if time.monotonic() > deadline:
                errors = "; ".join(
                    f"{e.get('filename')}: {e.get('stack_trace', '')[-300:]}" for e in self.import_errors()
                )
                raise AirflowAPIError(
                    f"DAG {dag_id!r} did not appear within {timeout:.0f}s"
                    + (f"; import errors: {errors}" if errors else " (no import errors reported)")
                )
            time.sleep(2.0)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause ``dag_id``."""
        self._json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, note: str | None = None
    ) -> dict[str, Any]:
        """Start a run of ``dag_id`` now with ``conf`` (and an optional note); return the new run."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if note:
            body["note"] = note
        return self._json("POST", f"/api/v2/dags/{dag_id}/dagRuns", ok=(200, 201), json=body)

    def wait_for_new_run(self, dag_id: str, known: set[str], timeout: float) -> dict[str, Any] | None:
        """The first run of ``dag_id`` not in ``known`` (e.g. one an Asset event queued), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(dag_id):
                if run["dag_run_id"] not in known:
                    return run
            time.sleep(2.0)
        return None

    def runs(self, dag_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs of ``dag_id``, newest first."""
        data = self._json(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": limit, "order_by": "-run_after"}
        )
        return data.get("dag_runs", [])

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One run of ``dag_id``."""
        return self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, on_change: Any = None) -> dict[str, Any]:
        """Poll until the run ends and return it; ``on_change(ti)`` sees each task state change."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            run = self.get_run(dag_id, run_id)
            if on_change is not None:
                for ti in self.task_instances(dag_id, run_id):
                    state = ti.get("state") or "none"
                    if seen.get(ti["task_id"]) != state:
                        seen[ti["task_id"]] = state
                        on_change(ti)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowAPIError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(2.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of one run."""
        data = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return data.get("task_instances", [])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom ``key`` of one task of a run, deserialized; None if there is none."""
        r = self._request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true"},
        )
        if r.status_code != 200:
            return None
        return r.json().get("value")

    # -- Variables ------------------------------------------------------------------------
    def get_variable(self, key: str) -> str | None:
        """The value of Airflow Variable ``key``, or None if it is not set."""
        r = self._request("GET", f"/api/v2/variables/{key}")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise AirflowAPIError(f"GET variable {key}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()["value"]

    def set_variable(self, key: str, value: str, description: str | None = None) -> None:
        """Create or update Airflow Variable ``key``."""
        body = {"key": key, "value": value, "description": description}
        r = self._request("PATCH", f"/api/v2/variables/{key}", json=body)
        if r.status_code == 404:
            r = self._request("POST", "/api/v2/variables", json=body)
        if r.status_code not in (200, 201):
            raise AirflowAPIError(f"set variable {key}: HTTP {r.status_code} {r.text[:300]}")

    def delete_variable(self, key: str) -> None:
        """Delete Airflow Variable ``key`` (an absent one is fine)."""
        r = self._request("DELETE", f"/api/v2/variables/{key}")
        if r.status_code not in (204, 404):
            raise AirflowAPIError(f"DELETE variable {key}: HTTP {r.status_code} {r.text[:300]}")

    def ui_run_url(self, dag_id: str, run_id: str) -> str:
        """The Airflow UI page of one run."""
        return f"{self.base_url}/dags/{dag_id}/runs/{run_id}"
