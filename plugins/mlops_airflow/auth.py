"""Who may open the platform's pages in the api-server: Airflow's own login, not a home-made check.

Airflow mounts plugin FastAPI apps without authentication. :data:`REQUIRE_LOGIN` is the dependency
Airflow's core routes use for views (``requires_access_view``): it reads the same JWT as the UI and
the REST API (``Authorization: Bearer`` or the UI's ``_token`` cookie) and asks the configured auth
manager whether the user may see plugin views. No or expired token: 401; invalid token or not
allowed: 403.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from fastapi import Depends

REQUIRE_LOGIN = Depends(requires_access_view(AccessView.PLUGINS))
