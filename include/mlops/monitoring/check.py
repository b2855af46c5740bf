"""Drift monitoring of the serving champion: its prediction log window against its reference profile.

The model server logs sampled requests (inputs, score, model version) as JSONL under
``$MLOPS_HOME/predictions/<model>/``; training stored the version's reference profile as
``drift/reference_profile.json`` on its run. :func:`check_drift` reads the window of the current
``@champion``'s requests, runs :func:`mlops.drift.detect.detect`, writes the HTML report and the JSON result
next to the other reports, and logs the check to MLflow (experiment ``<model>-monitoring``: metrics
per feature, the report as an artifact). Every result names the model version and the DVC revision of
the data it was trained on.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.registry import tags
from mlops.registry.aliases import CHAMPION, alias_version, promoted_at
from mlops.registry.client import mlflow_client
from mlops.serving.predlog import logged_frame
from mlops.training.artifacts import REFERENCE_PROFILE_ARTIFACT

if TYPE_CHECKING:
    from mlops.config.model import ModelConfig

log = logging.getLogger(__name__)


def check_drift(
    cfg: ModelConfig,
    tracking_uri: str,
    predictions_dir: Path,
    reports_dir: Path,
    window_hours: float = 1.0,
    version: str | None = None,
    since: float | None = None,
) -> dict[str, Any]:
    """Drift of the champion's (or ``version``'s) logged traffic in the last ``window_hours``
    (or since the epoch time ``since``).

    Returns a JSON-safe summary: status (``drift`` / ``no_drift`` / ``insufficient_data``), drifted
    features, the version, its DVC revision, the report paths and the MLflow run of the check.
    """
    # Long by design: the check's steps in order (champion, window, prediction log, detection, report, MLflow
    # run), each a call into another module.
    import mlflow
    from mlflow.artifacts import download_artifacts

    from mlops.drift.detect import detect
    from mlops.drift.profile import ReferenceProfile
    from mlops.drift.report import write_report

    client = mlflow_client(tracking_uri)
    name = cfg.registered_model_name
    champion = alias_version(client, name, CHAMPION)
    version = version or champion
    if version is None:
        raise LookupError(f"{name} has no @champion: nothing is served, nothing to monitor")
    mv = client.get_model_version(name, str(version))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download_artifacts(
                run_id=mv.run_id,
                artifact_path=REFERENCE_PROFILE_ARTIFACT,
                tracking_uri=tracking_uri,
                dst_path=tmp,
            )
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise LookupError(
                f"{name} v{version} has no drift reference profile (trained before profiles were stored?): {exc}"
            ) from exc
        profile = ReferenceProfile.load(path)
    if since is None:
        since = time.time() - window_hours * 3600.0
    # The champion is judged on traffic it served as champion: never on its canary windows, nor on a
    # window that began before it took over (that traffic was the former champion's population).
    took_over = promoted_at(client, name, str(version)) if str(version) == champion else None
    if took_over is not None and took_over > since:
        since = took_over
    # No traffic at all is "insufficient data" (the columns exist, with no rows), never a crash.
    frame = logged_frame(predictions_dir, since, str(version)).reindex(columns=[*profile.features, "score"])
    has_score = profile.score is not None and len(frame) and frame["score"].notna().any()
    result = detect(profile, frame, score="score" if has_score else None)
    dvc_rev = mv.tags.get(tags.DVC_REV, "unknown")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = reports_dir / "drift" / name
    out.mkdir(parents=True, exist_ok=True)
    html = write_report(
        result,
        out / f"v{version}-{stamp}.html",
        title=f"Drift of {name} v{version} (data rev {dvc_rev[:12]})",
    )
    summary = {
        "model": name,
        "model_version": str(version),
        "dvc_rev": dvc_rev,
        "status": result.status,
        "drifted_features": result.drifted_features,
        "drifted_share": result.drifted_share,
        "score_drift": bool(result.score and result.score.drifted),
        "rows": result.n_current,
        "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"),
        "window_starts_at_promotion": took_over is not None and since == took_over,
        "message": result.message,
        "report": str(html),
        "features": [
            {"name": f.name, "kind": f.kind, "status": f.status, "psi": f.psi, "p_value": f.p_value}
            for f in result.features
        ],
    }
    (out / f"v{version}-{stamp}.json").write_text(result.to_json())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"{name}-monitoring")
    with mlflow.start_run(run_name=f"drift v{version} {stamp}") as run:
        mlflow.set_tags({"model": name, "model_version": str(version), tags.DVC_REV: dvc_rev,
                         tags.DRIFT_STATUS: result.status})  # fmt: skip
        mlflow.log_metrics({"drift_share": result.drifted_share, "rows": float(result.n_current)})
        for f in result.features:
            for key in ("psi", "statistic"):
                value = getattr(f, key, None)
                if isinstance(value, int | float) and value == value:
                    mlflow.log_metric(f"{key}.{f.name}", float(value))
        mlflow.log_artifact(str(html), artifact_path="drift")
        summary["mlflow_run_id"] = run.info.run_id
        summary["experiment_id"] = run.info.experiment_id
    log.info("drift check of %s v%s: %s", name, version, result.message)
    return summary
