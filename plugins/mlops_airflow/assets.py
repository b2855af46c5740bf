"""The Assets that connect the pipelines: validated data -> training, candidate model -> deployment."""

from __future__ import annotations

from airflow.sdk import Asset


def validated_data_asset(model: str) -> Asset:
    return Asset(name=f"{model}_validated_data", uri=f"mlops://{model}/validated-data", group="data")


def candidate_model_asset(model: str) -> Asset:
    """Updated when a version passes the offline gate; the deployment DAG is scheduled on it."""
    return Asset(name=f"{model}_candidate_model", uri=f"mlops://{model}/candidate-model", group="model")
