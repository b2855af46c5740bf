"""Client traffic for rollouts: background threads sending single-row ``/invocations`` to an endpoint.

Used by ``make demo`` (a canary needs requests to be judged) and by the rollout tests, which count
every failed request (none is allowed while traffic moves between backends).
"""

from __future__ import annotations

import threading
import time

import httpx


class Traffic:
    """Background clients sending single-row ``/invocations`` to ``url`` until stopped; counts outcomes."""

    def __init__(
        self,
        url: str,
        rows: list[dict],
        clients: int = 3,
        pause: float = 0.0,
        headers: dict[str, str] | None = None,
        record: bool = False,
    ):
        self.url, self.rows, self.pause, self.headers, self.record = url, rows, pause, headers, record
        self.ok = 0
        self.failed: list[str] = []
        #: With ``record``: every request as (sent at (monotonic), seconds, status or 0 if none, variant).
        self.records: list[tuple[float, float, int, str]] = []
        self.by_version: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=30, trust_env=False, headers=self.headers) as http:
            n = i
            while not self._stop.is_set():
                row = self.rows[n % len(self.rows)]
                n += 1
                t0 = time.monotonic()
                status, variant = 0, "-"
                try:
                    r = http.post(f"{self.url}/invocations", json={"dataframe_records": [row]})
                    outcome = None if r.status_code == 200 else f"{r.status_code}: {r.text[:200]}"
                    version = r.headers.get("x-mlops-model-version", "?")
                    status, variant = r.status_code, r.headers.get("x-mlops-variant", "-")
                except httpx.HTTPError as exc:
                    outcome, version = f"{type(exc).__name__}: {exc}", "?"
                with self._lock:
                    if self.record:
                        self.records.append((t0, time.monotonic() - t0, status, variant))
                    if outcome is None:
                        self.ok += 1
                        self.by_version[version] = self.by_version.get(version, 0) + 1
                    else:
                        self.failed.append(outcome)
                if outcome is not None:
                    time.sleep(0.05)  # a down endpoint is not hammered
                if self.pause:
                    time.sleep(self.pause)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
