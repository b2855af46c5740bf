"""The platform's pages in the api-server need Airflow's login: every route × every way of asking.

Airflow's own dependency (``requires_access_view``) with the simple auth manager Airflow is configured
with, tokens signed by it: no mock of the check itself.
"""

from __future__ import annotations

import time

import jwt
import pytest

ROUTES = ["/reports/churn/index.html", "/alerts/", "/alerts/ledger.json"]


@pytest.fixture
def app(tmp_path, monkeypatch, airflow_auth):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    (tmp_path / "reports" / "churn").mkdir(parents=True)
    (tmp_path / "reports" / "churn" / "index.html").write_text("<h1>Data Docs</h1>")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "secrets.env").write_text("MLOPS_JWT_SECRET='do-not-serve-me'\n")
    (tmp_path / "reports" / "escape").symlink_to(tmp_path / "home")
    from fastapi.testclient import TestClient
    from mlops_airflow.reports_app import create_app

    return TestClient(create_app()), airflow_auth


def _forged(role: str = "admin", secret: str = "not-the-airflow-secret-0123456789abcdef") -> str:
    now = int(time.time())
    claims = {"sub": "admin", "role": role, "iat": now, "nbf": now, "exp": now + 600, "aud": "apache-airflow"}
    return jwt.encode(claims, secret, algorithm="HS512")


def test_every_platform_route_refuses_anyone_not_logged_in(app):
    client, token = app
    cases = {
        "no credentials": ({}, 401),
        "garbage bearer": ({"Authorization": "Bearer not-a-jwt"}, 403),
        "token signed with another secret": ({"Authorization": f"Bearer {_forged()}"}, 403),
        "expired token": ({"Authorization": f"Bearer {token('admin', expires_in=-60)}"}, 401),
        "user without a role": ({"Authorization": f"Bearer {token(None)}"}, 403),
        "basic auth with the admin login": ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
        "viewer token (header)": ({"Authorization": f"Bearer {token('viewer')}"}, 200),
        "admin token (header)": ({"Authorization": f"Bearer {token('admin')}"}, 200),
    }
    seen = {}
    for route in ROUTES:
        for case, (headers, _) in cases.items():
            seen[(route, case)] = client.get(route, headers=headers).status_code
        client.cookies.set("_token", token("admin"))  # the UI's session cookie: what a browser sends
        seen[(route, "UI session cookie")] = client.get(route).status_code
        client.cookies.clear()
    expected = {(r, c): status for r in ROUTES for c, (_, status) in cases.items()}
    expected.update({(r, "UI session cookie"): 200 for r in ROUTES})
    assert seen == expected


def test_health_is_open_and_says_nothing_about_the_machine(app):
    client, _ = app
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 404, path


def test_reports_serve_files_and_nothing_outside_their_folder(app):
    client, token = app
    auth = {"Authorization": f"Bearer {token('admin')}"}
    ok = client.get("/reports/churn/index.html", headers=auth)
    assert ok.status_code == 200 and "Data Docs" in ok.text
    assert client.get("/reports/churn/", headers=auth).status_code == 200  # index.html of a folder
    for path in (
        "/reports/../home/secrets.env",
        "/reports/%2e%2e/home/secrets.env",
        "/reports/..%2fhome%2fsecrets.env",
        "/reports/churn/%2e%2e/%2e%2e/home/secrets.env",
        "/reports/escape/secrets.env",  # a symlink out of the folder
    ):
        r = client.get(path, headers=auth)
        assert r.status_code == 404 and "do-not-serve-me" not in r.text, (path, r.status_code)
