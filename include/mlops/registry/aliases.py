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
