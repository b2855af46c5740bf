"""Every tag key the platform writes on MLflow runs and model versions, defined once.

A version's tags are its record: where its data came from, who started it, what the gate decided, how
its deployment went, which image serves it. Readers (the deployment DAG, the demo, the UI, tests) use
these names, never literals.
"""

from __future__ import annotations

# --- lineage (run and version tags, written by training) ------------------------------------------
MODEL = "mlops.model"  # the model config's name
DVC_REV = "mlops.dvc_rev"  # revision of the data repository the training set was read at
DATA_DIGEST = "mlops.data_digest"  # digest of the training set
GIT_COMMIT = "mlops.git_commit"  # the platform's commit that trained it
RUN_ID = "mlops.run_id"  # the MLflow run a version came from (on the version)
AIRFLOW_DAG_ID = "airflow.dag_id"
AIRFLOW_RUN_ID = "airflow.run_id"
AIRFLOW_TRY_NUMBER = "airflow.try_number"

# --- why it was trained ----------------------------------------------------------------------------
TRIGGER = "mlops.trigger"  # "alert": retrained by the retraining DAG
TRIGGER_ALERT = "alert"
ALERT_NAME = "mlops.alert.name"
ALERT_FINGERPRINT = "mlops.alert.fingerprint"
ALERT_DRIFTED_FEATURES = "mlops.alert.drifted_features"
FORCE_PROMOTE = "mlops.force_promote"  # "requested" on the form

# --- the offline gate (version tags + gate/gate.json on the run) -----------------------------------
GATE = "gate"  # "passed" | "failed"
GATE_REASONS = "gate.reasons"
GATE_FAILED_CHECKS = "gate.failed_checks"
GATE_CHAMPION_VERSION = "gate.champion_version"
GATE_FORCED = "gate.forced"  # "true" when released or promoted despite a failed gate
GATE_OVERRIDES = "gate.overrides"  # JSON: keys changed for this judgement (alert-driven retrains)

# --- deployment (version tags, one per step as it happens; deploy/record.json on the run) ----------
DEPLOY_PREFIX = "deploy."
DEPLOY_STAGING = "deploy.staging"
DEPLOY_SMOKE = "deploy.smoke"
DEPLOY_APPROVAL = "deploy.approval"
DEPLOY_ROLLOUT = "deploy.rollout"
DEPLOY_DECISION = "deploy.decision"
PROMOTED_AT = "mlops.promoted_at"  # when it last became @champion (ISO 8601, UTC)

# --- image (version tags, written by packaging) ----------------------------------------------------
IMAGE = "image"  # repository@sha256:...: what a deployment runs
IMAGE_DIGEST = "image.digest"
IMAGE_REPOSITORY = "image.repository"
IMAGE_TAG = "image.tag"

# --- drift checks (runs of the <model>-monitoring experiment) --------------------------------------
DRIFT_STATUS = "drift.status"


def deploy_step(step: str) -> str:
    """The tag of one deployment step (``staging``, ``smoke``, ``approval``, ``rollout``, ``decision``)."""
    return f"{DEPLOY_PREFIX}{step}"


def lineage(key: str) -> str:
    """The tag of one lineage fact the training entrypoint was given (``dvc_rev``, ``dvc_repo``, ...)."""
    return f"mlops.{key}"
