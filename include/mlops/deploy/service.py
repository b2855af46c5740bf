"""Deployment operations the Airflow tasks call (no Airflow here): candidate, smoke, records, rollback.

Every step leaves its result on the MLflow model version as a ``deploy.<step>`` tag as it happens, so
the final record (:func:`final_record`) is complete even when a step failed half-way: one gate record
per version with the offline gate, the smoke test, each analysis window, the approval and the decision.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import defaults
from mlops.deploy.target import STABLE, DeploymentError, DeploymentTarget
from mlops.registry import CHALLENGER, CHAMPION, PREVIOUS, alias_version, promote, set_alias
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.modelconfig import ModelConfig

log = logging.getLogger(__name__)

TAG_MAX = 4900  # MLflow model-version tag values are limited to 5000 characters


def target_kind(cfg: ModelConfig) -> str:
    return defaults.deploy_target(cfg.deployment.target)


def make_target(cfg: ModelConfig, tracking_uri: str, settings: Settings | None = None) -> DeploymentTarget:
    """The configured target of this model (``MLOPS_DEPLOY_TARGET`` overrides the model config)."""
    kind = target_kind(cfg)
    if kind == "local":
        from mlops.deploy.local import LocalTarget

        s = (settings or Settings()).model_copy(update={"mlflow_tracking_uri": tracking_uri})
        port = cfg.deployment.port
        if port is None:
            if cfg.name != s.serving_model:
                raise DeploymentError(
                    f"{cfg.name}: set deployment.port in its model config (the default port "
                    f"{s.serving_port} belongs to the serving model {s.serving_model!r})"
                )
            port = s.serving_port
        return LocalTarget(cfg.name, s, port=port, workers=cfg.deployment.workers)
    if kind == "kubernetes":
        from mlops.deploy.kubernetes import KubernetesTarget

        return KubernetesTarget(cfg.name, cfg.deployment.kubernetes)
    raise DeploymentError(f"unknown deployment target {kind!r}: local or kubernetes")


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def tag(tracking_uri: str, name: str, version: str, key: str, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    _client(tracking_uri).set_model_version_tag(name, str(version), f"deploy.{key}", text[:TAG_MAX])


def resolve_candidate(
    cfg: ModelConfig, tracking_uri: str, requested: str | None, from_event: str | None, force: bool = False
) -> dict[str, Any] | None:
    """The version to deploy (form > Asset event > ``@challenger``) and the stable one; None: nothing to do.

    Raises ValueError when the version did not pass the offline gate (unless ``force``).
    """
    client = _client(tracking_uri)
    name = cfg.registered_model_name
    version = requested or from_event or alias_version(client, name, CHALLENGER)
    if not version:
        return None
    mv = client.get_model_version(name, str(version))
    champion = alias_version(client, name, CHAMPION)
    if champion == str(version):
        log.info("%s v%s is already @champion: nothing to deploy", name, version)
        return None
    gate = mv.tags.get("gate", "none")
    forced = mv.tags.get("gate.forced") == "true"
    if gate != "passed" and not (force or forced):
        raise ValueError(
            f"{name} v{version} did not pass the offline gate (gate={gate}); "
            "deploy it anyway only with force (recorded on the version)"
        )
    return {
        "model": name,
        "version": str(version),
        "stable_version": champion,
        "run_id": mv.run_id,
        "gate": gate,
        "forced": bool(force and gate != "passed"),
        "trigger": mv.tags.get("mlops.trigger", ""),  # "alert": retrained by the retraining DAG
        "alert": mv.tags.get("mlops.alert.name", ""),
    }


def holdout_sample(cfg: ModelConfig, tracking_uri: str, run_id: str, rows: int):
    """The candidate's holdout features and the scores its training run recorded for them."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    from mlops.training import HOLDOUT_FILE, SCORE_COLUMN

    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(
            run_id=run_id, artifact_path=f"eval/{HOLDOUT_FILE}", tracking_uri=tracking_uri, dst_path=tmp
        )
        frame = pd.read_parquet(path).head(rows)
    return frame[cfg.features.all], frame[SCORE_COLUMN].astype(float).tolist()


def finish(cfg: ModelConfig, tracking_uri: str, state: dict[str, Any]) -> dict[str, Any]:
    """Registry side of a finished rollout: promoted -> @champion (former @previous); else untouched."""
    client = _client(tracking_uri)
    name, version = cfg.registered_model_name, state["version"]
    tag(tracking_uri, name, version, "rollout", _compact(state))
    if state["outcome"] == "promoted":
        former = promote(client, name, version)
        return {"champion": version, "previous": former}
    if alias_version(client, name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return {"champion": alias_version(client, name, CHAMPION), "previous": None}


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    keep = ("decision", "reasons", "score_shift", "compared_with")
    steps = []
    for h in state["history"]:
        step = {"phase": h["phase"], **{k: h[k] for k in keep if k in h}}
        for side in ("canary", "stable"):
            if isinstance(h.get(side), dict):
                step[side] = {k: h[side].get(k) for k in ("requests", "errors", "error_rate", "p95_ms")}
        steps.append(step)
    return {
        "strategy": state["strategy"],
        "outcome": state["outcome"],
        "reasons": state["reasons"],
        "stable_version": state["stable_version"],
        "replayed": state.get("replayed", 0),
        "analysis_overrides": state.get("analysis_overrides", {}),
        "steps": steps,
    }


def final_record(tracking_uri: str, name: str, version: str) -> dict[str, Any]:
    """Assemble the version's one gate record from its tags and store it as ``deploy/record.json``."""
    client = _client(tracking_uri)
    mv = client.get_model_version(name, str(version))
    tags = mv.tags

    def parsed(key: str) -> Any:
        raw = tags.get(key)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    rollout = parsed("deploy.rollout")
    smoke = parsed("deploy.smoke")
    approval = parsed("deploy.approval")
    if rollout and rollout.get("outcome") == "promoted":
        decision = "promoted"
    elif rollout:
        decision = "rolled_back"
    elif smoke and not smoke.get("passed"):
        decision = "failed_smoke_test"
    elif approval and not approval.get("approved"):
        decision = "not_approved"
    else:
        decision = "not_deployed"
    record = {
        "model": name,
        "version": str(version),
        "offline_gate": {
            "decision": tags.get("gate"),
            "reasons": tags.get("gate.reasons"),
            "champion_version": tags.get("gate.champion_version"),
            "forced": tags.get("gate.forced") == "true",
        },
        "staging": parsed("deploy.staging"),
        "smoke_test": smoke,
        "approval": approval,
        "rollout": rollout,
        "decision": decision,
    }
    client.set_model_version_tag(name, str(version), "deploy.decision", decision)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "record.json"
        path.write_text(json.dumps(record, indent=2, default=str))
        client.log_artifact(mv.run_id, str(path), artifact_path="deploy")
    return record


def rollback(cfg: ModelConfig, tracking_uri: str, target: DeploymentTarget) -> dict[str, Any]:
    """Production back to ``@previous`` in one action; ``@champion`` follows, the bad version is tagged.

    A warm ``previous`` backend (blue-green) takes the traffic at once; otherwise ``@previous`` is
    started as green, checked ready, and switched to.
    """
    client = _client(tracking_uri)
    name = cfg.registered_model_name
    previous = alias_version(client, name, PREVIOUS)
    champion = alias_version(client, name, CHAMPION)
    if previous is None:
        raise DeploymentError(f"{name} has no @previous version to roll back to")
    warm = target.backends().get(PREVIOUS)
    if warm is not None and warm.version == previous:
        target.set_weights({PREVIOUS: 100})
        target.promote(PREVIOUS)
        how = "switched to the warm previous backend"
    else:
        target.deploy("green", previous)
        target.set_weights({"green": 100})
        target.promote("green")
        how = f"started v{previous} and switched all traffic to it"
    serving = target.backends().get(STABLE)
    if serving is None or serving.version != previous:
        raise DeploymentError(f"{name}: rollback did not take effect (stable is {serving})")
    set_alias(client, name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    if champion:
        client.set_model_version_tag(name, champion, "deploy.decision", "rolled_back_from_production")
    log.warning("%s: production rolled back from v%s to v%s (%s)", name, champion, previous, how)
    return {"from": champion, "to": previous, "how": how}


def recent_logged_rows(folder: Path, n: int) -> list[dict[str, Any]]:
    """The ``n`` most recent input rows of the prediction log (JSONL files, newest first)."""
    rows: list[dict[str, Any]] = []
    files = (
        sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
        if folder.exists()
        else []
    )
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - (4 << 20)))  # the tail is enough: at most 4 MB per file
            lines = fh.read().splitlines()
        if size > (4 << 20):
            lines = lines[1:]  # the first line of a tail is partial
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec.get("inputs"), dict):
                rows.append(rec["inputs"])
            if len(rows) >= n:
                return rows
    return rows


def replayer(cfg: ModelConfig, target: DeploymentTarget, settings: Settings | None = None):
    """A function replaying logged requests to the stable and candidate backends (analysis top-up)."""
    import httpx

    folder = (settings or Settings()).home / "predictions" / cfg.name

    def replay(n: int) -> int:
        rows = recent_logged_rows(folder, max(0, n))
        if not rows:
            return 0
        urls = [b.url for role, b in target.backends().items() if role != PREVIOUS]
        sent = 0
        with httpx.Client(timeout=30.0, trust_env=False) as http:
            for row in rows:
                for url in urls:
                    http.post(f"{url}/invocations", json={"dataframe_records": [row]})
                sent += 1
        return sent

    return replay
