"""Every Asset that connects the pipelines: data -> training -> candidate -> deployment -> champion -> drift."""

from __future__ import annotations

from airflow.sdk import Asset


def validated_data_asset(model: str) -> Asset:
    return Asset(name=f"{model}_validated_data", uri=f"mlops://{model}/validated-data", group="data")


def candidate_model_asset(model: str) -> Asset:
    """Updated when a version passes the offline gate; the deployment DAG is scheduled on it."""
    return Asset(name=f"{model}_candidate_model", uri=f"mlops://{model}/candidate-model", group="model")


def champion_model_asset(model: str) -> Asset:
    """Updated when a version becomes ``@champion`` (promotion or rollback); extra: version, promoted_at.

    The monitoring DAG is scheduled on it, so the first drift verdict on a new champion is about the
    traffic that version served as champion.
    """
    return Asset(name=f"{model}_champion", uri=f"mlops://{model}/champion", group="model")


def drift_asset(model: str) -> Asset:
    """Updated when a drift check finds drift; extra: version, DVC revision, features, report."""
    return Asset(name=f"{model}_drift", uri=f"mlops://{model}/drift", group="monitoring")
