"""Deployment operations the Airflow tasks call (no Airflow here): candidate, smoke, records, rollback.

Every step leaves its result on the MLflow model version as a ``deploy.<step>`` tag as it happens, so
the final record (:func:`final_record`) is complete even when a step failed half-way: one gate record
per version with the offline gate, the smoke test, each analysis window, the approval and the decision.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import defaults
from mlops.config.settings import Settings
from mlops.deploy.target import STABLE, DeploymentError, DeploymentTarget
from mlops.registry import tags
from mlops.registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version, promote, set_alias
from mlops.registry.client import mlflow_client
from mlops.serving.predlog import predictions_dir, recent_logged_rows

if TYPE_CHECKING:
    from mlops.config.model import ModelConfig

log = logging.getLogger(__name__)

TAG_MAX = 4900  # MLflow model-version tag values are limited to 5000 characters


def target_kind(cfg: ModelConfig) -> str:
    """The deployment target of ``cfg``'s model: ``MLOPS_DEPLOY_TARGET``, else its config's."""
    return defaults.deploy_target(cfg.deployment.target)


def make_target(cfg: ModelConfig, tracking_uri: str, settings: Settings | None = None) -> DeploymentTarget:
    """The configured target of this model (``MLOPS_DEPLOY_TARGET`` overrides the model config)."""
    kind = target_kind(cfg)
    if kind == "local":
        from mlops.deploy.local.target import LocalTarget

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
        from mlops.deploy.kubernetes.target import KubernetesTarget

        return KubernetesTarget(cfg.name, cfg.deployment.kubernetes)
    raise DeploymentError(f"unknown deployment target {kind!r}: local or kubernetes")


def _client(tracking_uri: str):
    return mlflow_client(tracking_uri)


def tag(tracking_uri: str, name: str, version: str, key: str, value: Any) -> None:
    """Set a deployment-step tag on a model version (a non-string value as JSON, cut to ``TAG_MAX``)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    _client(tracking_uri).set_model_version_tag(name, str(version), tags.deploy_step(key), text[:TAG_MAX])


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
    gate = mv.tags.get(tags.GATE, "none")
    forced = mv.tags.get(tags.GATE_FORCED) == "true"
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
        "trigger": mv.tags.get(tags.TRIGGER, ""),  # "alert": retrained by the retraining DAG
        "alert": mv.tags.get(tags.ALERT_NAME, ""),
    }


def holdout_sample(cfg: ModelConfig, tracking_uri: str, run_id: str, rows: int):
    """The candidate's holdout features and the scores its training run recorded for them."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    from mlops.training.artifacts import HOLDOUT_ARTIFACT, SCORE_COLUMN

    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(
            run_id=run_id, artifact_path=HOLDOUT_ARTIFACT, tracking_uri=tracking_uri, dst_path=tmp
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


#: While the registry cannot be written at the end of a rollout: retry every REGISTRY_RETRY_S seconds (the
#: operator defers), at most REGISTRY_PATIENCE_S in all; then the candidate is removed, stable keeps serving.
REGISTRY_RETRY_S = 30.0
REGISTRY_PATIENCE_S = 3600.0


def conclude(
    cfg: ModelConfig,
    tracking_uri: str,
    target: DeploymentTarget,
    state: dict[str, Any],
    now: Callable[[], float] = time.time,
) -> tuple[dict[str, Any], dict[str, Any] | None, float | None]:
    """End a finished rollout: the record and aliases first, traffic for good after.

    Returns ``(state, result, None)`` when done, or ``(state, None, seconds)``: the registry cannot be
    written now (tracking server away), so nothing moves: traffic stays on stable (:func:`rollout.hold`),
    ``@champion`` untouched; call again after ``seconds``. After ``REGISTRY_PATIENCE_S`` the candidate is
    removed and :class:`DeploymentError` says why (stable keeps serving; the candidate can be deployed
    again).
    """
    from mlops.deploy.rollout import PROMOTED, complete, hold
    from mlops.registry.client import registry_unreachable

    try:
        result = finish(cfg, tracking_uri, state)
    except Exception as exc:
        if not registry_unreachable(exc):
            raise
        since = state.setdefault("registry_unreachable_since", now())
        hold(target, state)
        waited = now() - since
        if waited >= REGISTRY_PATIENCE_S:
            if state["outcome"] == PROMOTED and state.get("stable_version"):
                target.remove(state["role"])
            raise DeploymentError(
                f"{cfg.name} v{state['version']}: the model registry at {tracking_uri} was unreachable for "
                f"{waited:.0f} s, so the rollout ({state['outcome']}) could not be recorded; nothing was "
                f"promoted and stable keeps serving. Last error: {exc}"
            ) from exc
        log.warning(
            "%s v%s: cannot record the rollout (%s) in the registry (%s); traffic held on stable, "
            "retrying in %.0f s (given up after %.0f s)",
            cfg.name,
            state["version"],
            state["outcome"],
            str(exc)[:300],
            REGISTRY_RETRY_S,
            REGISTRY_PATIENCE_S - waited,
        )
        return state, None, REGISTRY_RETRY_S
    state.pop("registry_unreachable_since", None)
    return complete(target, state), result, None


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    """The rollout as recorded on the version: every window with its live and replayed candidate requests."""
    keep = ("window", "decision", "reasons", "live", "replayed", "score_shift", "compared_with")
    steps = []
    for h in state["history"]:
        step = {"phase": h["phase"], **{k: h[k] for k in keep if k in h}}
        for side in ("canary", "stable"):
            if isinstance(h.get(side), dict):
                step[side] = {k: h[side].get(k) for k in ("requests", "errors", "error_rate", "p95_ms")}
        steps.append(step)
    judged = [h for h in state["history"] if "live" in h]
    return {
        "strategy": state["strategy"],
        "outcome": state["outcome"],
        "reasons": state["reasons"],
        "stable_version": state["stable_version"],
        # candidate requests the analysed windows used: live (clients) and replayed (logged requests)
        "requests": {
            "live": sum(int(h["live"]) for h in judged),
            "replayed": sum(int(h.get("replayed", 0)) for h in judged),
        },
        "replayed": state.get("replayed", 0),  # every replayed request sent (to stable and candidate)
        "allow_replay_only": state.get("allow_replay_only", False),
        "analysis_overrides": state.get("analysis_overrides", {}),
        "steps": steps,
    }


def final_record(tracking_uri: str, name: str, version: str) -> dict[str, Any]:
    """Assemble the version's one gate record from its tags and store it as ``deploy/record.json``."""
    client = _client(tracking_uri)
    mv = client.get_model_version(name, str(version))
    mv_tags = mv.tags

    def parsed(key: str) -> Any:
        raw = mv_tags.get(key)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    rollout = parsed(tags.DEPLOY_ROLLOUT)
    smoke = parsed(tags.DEPLOY_SMOKE)
    approval = parsed(tags.DEPLOY_APPROVAL)
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
            "decision": mv_tags.get(tags.GATE),
            "reasons": mv_tags.get(tags.GATE_REASONS),
            "champion_version": mv_tags.get(tags.GATE_CHAMPION_VERSION),
            "forced": mv_tags.get(tags.GATE_FORCED) == "true",
        },
        "staging": parsed(tags.DEPLOY_STAGING),
        "smoke_test": smoke,
        "approval": approval,
        "rollout": rollout,
        "decision": decision,
    }
    client.set_model_version_tag(name, str(version), tags.DEPLOY_DECISION, decision)
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
        client.set_model_version_tag(name, champion, tags.DEPLOY_DECISION, "rolled_back_from_production")
    log.warning("%s: production rolled back from v%s to v%s (%s)", name, champion, previous, how)
    return {"from": champion, "to": previous, "how": how}


def replayer(cfg: ModelConfig, target: DeploymentTarget, settings: Settings | None = None):
    """A function replaying logged requests to the stable and candidate backends (analysis top-up).

    Each logged row goes straight to every backend's own URL (not through the weighted endpoint), so the
    candidate receives each replayed request exactly once; ``replay(n)`` returns how many reached the
    candidate, which the rollout subtracts from the candidate's request count to tell live traffic from
    replayed. A request that never reached a server (connection refused, no free connection) is not
    counted, and the replay stops there (the analysis sees the backend's state on its own).
    """
    import httpx

    settings = settings or Settings()
    folder = predictions_dir(settings.home, cfg.name)
    not_sent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

    def replay(n: int) -> int:
        rows = recent_logged_rows(folder, max(0, n))
        if not rows:
            return 0
        urls = {role: b.url for role, b in target.backends().items() if role != PREVIOUS}
        reached = 0
        with httpx.Client(timeout=30.0, trust_env=False, headers=settings.endpoint_headers()) as http:
            for row in rows:
                for role, url in urls.items():
                    try:
                        http.post(f"{url}/invocations", json={"dataframe_records": [row]})
                    except httpx.HTTPError as exc:
                        if role != STABLE and not isinstance(exc, not_sent):
                            reached += 1  # sent: the server counts it even if the answer was lost
                        log.warning("replay to %s (%s) stopped: %s: %s", role, url, type(exc).__name__, exc)
                        return reached
                    if role != STABLE:
                        reached += 1
        return reached

    return replay


def champion_event(tracking_uri: str, cfg: ModelConfig, version: str) -> dict[str, Any]:
    """What the champion-model Asset event carries: the new ``@champion`` and when it took over."""
    mv_tags = _client(tracking_uri).get_model_version(cfg.registered_model_name, str(version)).tags
    return {"model": cfg.name, "version": str(version), "promoted_at": mv_tags.get(tags.PROMOTED_AT)}


def deployment_plan(
    cfg: ModelConfig,
    cand: dict[str, Any],
    *,
    strategy: str,
    steps: list[int],
    analysis_overrides: dict[str, Any] | None,
    allow_replay_only: bool = False,
) -> dict[str, Any]:
    """The candidate with how it rolls out: strategy, canary steps and the analysis policy of this run.

    Overrides come from the run's form; without any, an alert-driven retrain gets the config's
    ``retraining.analysis_overrides``. Everything applied is returned (and recorded by the rollout).

    Raises:
        ValueError: steps that do not rise strictly to 100, or overrides the analysis policy refuses.
    """
    from mlops.config.model import AnalysisConfig

    steps = [int(w) for w in steps]
    if not steps or sorted(set(steps)) != steps or steps[-1] != 100 or steps[0] < 1:
        raise ValueError(f"steps must rise strictly and end at 100, got {steps}")
    overrides = dict(analysis_overrides or {})
    if not overrides and cand.get("trigger") == tags.TRIGGER_ALERT:
        overrides = dict(cfg.retraining.analysis_overrides)
        log.info("v%s was retrained on alert %s: analysis overrides %s (retraining.analysis_overrides)",
                 cand["version"], cand.get("alert"), overrides)  # fmt: skip
    if allow_replay_only:
        overrides["allow_replay_only"] = True
    try:
        analysis = AnalysisConfig(**{**cfg.deployment.analysis.model_dump(), **overrides})
    except ValueError as exc:
        raise ValueError(f"analysis overrides refused: {exc}") from exc
    return {**cand, "strategy": strategy, "steps": steps, "analysis": analysis.model_dump(),
            "analysis_overrides": overrides}  # fmt: skip
