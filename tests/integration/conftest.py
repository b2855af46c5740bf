from __future__ import annotations

import pytest

from tests.helpers import mlflow_server


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """One real MLflow tracking server for the integration session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
