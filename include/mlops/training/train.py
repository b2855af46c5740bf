"""Training entrypoint: one function (and ``python -m mlops.training``) for every compute backend.

Reads the training set, fits a scikit-learn pipeline (preprocessing + estimator), evaluates it on a
stratified holdout, logs everything to MLflow and registers a new model version with alias
``@challenger``. The result (run id, version, metrics) is returned and, with ``--output``, written as
JSON (``/airflow/xcom/return.json`` on Kubernetes).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config.model import ModelConfig
from mlops.data.io import file_sha256, load_training_frame
from mlops.registry import tags as tags_
from mlops.registry.aliases import CHALLENGER, register_version, remove_unjudged, set_alias
from mlops.registry.client import mlflow_client
from mlops.training.artifacts import (
    HOLDOUT_FILE,
    KNOWN_CATEGORIES,
    REFERENCE_PROFILE_FILE,
    SCORE_COLUMN,
    TrainResult,
)
from mlops.training.spec import git_commit

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


def holdout_mask(ids: pd.Series, fraction: float):
    """Rows whose id hashes into the holdout: the same entity is always on the same side.

    A split by stable hash (not by random draw) means a champion never trained on the rows a later
    challenger is judged on, so comparing both on the challenger's holdout is fair.
    """
    import pandas as pd

    h = pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy()
    return pd.Series((h % 10_000) < int(round(fraction * 10_000)), index=ids.index)


def build_pipeline(cfg: ModelConfig, params: dict[str, Any] | None = None) -> Pipeline:
    """Preprocessing for the config's numeric and categorical features, then the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    hp = {**cfg.training.params, **(params or {})}
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False, min_frequency=5),
    )
    pre = ColumnTransformer(
        [("num", numeric, cfg.features.numeric), ("cat", categorical, cfg.features.categorical)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    estimators = {
        "hist_gradient_boosting": HistGradientBoostingClassifier,
        "random_forest": RandomForestClassifier,
        "logistic_regression": LogisticRegression,
    }
    cls = estimators[cfg.training.estimator]
    try:
        est = cls(random_state=cfg.training.seed, **hp)
    except TypeError as exc:
        raise ValueError(f"invalid hyperparameters for {cfg.training.estimator}: {exc}") from exc
    return Pipeline([("preprocess", pre), ("model", est)])


def evaluate(
    pipe: Pipeline, X: pd.DataFrame, y: pd.Series, cfg: ModelConfig, prefix: str = ""
) -> dict[str, float]:
    """Holdout metrics, plus ROC AUC per segment value (``roc_auc__<segment>__<value>``)."""
    from mlops.training.evaluation import classification_metrics, positive_proba, segment_metrics

    proba = positive_proba(pipe, X)
    m = classification_metrics(y.to_numpy(), proba, cfg.training.decision_threshold)
    m.update(segment_metrics(X, y.to_numpy(), proba, cfg.segments))
    return {f"{prefix}{k}": float(v) for k, v in m.items()}


def train(
    cfg: ModelConfig,
    data_paths: list[str | Path],
    tracking_uri: str,
    *,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
    lineage: dict[str, str] | None = None,
) -> TrainResult:
    """Fit, evaluate, log and register one model version (alias ``@challenger``).

    ``lineage`` describes the versioned training set (``dvc_repo``, ``dvc_rev``, ``data_digest``);
    it becomes run and model-version tags and the tags of the MLflow dataset input.
    """
    # Long by design: the training run in order inside one MLflow run (read, split, fit, evaluate, log,
    # register); its steps share the run and the frames.
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas  # what mlflow.data.from_pandas is, set at runtime
    from mlflow.models import infer_signature

    from mlops.drift.profile import ReferenceProfile

    t0 = time.monotonic()
    paths = [Path(p) for p in data_paths]
    df = load_training_frame(paths, cfg)
    if len(df) < cfg.data.min_rows:
        raise ValueError(f"training set has {len(df)} rows, fewer than data.min_rows={cfg.data.min_rows}")
    y_all = df[cfg.target]
    if y_all.isna().any() or not set(y_all.unique()) <= {0, 1}:
        raise ValueError(f"target {cfg.target!r} must be binary 0/1 with no missing values")
    if y_all.nunique() < 2:
        raise ValueError(f"target {cfg.target!r} has a single class; cannot train a classifier")
    X_all = df[cfg.features.all]
    in_holdout = holdout_mask(df[cfg.id_column], cfg.training.holdout_fraction)
    if in_holdout.all() or not in_holdout.any() or y_all[in_holdout].nunique() < 2:
        raise ValueError(f"holdout split of {len(df)} rows is degenerate; land more data")
    X_tr, X_ho = X_all[~in_holdout], X_all[in_holdout]
    y_tr, y_ho = y_all[~in_holdout], y_all[in_holdout]
    lineage = dict(lineage or {})
    digest = lineage.get("data_digest") or ":".join(file_sha256(p)[:16] for p in paths)

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(cfg.experiment_name)
    all_tags = {
        tags_.MODEL: cfg.name,
        tags_.GIT_COMMIT: git_commit(),
        tags_.DATA_DIGEST: digest,
        **{tags_.lineage(k): str(v) for k, v in lineage.items() if k != "data_digest"},
        **(tags or {}),
    }
    pipe = build_pipeline(cfg, params)
    with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
        hp = {**cfg.training.params, **(params or {})}
        mlflow.log_params(
            {
                "estimator": cfg.training.estimator,
                "holdout_fraction": cfg.training.holdout_fraction,
                "seed": cfg.training.seed,
                "decision_threshold": cfg.training.decision_threshold,
                "n_features": len(cfg.features.all),
                "data_files": ",".join(p.name for p in paths),
                **{f"hp.{k}": v for k, v in hp.items()},
            }
        )
        source = lineage.get("dvc_repo") or str(paths[0].resolve().parent)
        dataset = from_pandas(
            df, source=source, name=f"{cfg.name}-training", targets=cfg.target, digest=digest[:36]
        )
        mlflow.log_input(dataset, context="training", tags={k: str(v) for k, v in lineage.items()} or None)

        log.info("fitting %s on %d rows, %d features", cfg.training.estimator, len(X_tr), X_tr.shape[1])
        pipe.fit(X_tr, y_tr)
        metrics = evaluate(pipe, X_ho, y_ho, cfg)
        metrics.update(evaluate(pipe, X_tr, y_tr, cfg, prefix="train_"))
        mlflow.log_metrics(metrics)
        mlflow.log_metrics({"train_rows": len(X_tr), "holdout_rows": len(X_ho)})
        # The holdout (features, target, this model's score) lets the gate judge @champion on the same rows.
        with tempfile.TemporaryDirectory() as tmp:
            ho = X_ho.assign(**{cfg.target: y_ho.to_numpy(), SCORE_COLUMN: pipe.predict_proba(X_ho)[:, 1]})
            ho.to_parquet(Path(tmp) / HOLDOUT_FILE, index=False)
            mlflow.log_artifact(str(Path(tmp) / HOLDOUT_FILE), artifact_path="eval")
            # The drift reference, computed once here: features and out-of-sample scores of the holdout
            # (same distribution as the training rows); a drift check never reloads the training set.
            profile = ReferenceProfile.from_frame(
                ho, cfg.features.numeric, cfg.features.categorical, score=SCORE_COLUMN
            )
            profile.save(Path(tmp) / REFERENCE_PROFILE_FILE)
            mlflow.log_artifact(str(Path(tmp) / REFERENCE_PROFILE_FILE), artifact_path="drift")

        example = X_ho.head(5)
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            # cloudpickle on purpose: models are only ever loaded from our own registry, and skops
            # refuses tree ensembles unless every internal type is listed as trusted.
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            signature=infer_signature(example, pipe.predict(example)),
            input_example=example,
            # the model server counts only these values per categorical feature (the rest as __other__)
            metadata={KNOWN_CATEGORIES: {c: p.categories for c, p in profile.categorical.items()}},
        )
        client = mlflow_client(tracking_uri)
        dag_id, airflow_run = all_tags.get(tags_.AIRFLOW_DAG_ID), all_tags.get(tags_.AIRFLOW_RUN_ID)
        if dag_id and airflow_run:  # a retried task: what an earlier try left half-done goes first
            remove_unjudged(client, cfg.registered_model_name, dag_id, airflow_run)
        version = register_version(
            cfg.registered_model_name, info.model_uri, {**all_tags, tags_.RUN_ID: run.info.run_id}
        )
        try:
            set_alias(client, cfg.registered_model_name, CHALLENGER, version)
        except Exception:
            _discard(client, cfg.registered_model_name, version)
            raise

    result = TrainResult(
        model=cfg.name,
        run_id=run.info.run_id,
        experiment_id=experiment.experiment_id,
        model_version=version,
        model_uri=f"models:/{cfg.registered_model_name}/{version}",
        metrics={k: round(v, 6) for k, v in metrics.items() if not k.startswith("train_")},
        train_rows=len(X_tr),
        holdout_rows=len(X_ho),
        data_digest=digest,
        duration_s=round(time.monotonic() - t0, 3),
    )
    log.info("registered %s version %s (run %s)", cfg.name, version, run.info.run_id)
    return result


def _discard(client: Any, name: str, version: str) -> None:
    """Best effort: delete a version whose registration could not be completed (a retry cleans up otherwise)."""
    try:
        client.delete_model_version(name, version)
        log.warning("deleted version %s of %s: its registration could not be completed", version, name)
    except Exception as exc:  # the server is likely still away: the next try removes it (remove_unjudged)
        log.warning("version %s of %s is incomplete and could not be deleted now (%s)", version, name, exc)
