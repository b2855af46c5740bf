"""Steps of the training pipeline as plain functions (the DAG tasks call these, nothing more)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mlops.data import SUPPORTED_SUFFIXES
from mlops.gate import GateFailed, GateResult, bounds_from_config, validate_metrics
from mlops.modelconfig import ModelConfig
from mlops.registry import CHALLENGER, alias_version, promote, record_gate

log = logging.getLogger(__name__)


def landing_dir(data_root: str | Path, model: str) -> Path:
    return Path(data_root) / "landing" / model


def list_batches(data_root: str | Path, model: str) -> list[Path]:
    """Batch files waiting in ``<data_root>/landing/<model>/``, oldest name first (hidden files skipped)."""
    folder = landing_dir(data_root, model)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES
    )


@dataclass(frozen=True)
class GateOutcome:
    version: str
    result: GateResult
    promoted: bool
    former_champion: str | None


def gate_and_promote(cfg: ModelConfig, tracking_uri: str, version: str, run_id: str) -> GateOutcome:
    """Judge a registered version against the config's absolute bounds and record the decision.

    Pass: the version becomes ``@champion`` (the former one ``@previous``).
    Fail: the version keeps ``gate=failed``, loses ``@challenger``, and :class:`GateFailed` is raised.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    result = validate_metrics(metrics, bounds_from_config(cfg.gate.min, cfg.gate.max))
    for reason in result.reasons:
        log.info("gate: %s", reason)
    record_gate(client, cfg.registered_model_name, version, run_id, result)
    if not result.passed:
        if alias_version(client, cfg.registered_model_name, CHALLENGER) == version:
            client.delete_registered_model_alias(cfg.registered_model_name, CHALLENGER)
        raise GateFailed(result)
    former = promote(client, cfg.registered_model_name, version)
    return GateOutcome(version=version, result=result, promoted=True, former_champion=former)
