"""Staging smoke test of a candidate backend that takes no user traffic yet.

Checks, in order (every check runs and is reported; the test passes only if all pass):

1. ``ready``: ``GET /ready`` answers 200;
2. ``version``: ``GET /version`` names the expected model version;
3. ``schema``: ``POST /invocations`` with a holdout sample (``dataframe_split``) answers 200 with one
   prediction per row;
4. ``offline_equal``: ``POST /predict`` scores equal the scores the training run recorded for the same
   holdout rows (``eval/holdout.parquet``), within ``tolerance``: the served artifact is the model
   that was judged;
5. ``latency``: the p95 of ``requests`` sequential single-row requests is under ``max_p95_ms``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config.model import SmokeConfig


@dataclass
class SmokeResult:
    """Outcome of the staging smoke test: each check, and the p95 latency measured."""

    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    p95_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (all fields)."""
        return asdict(self)

    def failures(self) -> list[str]:
        """One line per failed check: its name and what went wrong."""
        return [f"{c['name']}: {c['detail']}" for c in self.checks if not c["ok"]]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN -> null (pandas' own JSON writer does that conversion)."""
    return json.loads(frame.to_json(orient="records"))


def smoke_test(
    url: str,
    version: str,
    features: pd.DataFrame,
    offline_scores: list[float] | None,
    cfg: SmokeConfig,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> SmokeResult:
    """Run every check against the backend at ``url`` (its own address, not the shared endpoint).

    ``headers`` go with every request: the endpoint's ``Authorization`` when it requires a token.
    """
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    sample = features.head(cfg.rows)
    p95 = None
    with httpx.Client(base_url=url, timeout=timeout, trust_env=False, headers=headers) as http:
        try:
            r = http.get("/ready")
            check("ready", r.status_code == 200, f"GET /ready -> {r.status_code}")
        except httpx.HTTPError as exc:
            check("ready", False, f"GET /ready failed: {exc}")
            return SmokeResult(False, checks)
        try:
            served = str(http.get("/version").json().get("model_version"))
            check("version", served == str(version), f"serves version {served}, expected {version}")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            check("version", False, f"GET /version failed: {exc}")
        split = json.loads(sample.to_json(orient="split", index=False))
        try:
            r = http.post("/invocations", json={"dataframe_split": split})
            preds = r.json().get("predictions") if r.status_code == 200 else None
            ok = isinstance(preds, list) and len(preds) == len(sample)
            detail = (
                f"{len(sample)} rows -> {len(preds)} predictions"
                if isinstance(preds, list)
                else f"POST /invocations -> {r.status_code}: {r.text[:300]}"
            )
            check("schema", ok, detail)
        except (httpx.HTTPError, ValueError) as exc:
            check("schema", False, f"POST /invocations failed: {exc}")
        if offline_scores is not None:
            try:
                r = http.post("/predict", json={"instances": _records(sample)})
                got = [p["score"] for p in r.json()["predictions"]] if r.status_code == 200 else None
                if got is None:
                    check("offline_equal", False, f"POST /predict -> {r.status_code}: {r.text[:300]}")
                else:
                    want = offline_scores[: len(sample)]
                    bad = [
                        i
                        for i, (a, b) in enumerate(zip(got, want, strict=True))
                        if a is None or not math.isclose(a, b, rel_tol=0.0, abs_tol=cfg.tolerance)
                    ]
                    check(
                        "offline_equal",
                        not bad,
                        f"{len(got) - len(bad)}/{len(got)} scores equal the offline model's"
                        + (f" (first mismatch row {bad[0]}: {got[bad[0]]} vs {want[bad[0]]})" if bad else ""),
                    )
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                check("offline_equal", False, f"POST /predict failed: {exc}")
        rows = _records(sample.head(max(1, min(cfg.requests, len(sample)))))
        times, errors = [], 0
        for i in range(cfg.requests):
            t0 = time.perf_counter()
            try:
                r = http.post("/invocations", json={"dataframe_records": [rows[i % len(rows)]]})
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1
            times.append((time.perf_counter() - t0) * 1000.0)
        times.sort()
        p95 = round(times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)], 2)
        check(
            "latency",
            errors == 0 and p95 <= cfg.max_p95_ms,
            f"p95 {p95} ms over {cfg.requests} single-row requests (bound {cfg.max_p95_ms} ms), {errors} errors",
        )
    return SmokeResult(all(c["ok"] for c in checks), checks, p95)
