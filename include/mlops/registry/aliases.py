"""Model registry operations on MLflow: aliases and gate records.

Aliases, never stages: ``@challenger`` (newest candidate), ``@champion`` (serving), ``@previous``
(the champion before, for one-step rollback).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.registry import tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops.gate.policy import GateResult

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point ``@alias`` of model ``name`` at ``version``; a new ``@champion`` is also tagged with the time."""
    client.set_registered_model_alias(name, alias, str(version))
    if alias == CHAMPION:
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, str(version), tags.PROMOTED_AT, stamp)
    log.info("alias @%s of %s -> version %s", alias, name, version)


def promoted_at(client: MlflowClient, name: str, version: str) -> float | None:
    """When ``version`` last became ``@champion`` (epoch seconds), or None if it never did."""
    from datetime import datetime

    stamp = client.get_model_version(name, str(version)).tags.get(tags.PROMOTED_AT)
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Make ``version`` the champion; the former champion (if any) becomes ``@previous``.

    Returns the former champion's version. Promoting the current champion again is a no-op.
    """
    former = alias_version(client, name, CHAMPION)
    if former == str(version):
        return former
    if former is not None:
        set_alias(client, name, PREVIOUS, former)
    set_alias(client, name, CHAMPION, version)
    if alias_version(client, name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return former


def record_gate(client: MlflowClient, name: str, version: str, run_id: str, result: GateResult) -> None:
    """Write the gate decision to the model version (tags) and its run (``gate/gate.json``)."""
    client.set_model_version_tag(name, version, tags.GATE, result.decision)
    client.set_model_version_tag(name, version, tags.GATE_REASONS, " ".join(result.reasons)[:5000])
    client.set_model_version_tag(name, version, tags.GATE_FAILED_CHECKS, json.dumps(result.failed_checks))
    if result.champion_version:
        client.set_model_version_tag(name, version, tags.GATE_CHAMPION_VERSION, result.champion_version)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gate.json"
        path.write_text(result.to_json())
        client.log_artifact(run_id, str(path), artifact_path="gate")


def register_version(name: str, model_uri: str, version_tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name`` (current tracking URI); returns the version.

    One request creates the version with its tags, so a version never exists without the lineage that
    says which Airflow run made it (what :func:`remove_unjudged` relies on after a failed try).
    """
    import mlflow

    return str(mlflow.register_model(model_uri, name, tags=version_tags).version)


def remove_unjudged(client: MlflowClient, name: str, dag_id: str, run_id: str) -> list[str]:
    """Delete versions an earlier try of this Airflow run registered and nobody judged; their numbers.

    A training try can die between registering a version and the end of the task (the tracking server
    going away, the pod evicted). The retry registers a new version; the earlier one, without a gate
    record, would be left behind for ever. Only versions of the same run (``airflow.dag_id`` and
    ``airflow.run_id`` tags) without a ``gate`` tag are touched: a judged version is a record.
    """
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    removed = []
    for mv in versions:
        t = mv.tags or {}
        if (
            t.get(tags.AIRFLOW_DAG_ID) == dag_id
            and t.get(tags.AIRFLOW_RUN_ID) == run_id
            and tags.GATE not in t
        ):
            client.delete_model_version(name, str(mv.version))
            log.warning(
                "removed version %s of %s: registered by an earlier try of %s/%s and never judged",
                mv.version,
                name,
                dag_id,
                run_id,
            )
            removed.append(str(mv.version))
    return removed
