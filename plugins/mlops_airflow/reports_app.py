"""A small FastAPI app, mounted in the Airflow api-server at ``/mlops``, serving the platform's reports
(Great Expectations Data Docs, drift reports) so the links from tasks open in the browser.

    GET /mlops/reports/<path>   static files under MLOPS_REPORTS_DIR (default $MLOPS_HOME/reports)
    GET /mlops/health           liveness of the app (open: probes)
    /mlops/alerts/...           Alertmanager webhook receiver and the alert ledger (see alerts_app)

Airflow mounts plugin apps without authentication: every route a person opens here requires an
Airflow login (:data:`mlops_airflow.auth.REQUIRE_LOGIN`), else 401/403. The webhook has its own token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from mlops.config.settings import get_settings

from mlops_airflow.auth import REQUIRE_LOGIN

URL_PREFIX = "/mlops"


def create_app() -> FastAPI:
    root = get_settings().reports_root
    root.mkdir(parents=True, exist_ok=True)
    # no public schema or docs pages: the routes are described in this module and docs/reference.md
    app = FastAPI(title="MLOps platform reports", docs_url=None, redoc_url=None, openapi_url=None)
    # Starlette's static files (path normalisation, no escape from the folder, index.html), behind a login
    static = StaticFiles(directory=str(root), html=True, check_dir=False)

    @app.get("/reports/{path:path}", dependencies=[REQUIRE_LOGIN])
    async def reports(path: str, request: Request) -> Response:
        return await static.get_response(path, request.scope)

    from mlops_airflow.alerts_app import router as alerts_router

    app.include_router(alerts_router)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def report_url(base_url: str, reports_root: str | Path, path: str | Path) -> str:
    """Public URL of ``path``, a report file under ``reports_root``."""
    rel = Path(path).resolve().relative_to(Path(reports_root).resolve())
    return f"{base_url.rstrip('/')}{URL_PREFIX}/reports/{rel.as_posix()}"
