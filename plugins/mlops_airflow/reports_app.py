"""A small FastAPI app, mounted in the Airflow api-server at ``/mlops``, serving the platform's reports
(Great Expectations Data Docs today) so the links from tasks open in the browser.

    GET /mlops/reports/<path>   static files under MLOPS_REPORTS_DIR (default $MLOPS_HOME/reports)
    GET /mlops/health           liveness of the app
    /mlops/alerts/...           Alertmanager webhook receiver and the alert ledger (see alerts_app)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from mlops.settings import get_settings

URL_PREFIX = "/mlops"


def create_app() -> FastAPI:
    root = get_settings().reports_root
    root.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="MLOps platform reports", docs_url=None, redoc_url=None)
    app.mount("/reports", StaticFiles(directory=str(root), html=True, check_dir=False), name="reports")

    from mlops_airflow.alerts_app import router as alerts_router

    app.include_router(alerts_router)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "reports_dir": str(root)}

    return app


def report_url(base_url: str, reports_root: str | Path, path: str | Path) -> str:
    """Public URL of ``path``, a report file under ``reports_root``."""
    rel = Path(path).resolve().relative_to(Path(reports_root).resolve())
    return f"{base_url.rstrip('/')}{URL_PREFIX}/reports/{rel.as_posix()}"
