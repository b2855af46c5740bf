"""Alert routes of the platform's FastAPI app (mounted in the Airflow api-server under ``/mlops``).

POST /mlops/alerts/webhook      Alertmanager's webhook (version 4), ``Authorization: Bearer <token>``
                                (MLOPS_ALERT_WEBHOOK_TOKEN); firing alerts go into the alert ledger,
                                where the retraining sensor picks them up within a second.
                                401: missing or wrong token; 422: not JSON / not Alertmanager's format;
                                503: the ledger cannot be written (disk full): nothing recorded, send again.
GET  /mlops/alerts/             the ledger as a page: every alert, its decision and reason (Airflow login)
GET  /mlops/alerts/ledger.json  the same as JSON (``?model=churn``) (Airflow login)
"""

from __future__ import annotations

import hmac
import html
import json
import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from mlops.alerting import LedgerUnavailable, alerts_from_webhook, open_ledger
from mlops.config.settings import get_settings
from starlette.concurrency import run_in_threadpool

from mlops_airflow.auth import REQUIRE_LOGIN

log = logging.getLogger(__name__)
router = APIRouter(prefix="/alerts")


def _authorized(request: Request) -> bool:
    expected = get_settings().alert_webhook_token.get_secret_value()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


@router.post("/webhook")
async def webhook(request: Request) -> dict:
    if not _authorized(request):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        payload = json.loads(await request.body())
        alerts = alerts_from_webhook(payload)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise HTTPException(422, f"not an Alertmanager webhook payload: {exc}") from exc
    s = get_settings()
    try:
        new = await run_in_threadpool(
            lambda: open_ledger(s.home, s.alert_ledger_url).record(alerts)
        )  # off the loop
    except LedgerUnavailable as exc:  # 503: Alertmanager sends the notification again later
        log.error("webhook: %d alert(s) not recorded: %s", len(alerts), exc)
        raise HTTPException(503, f"{exc}; send again later", headers={"Retry-After": "30"}) from exc
    return {"received": len(alerts), "new": new}


def _entries(model: str | None, limit: int) -> list[dict]:
    try:
        s = get_settings()
        return open_ledger(s.home, s.alert_ledger_url).entries(model, limit)
    except LedgerUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from exc


@router.get("/ledger.json", dependencies=[REQUIRE_LOGIN])
def ledger_json(model: str | None = None, limit: int = 500) -> list[dict]:
    return _entries(model, limit)


_COLUMNS = (
    "received",
    "model",
    "name",
    "fingerprint",
    "starts_at",
    "source",
    "seen",
    "decision",
    "reason",
    "run_id",
)


@router.get("/", response_class=HTMLResponse, dependencies=[REQUIRE_LOGIN])
def ledger_page(model: str | None = None) -> str:
    rows = _entries(model, 500)
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(r.get(c) or ('pending' if c == 'decision' else '')))}</td>"
            for c in _COLUMNS
        )
        + "</tr>"  # fmt: skip
        for r in rows
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Alert ledger</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}</style>"
        f"<h2>Alert ledger{' — ' + html.escape(model) if model else ''}</h2>"
        "<p>Every alert that reached the platform, once per firing, and what was done about it: "
        "<b>retrain</b> (run id), <b>suppressed</b> (reason: duplicate firing, retrain in flight, cooldown, "
        "daily budget, not the champion), or pending.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    )
