"""Every report the platform serves opens offline (issue 10: "Data Docs open blank offline").

Real Data Docs from the platform's validation step (``validate_landing`` on two landed batches, one
broken), a real drift report and the alert ledger, served over HTTP on 127.0.0.1 by the platform's own
reports app (mounted under ``/mlops`` as in the Airflow api-server), opened in Debian's Chromium with
every request to another origin blocked: the content must show, and nothing outside the origin may even
be requested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
from mlops.alerting.alerts import Alert
from mlops.alerting.ledger import open_ledger
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.data.landing import landing_dir, validate_landing
from mlops.data.report_html import external_references
from mlops.demo.datagen import generate_churn
from mlops.drift.detect import detect
from mlops.drift.profile import ReferenceProfile
from mlops.drift.report import write_report
from mlops_airflow.reports_app import report_url

from tests.browser import chromium, open_offline, require_chromium
from tests.helpers import REPO, free_port, wait_http

CFG = get_model_config("churn", BUILTIN_MODELS_DIR)
#: The logged-in user's cookie (Airflow's `_token`), set by the `site` fixture.
LOGIN: dict[str, str] = {}
GOOD, BAD = "batch-0001.csv", "batch-0002.csv"
# an asset reference: src/href/srcset/url() naming another host (links in <a href> are navigation)
_ASSET_REF = re.compile(r"""<(?!a[\s>])[^>]*\b(?:src|href|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Reports built by the platform's code, served by its reports app; yields what the tests need."""
    require_chromium()
    home = tmp_path_factory.mktemp("home")
    reports, data_root = home / "reports", home / "data"
    landing = landing_dir(data_root, CFG.name)
    landing.mkdir(parents=True)
    generate_churn(800, seed=11).to_csv(landing / GOOD, index=False)
    bad = generate_churn(800, seed=12)
    bad.loc[:24, "region"] = "atlantis"  # 25 rows with a category the config does not allow
    bad.to_csv(landing / BAD, index=False)
    check = validate_landing(CFG, data_root, reports)
    assert len(check.good) == 1 and len(check.rejected) == 1 and len(check.docs) == 2, check

    rng = np.random.default_rng(0)
    num, cat = CFG.features.numeric, CFG.features.categorical
    profile = ReferenceProfile.from_frame(generate_churn(4000, seed=1), num, cat, score=rng.beta(2, 5, 4000))
    drift = detect(profile, generate_churn(2000, seed=2, drift=1.0), score=rng.beta(5, 2, 2000))
    assert drift.is_drift and drift.score is not None and drift.score.drifted
    drift_path = write_report(
        drift, reports / "drift" / CFG.name / "v1-test.html", title="Drift report: churn v1"
    )

    alert = Alert(
        name="ChurnFeatureDrift",
        labels={"alertname": "ChurnFeatureDrift", "model": CFG.name},
        annotations={"summary": "drift"},
        fingerprint="f00d",
        starts_at="2026-12-04T10:00:00Z",
        source="test",
    )
    open_ledger(home).record([alert])

    # Control page: what a GX page referenced before post-processing; proves the blocking is real.
    probe = reports / "probe" / "external.html"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        '<!doctype html><script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<link rel="stylesheet" href="//cdn.jsdelivr.net/x.css"><p id="p">probe</p>'
    )

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The reports app behind Airflow's login, as in the api-server: the auth manager initialised, and a
    # token it signed for the browser's `_token` cookie (what the UI sets on login).
    token_file = home / "token"
    server = textwrap.dedent(
        f"""
        import uvicorn
        from airflow import settings
        from airflow.api_fastapi.app import init_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.models.revoked_token import RevokedToken
        from fastapi import FastAPI
        from mlops_airflow.reports_app import URL_PREFIX, create_app
        if settings.engine is None:
            settings.configure_orm()
        RevokedToken.__table__.create(settings.engine, checkfirst=True)
        app = FastAPI()
        manager = init_auth_manager(app)
        open({str(token_file)!r}, "w").write(manager.generate_jwt(SimpleAuthManagerUser(username="u", role="viewer")))
        app.mount(URL_PREFIX, create_app())
        uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
        """
    )
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "MLOPS_REPORTS_DIR": str(reports),
        "AIRFLOW__API_AUTH__JWT_SECRET": "reports-offline-test-" + "x" * 64,
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", server], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{base}/mlops/health", timeout=60)
        login = {"_token": token_file.read_text()}
        LOGIN.update(login)
        assert httpx.get(report_url(base, reports, drift_path), trust_env=False).status_code == 401
        with chromium() as browser:
            yield {
                "browser": browser,
                "login": login,
                "base": base,
                "docs": {
                    name: report_url(base, reports, p)
                    for name, p in zip((GOOD, BAD), check.docs, strict=True)
                },
                "drift": drift,
                "drift_url": report_url(base, reports, drift_path),
                "probe_url": report_url(base, reports, probe),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _assert_self_contained(url: str) -> str:
    """The page as served: no script, nothing to fetch from another host."""
    html = httpx.get(url, timeout=10, trust_env=False, cookies=LOGIN).text
    assert external_references(html) == [], url
    assert _ASSET_REF.search(html) is None, _ASSET_REF.search(html).group(0)
    assert "<script" not in html.lower(), url
    return html


def test_the_browser_really_blocks_other_origins(site):
    with open_offline(site["browser"], site["probe_url"], cookies=site["login"]) as view:
        assert view.page.inner_text("#p") == "probe"
        assert sorted(view.blocked) == [
            "http://cdn.jsdelivr.net/x.css",
            "https://code.jquery.com/jquery-3.7.1.min.js",
        ]


@pytest.mark.parametrize("javascript", [True, False], ids=["js-on", "js-off"])
@pytest.mark.parametrize(("batch", "status"), [(GOOD, "Success"), (BAD, "Failed")])
def test_data_docs_index_shows_the_validation_result_rows(site, batch, status, javascript):
    url = site["docs"][batch]
    _assert_self_contained(url)
    with open_offline(site["browser"], url, javascript=javascript, cookies=site["login"]) as view:
        rows = view.page.locator("table.ge-index-page-validation-results-table tbody tr")
        assert rows.count() == 1
        row = rows.first
        assert row.is_visible()
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        assert cells[0] == status and batch in cells and CFG.name + "_batch" in cells, cells
        assert row.get_by_role("link", name=status).is_visible()
        assert view.page.get_by_role("link", name=f"{CFG.name}_batch").first.is_visible()
        assert view.blocked == [] and view.errors == []
        assert external_references(view.page.content()) == []


def test_validation_and_suite_pages_show_the_expectations(site):
    with open_offline(site["browser"], site["docs"][BAD], cookies=site["login"]) as view:
        view.page.get_by_role("link", name="Failed").click()
        view.page.wait_for_load_state("load")
        assert "/validations/" in view.page.url
        _assert_self_contained(view.page.url)
        page = view.page
        assert page.get_by_text("values must belong to this set: north").first.is_visible()
        assert page.get_by_text("atlantis").first.is_visible()
        assert page.get_by_text("25 unexpected values found").first.is_visible()
        assert page.locator("i.mlops-icon[title=failed]").first.is_visible()  # status readable without fonts
        page.get_by_role("link", name="Home").first.click()
        page.wait_for_load_state("load")
        page.get_by_role("link", name=f"{CFG.name}_batch").first.click()
        page.wait_for_load_state("load")
        assert "/expectations/" in page.url
        _assert_self_contained(page.url)
        assert page.get_by_text("values must never be null").first.is_visible()
        assert view.blocked == [] and view.errors == []
        assert all(r.startswith(site["base"] + "/mlops/reports/") for r in view.requested), view.requested


def test_drift_report_shows_its_content(site):
    drift = site["drift"]
    _assert_self_contained(site["drift_url"])
    with open_offline(site["browser"], site["drift_url"], cookies=site["login"]) as view:
        page = view.page
        tested = sum(f.status != "insufficient_data" for f in drift.features)
        n = len(drift.drifted_features)
        assert f"{n} of {tested} features drifted" in drift.message
        assert page.get_by_role("heading", name=f"Drifted features: {n} of {tested} tested").is_visible()
        assert page.get_by_role("heading", name="Prediction score (score): drifted").is_visible()
        assert page.locator("svg").count() == n + 1 and page.locator("svg").first.is_visible()
        assert page.get_by_text(drift.message).is_visible()
        assert view.blocked == [] and view.errors == []


def test_alert_ledger_page_shows_the_alerts(site):
    url = f"{site['base']}/mlops/alerts/"
    _assert_self_contained(url)
    with open_offline(site["browser"], url, cookies=site["login"]) as view:
        assert view.page.get_by_role("heading", name="Alert ledger").is_visible()
        assert view.page.get_by_role("cell", name="ChurnFeatureDrift").is_visible()
        assert view.blocked == [] and view.errors == []
