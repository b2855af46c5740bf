"""The training entrypoint's contract with everything downstream, defined once.

What a training run leaves in MLflow (artifact paths, the score column of the holdout) and what the
entrypoint hands back to whichever backend ran it (:class:`TrainResult`, printed as the last line of
its output and, on Kubernetes, written to ``/airflow/xcom/return.json``). The gate, the smoke test,
drift monitoring and the Airflow backends read these names; none of them types the literals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

#: The holdout rows with their features, target and the score the trained model gave them.
HOLDOUT_FILE = "holdout.parquet"
HOLDOUT_ARTIFACT = f"eval/{HOLDOUT_FILE}"
SCORE_COLUMN = "_score"
#: Key of the MLmodel ``metadata`` holding the categories seen in training, per categorical feature
#: (what the model server's category counter counts; other values count as ``__other__``).
KNOWN_CATEGORIES = "mlops_known_categories"
#: Drift reference profile of the model version (artifact ``drift/<this>`` of its run).
REFERENCE_PROFILE_FILE = "reference_profile.json"
REFERENCE_PROFILE_ARTIFACT = f"drift/{REFERENCE_PROFILE_FILE}"


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced: the registered version, its metrics, the data it was trained on."""

    model: str
    run_id: str
    experiment_id: str
    model_version: str
    model_uri: str
    metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    data_digest: str
    duration_s: float

    def to_json(self) -> str:
        """Indented JSON of all fields, keys sorted."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)
