"""The gate applied to a registered version: judge it against @champion, then promote, release or
reject it (aliases and records in the registry).
"""

from __future__ import annotations

import json
import logging

from mlops.config.model import ModelConfig
from mlops.gate.policy import GatePolicy, GateResult, evaluate_gate
from mlops.registry import tags
from mlops.registry.aliases import CHALLENGER, CHAMPION, alias_version, promote, record_gate, set_alias
from mlops.registry.client import mlflow_client

log = logging.getLogger(__name__)


def _split_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    holdout = {k: v for k, v in metrics.items() if not k.startswith("train_")}
    train = {k[len("train_") :]: v for k, v in metrics.items() if k.startswith("train_")}
    return holdout, train


def judge_candidate(
    cfg: ModelConfig,
    tracking_uri: str,
    version: str,
    run_id: str,
    gate_overrides: dict[str, float] | None = None,
) -> GateResult:
    """Gate a registered version: absolute bounds, overfitting, and (when one exists) @champion
    scored on the candidate's own holdout with a paired bootstrap. The decision is recorded on the
    version (tags + ``gate/gate.json``) whatever it is. ``gate_overrides`` change keys of the config's
    gate for this judgement (an alert-driven retrain: ``retraining.gate_overrides``); recorded too."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    from mlops.training.artifacts import HOLDOUT_ARTIFACT, SCORE_COLUMN
    from mlops.training.evaluation import classification_metrics, holdout_scores, paired_bootstrap

    client = mlflow_client(tracking_uri)
    name = cfg.registered_model_name
    candidate, train = _split_metrics(client.get_run(run_id).data.metrics)
    gate = cfg.gate.with_overrides(gate_overrides)
    policy = GatePolicy.from_config(gate)

    champion_version = alias_version(client, name, CHAMPION)
    champion_metrics, ci = None, None
    if champion_version is not None and champion_version != str(version):
        path = download_artifacts(run_id=run_id, artifact_path=HOLDOUT_ARTIFACT, tracking_uri=tracking_uri)
        holdout = pd.read_parquet(path)
        y = holdout[cfg.target].to_numpy()
        new = holdout[SCORE_COLUMN].to_numpy()
        old = holdout_scores(cfg, tracking_uri, f"models:/{name}/{champion_version}", holdout)
        champion_metrics = classification_metrics(y, old, cfg.training.decision_threshold)
        if gate.bootstrap_samples > 0:
            ci = paired_bootstrap(
                y, new, old, metric=gate.primary_metric, samples=gate.bootstrap_samples,
                confidence=gate.confidence, seed=cfg.training.seed, threshold=cfg.training.decision_threshold,
            )  # fmt: skip
    result = evaluate_gate(
        policy, candidate, train=train, champion=champion_metrics, champion_version=champion_version, ci=ci
    )
    for check in result.checks:
        log.info("gate %s: %s", "ok  " if check.passed else "FAIL", check.reason)
    record_gate(client, name, str(version), run_id, result)
    if gate_overrides:
        client.set_model_version_tag(name, str(version), tags.GATE_OVERRIDES, json.dumps(gate_overrides))
    return result


def promote_candidate(cfg: ModelConfig, tracking_uri: str, version: str, forced: bool = False) -> str | None:
    """``version`` becomes @champion (the former one @previous). A forced promotion is tagged as such."""
    client = _forced(cfg, tracking_uri, version, forced)
    return promote(client, cfg.registered_model_name, str(version))


def release_candidate(cfg: ModelConfig, tracking_uri: str, version: str, forced: bool = False) -> None:
    """``version`` stays @challenger for the deployment DAG to take to production (recorded if forced)."""
    client = _forced(cfg, tracking_uri, version, forced)
    set_alias(client, cfg.registered_model_name, CHALLENGER, str(version))


def _forced(cfg: ModelConfig, tracking_uri: str, version: str, forced: bool):
    client = mlflow_client(tracking_uri)
    if forced:
        client.set_model_version_tag(cfg.registered_model_name, str(version), tags.GATE_FORCED, "true")
        log.warning("version %s accepted by force_promote despite its gate decision", version)
    return client


def reject_candidate(cfg: ModelConfig, tracking_uri: str, version: str) -> None:
    """A rejected version loses @challenger; @champion is untouched."""
    client = mlflow_client(tracking_uri)
    if alias_version(client, cfg.registered_model_name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(cfg.registered_model_name, CHALLENGER)
