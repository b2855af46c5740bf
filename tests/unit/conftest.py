"""Fixtures of the unit suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def airflow_auth(monkeypatch):
    """Airflow's configured auth manager (the simple one), initialised as the api-server does, and tokens.

    Returns ``token(role, expires_in=...)``: a JWT signed by that auth manager for a user with ``role``
    (``None``: a user without any role).
    """
    from airflow import settings
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken

    monkeypatch.setenv(
        "AIRFLOW__API_AUTH__JWT_SECRET", "unit-test-jwt-secret-0123456789abcdef-0123456789abcdef-0123456789ab"
    )
    if settings.engine is None:
        settings.configure_orm()
    RevokedToken.__table__.create(settings.engine, checkfirst=True)  # token validation checks revocation
    manager = create_auth_manager()
    manager.init()

    def token(role: str | None = "admin", expires_in: int = 3600) -> str:
        user = SimpleAuthManagerUser(username=f"user-{role}", role=role)
        return manager.generate_jwt(user, expiration_time_in_seconds=expires_in)

    return token
