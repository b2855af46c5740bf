"""Drift monitoring of the serving champion: its prediction log window against its reference profile.

The model server logs sampled requests (inputs, score, model version) as JSONL under
``$MLOPS_HOME/predictions/<model>/``; training stored the version's reference profile as
``drift/reference_profile.json`` on its run. :func:`check_drift` reads the window of the current
``@champion``'s requests, runs :func:`mlops.drift.detect`, writes the HTML report and the JSON result
next to the other reports, and logs the check to MLflow (experiment ``<model>-monitoring``: metrics
per feature, the report as an artifact). Every result names the model version and the DVC revision of
the data it was trained on.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.registry import CHAMPION, alias_version
from mlops.training import REFERENCE_PROFILE_FILE

if TYPE_CHECKING:
    import pandas as pd

    from mlops.modelconfig import ModelConfig

log = logging.getLogger(__name__)


def logged_frame(folder: Path, since: float, model_version: str, max_rows: int = 1_000_000) -> pd.DataFrame:
    """Logged requests of ``model_version`` with a timestamp >= ``since`` (epoch seconds), newest last.

    Columns: every input feature plus ``score``. Files not modified since ``since`` are not opened.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    scores: list[Any] = []
    files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    stamp = datetime.fromtimestamp(since, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    for path in files:
        if path.stat().st_mtime < since:
            continue
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line being written, or a torn tail after a crash
                if str(rec.get("model_version")) != str(model_version) or rec.get("ts", "") < stamp:
                    continue
                if isinstance(rec.get("inputs"), dict):
                    rows.append(rec["inputs"])
                    scores.append(rec.get("score"))
    rows, scores = rows[-max_rows:], scores[-max_rows:]
    frame = pd.DataFrame(rows)
    frame["score"] = pd.to_numeric(pd.Series(scores, dtype="object"), errors="coerce")
    return frame


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
    import mlflow
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from mlops.drift import ReferenceProfile, detect
    from mlops.drift_report import write_report

    client = MlflowClient(tracking_uri)
    name = cfg.registered_model_name
    version = version or alias_version(client, name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no @champion: nothing is served, nothing to monitor")
    mv = client.get_model_version(name, str(version))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download_artifacts(
                run_id=mv.run_id,
                artifact_path=f"drift/{REFERENCE_PROFILE_FILE}",
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
    # No traffic at all is "insufficient data" (the columns exist, with no rows), never a crash.
    frame = logged_frame(predictions_dir, since, str(version)).reindex(columns=[*profile.features, "score"])
    has_score = profile.score is not None and len(frame) and frame["score"].notna().any()
    result = detect(profile, frame, score="score" if has_score else None)
    dvc_rev = mv.tags.get("mlops.dvc_rev", "unknown")
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
        mlflow.set_tags({"model": name, "model_version": str(version), "mlops.dvc_rev": dvc_rev,
                         "drift.status": result.status})  # fmt: skip
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
