"""Model configuration: everything model-specific, read from one YAML file per model.

The platform code is dataset-agnostic: features, target, thresholds and hyperparameters come from
here. DAGs are generated per config file (``<name>_training``, ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.config.defaults import BUILTIN_MODELS_DIR  # noqa: F401  (re-exported for callers)
from mlops.config.pods import KubernetesTargetConfig
from mlops.metrics import METRICS

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ModelConfigError(ValueError):
    """A model config file is missing, unreadable or invalid. The message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(_Strict):
    """The model's input columns, numeric and categorical."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        """Every feature column: the numeric ones, then the categorical ones."""
        return [*self.numeric, *self.categorical]


class DataConfig(_Strict):
    """The training data: its demo generator, the smallest training set, how many batches it spans."""

    generator: str | None = None
    min_rows: int = Field(default=100, ge=1, description="fewest rows a training set may have")
    training_window: int = Field(default=5, ge=1, description="train on the N most recent accepted batches")


class ColumnRule(_Strict):
    """Expectations on one column beyond its type: range, allowed values, null rate."""

    min: float | None = None
    max: float | None = None
    values: list[str] | None = None
    max_null_fraction: float | None = Field(default=None, ge=0.0, le=1.0)


class ValidationConfig(_Strict):
    """What a batch must satisfy before it is accepted (Great Expectations suite built from this)."""

    row_count_min: int = Field(default=1, ge=1)
    row_count_max: int | None = Field(default=None, ge=1)
    target_rate_min: float = Field(default=0.0, ge=0.0, le=1.0)
    target_rate_max: float = Field(default=1.0, ge=0.0, le=1.0)
    max_null_fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="default for every feature")
    columns: dict[str, ColumnRule] = Field(default_factory=dict)


class DockerConfig(_Strict):
    """How the docker backend runs a training job: image, network, memory limit."""

    image: str = "localhost/mlops-train:latest"
    network_mode: str = "host"
    mem_limit: str | None = None


class KubernetesConfig(_Strict):
    """How the kubernetes backend runs a training job: image, namespace, resources, scheduling."""

    image: str = "localhost/mlops-train:latest"
    namespace: str = "mlops"
    service_account: str | None = "mlops-training"
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"
    gpus: int = Field(default=0, ge=0, description="nvidia.com/gpu limit; 0 = none")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    mlflow_secret: str | None = Field(
        default="mlflow-credentials",
        description="Secret whose keys become env vars (MLFLOW_TRACKING_URI/USERNAME/PASSWORD)",
    )
    startup_timeout_seconds: int = Field(default=600, ge=1)


Backend = Literal["local", "docker", "kubernetes"]


def _all_backends() -> list[Backend]:
    """Every training backend, in the order a model's DAG offers them."""
    return ["local", "docker", "kubernetes"]


class TrainingConfig(_Strict):
    """How a model is trained: where (backend), which estimator, holdout split, threshold and seed."""

    backend: Backend | None = Field(
        default=None, description="default backend; None = MLOPS_TRAINING_BACKEND"
    )
    backends: list[Backend] = Field(
        default_factory=_all_backends,
        description="backends this model can train on; the DAG offers those the platform enables",
    )
    docker: DockerConfig = Field(default_factory=DockerConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    estimator: Literal["hist_gradient_boosting", "random_forest", "logistic_regression"] = (
        "hist_gradient_boosting"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    threads: int = Field(
        default=1, ge=1, description="OMP_NUM_THREADS of the training process (oversubscribed cores are slow)"
    )
    seed: int = 42
    decision_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)


#: Holdout metrics every training run logs (plus ``roc_auc__<segment>__<value>`` per segment value).


class GateConfig(_Strict):
    """The metric gate a trained candidate must pass (see :mod:`mlops.gate.policy`)."""

    primary_metric: str = "roc_auc"
    min: dict[str, float] = Field(default_factory=dict, description="absolute lower bounds")
    max: dict[str, float] = Field(default_factory=dict, description="absolute upper bounds")
    min_improvement: float = Field(default=0.0, description="primary metric gain over @champion required")
    max_regression: dict[str, float] = Field(
        default_factory=dict, description="largest allowed worsening of other metrics vs @champion"
    )
    bootstrap_samples: int = Field(default=500, ge=0, description="0 disables the confidence interval")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    max_overfit_gap: float | None = Field(default=0.1, description="train - holdout of the primary metric")

    def with_overrides(self, overrides: dict[str, Any] | None) -> GateConfig:
        """This gate with some keys changed for one judgement (validated like the config itself)."""
        if not overrides:
            return self
        return type(self).model_validate({**self.model_dump(), **overrides})

    @model_validator(mode="after")
    def _known_metrics(self) -> GateConfig:
        named = {self.primary_metric, *self.min, *self.max, *self.max_regression}
        unknown = sorted(m for m in named if m not in METRICS and not m.startswith("roc_auc__"))
        if unknown:
            raise ValueError(f"gate names unknown metrics {unknown}; known: {sorted(METRICS)}")
        return self


class AnalysisConfig(_Strict):
    """Success criteria of one canary (or blue-green) analysis window, canary vs stable."""

    window_s: float = Field(default=30.0, gt=0, description="length of one analysis window per step")
    min_requests: int = Field(
        default=50, ge=1, description="canary requests a window needs before any verdict (low traffic waits)"
    )
    max_wait_s: float = Field(
        default=300.0, gt=0, description="longest a step waits for min_requests; then inconclusive = rollback"
    )
    replay: bool = Field(
        default=False,
        description="replay recently logged requests to stable and canary when live traffic is too low",
    )
    allow_replay_only: bool = Field(
        default=False,
        description="let a window that no live request reached (replayed requests only) pass; by default "
        "it waits for live traffic until max_wait_s, then is inconclusive (rollback)",
    )
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="absolute bound on canary 5xx rate")
    max_error_rate_increase: float = Field(
        default=0.005, ge=0, le=1, description="canary error rate minus stable error rate"
    )
    max_p95_ratio: float = Field(default=1.5, gt=0, description="canary p95 latency / stable p95 latency")
    p95_slack_ms: float = Field(
        default=10.0, ge=0, description="latency difference always tolerated (histogram resolution)"
    )
    significance: float = Field(
        default=0.01,
        gt=0,
        lt=0.5,
        description="one-sided test level of every criterion (few requests never fail)",
    )
    max_score_shift: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="largest distance between canary and stable score distributions (KS on histograms)",
    )


class SmokeConfig(_Strict):
    """Staging smoke test of a candidate that takes no user traffic yet."""

    rows: int = Field(default=200, ge=1, description="holdout rows sent in one request")
    requests: int = Field(default=30, ge=1, description="single-row requests timed for the p95 bound")
    max_p95_ms: float = Field(default=250.0, gt=0, description="p95 latency bound of single-row requests")
    tolerance: float = Field(default=1e-6, ge=0, description="numeric tolerance vs the offline predictions")


class DeploymentConfig(_Strict):
    """How a version that passed the offline gate reaches production (deployment DAG)."""

    enabled: bool = Field(
        default=True, description="False: a gate pass promotes @champion directly, no deployment DAG"
    )
    target: Literal["local", "kubernetes"] = Field(
        default="local", description="where the model is served (MLOPS_DEPLOY_TARGET overrides)"
    )
    strategy: Literal["canary", "blue_green"] = "canary"
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100], description="canary traffic weights (%)")
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    smoke: SmokeConfig = Field(default_factory=SmokeConfig)
    approval: bool = Field(default=False, description="a human approves in the Airflow UI before production")
    approval_timeout_h: float = Field(default=24.0, gt=0, description="unanswered approval = rejected")
    port: int | None = Field(
        default=None,
        description="local target: endpoint port; empty = MLOPS_SERVING_PORT for the serving model",
    )
    workers: int = Field(default=1, ge=1, le=16, description="server worker processes per backend")
    build_image: bool | None = Field(
        default=None,
        description="build and push the serving image (by digest) before staging; empty: only for kubernetes",
    )
    kubernetes: KubernetesTargetConfig = Field(
        default_factory=KubernetesTargetConfig, description="kubernetes target settings"
    )

    @field_validator("steps")
    @classmethod
    def _valid_steps(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 < w <= 100 for w in v) or v != sorted(set(v)) or v[-1] != 100:
            raise ValueError(f"steps must rise strictly within 1..100 and end at 100, got {v}")
        return v


#: The drift alert of ``mlops/alerting/rules/mlops.rules.yml`` (tests/unit/test_alerting.py checks the rule).
DRIFT_ALERT = "ModelDriftDetected"


class RetrainingConfig(_Strict):
    """Alert-driven retraining (``<model>_retraining`` DAG) and its storm protection."""

    enabled: bool = Field(default=True, description="a drift alert on the champion retrains the model")
    alerts: list[str] = Field(
        default_factory=lambda: [DRIFT_ALERT], description="alert names that start a retrain"
    )
    cooldown_minutes: float = Field(
        default=60.0, ge=0, description="after a retrain starts, further alerts are suppressed this long"
    )
    daily_budget: int = Field(default=3, ge=0, description="most alert-driven retrains per UTC day")
    poll_interval_s: float = Field(
        default=5.0, gt=0, description="how often the sensor asks the alert source"
    )
    train_without_new_data: bool = Field(
        default=False, description="retrain on the current window even when no new batch landed"
    )
    analysis_overrides: dict[str, float] = Field(
        default_factory=lambda: {"max_score_shift": 0.6},
        description="deployment.analysis keys changed for the rollout of an alert-driven retrain: a model "
        "retrained because its inputs drifted is expected to score the new population differently",
    )

    gate_overrides: dict[str, float] = Field(
        default_factory=dict,
        description="gate keys changed for the judgement of an alert-driven retrain, e.g. min_improvement: "
        "-0.005 = non-inferiority: the retrained model may be at most that much worse than @champion (with "
        "the gate's confidence), because its reference profile matches today's traffic and the champion's no "
        "longer does",
    )

    @field_validator("gate_overrides")
    @classmethod
    def _known_gate_keys(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = {"min_improvement", "confidence", "max_overfit_gap", "bootstrap_samples"}
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise ValueError(f"gate_overrides may change {sorted(allowed)}, not {unknown}")
        return v

    @field_validator("analysis_overrides")
    @classmethod
    def _known_analysis_keys(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(AnalysisConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown deployment.analysis keys: {unknown}")
        return v

    def with_overrides(self, overrides: dict[str, Any] | None) -> RetrainingConfig:
        """This policy with the storm-protection keys of ``overrides`` changed (validated).

        Overrides come from the Airflow Variable :data:`RETRAINING_OVERRIDES_VARIABLE` (``{model: {key:
        value}}``), so an operator (or ``mlops demo --loop-cycles``) can shorten the cooldown or change the
        budget of a running stack without a deploy. Only :data:`OVERRIDABLE_RETRAINING_KEYS` may change.
        """
        if not overrides:
            return self
        if not isinstance(overrides, dict):
            raise ValueError(f"retraining overrides must be a JSON object, got {overrides!r}")
        unknown = sorted(set(overrides) - set(OVERRIDABLE_RETRAINING_KEYS))
        if unknown:
            raise ValueError(
                f"retraining overrides name keys that cannot be overridden: {unknown} "
                f"(allowed: {', '.join(OVERRIDABLE_RETRAINING_KEYS)})"
            )
        return type(self).model_validate({**self.model_dump(), **overrides})


#: Airflow Variable holding per-model retraining overrides, e.g. ``{"churn": {"cooldown_minutes": 1}}``.
RETRAINING_OVERRIDES_VARIABLE = "mlops_retraining"
OVERRIDABLE_RETRAINING_KEYS = ("cooldown_minutes", "daily_budget")


class ModelConfig(_Strict):
    """One model of the platform."""

    name: str
    description: str = ""
    owner: str = "ml-platform"
    schedule: str | None = "@daily"
    target: str
    id_column: str
    features: Features
    segments: list[str] = Field(default_factory=list)
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be lowercase letters, digits and '_', starting with a letter")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        feats = self.features.all
        if not feats:
            raise ValueError("features: at least one numeric or categorical feature is required")
        dupes = sorted({f for f in feats if feats.count(f) > 1})
        if dupes:
            raise ValueError(f"features listed twice: {dupes}")
        for col, what in ((self.target, "target"), (self.id_column, "id_column")):
            if col in feats:
                raise ValueError(f"{what} {col!r} must not also be a feature")
        unknown = [s for s in self.segments if s not in self.features.categorical]
        if unknown:
            raise ValueError(f"segments must be categorical features; unknown: {unknown}")
        if self.training.backend is not None and self.training.backend not in self.training.backends:
            raise ValueError(f"training.backend {self.training.backend!r} must be one of training.backends")
        stray = [c for c in self.validation.columns if c not in feats]
        if stray:
            raise ValueError(f"validation.columns names columns that are not features: {stray}")
        v = self.validation
        if v.target_rate_min > v.target_rate_max:
            raise ValueError("validation.target_rate_min must not exceed target_rate_max")
        if v.row_count_max is not None and v.row_count_min > v.row_count_max:
            raise ValueError("validation.row_count_min must not exceed row_count_max")
        return self

    @property
    def registered_model_name(self) -> str:
        """Name of the model in the MLflow registry (the config's name)."""
        return self.name

    @property
    def experiment_name(self) -> str:
        """Name of the MLflow experiment its training runs are logged to (the config's name)."""
        return self.name


def load_model_config(path: str | Path) -> ModelConfig:
    """Read and validate one model config file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelConfigError(f"model config not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelConfigError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelConfigError(f"model config {path} must be a mapping, got {type(raw).__name__}")
    try:
        cfg = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ModelConfigError(f"invalid model config {path}: {problems}") from exc
    if cfg.name != path.stem:
        raise ModelConfigError(
            f"model config {path}: name {cfg.name!r} must match the file name {path.stem!r}"
        )
    return cfg


def offered_backends(cfg: ModelConfig, platform: list[str]) -> list[str]:
    """Backends a model's DAG offers: those the model supports that the platform enables."""
    offered: list[str] = [b for b in cfg.training.backends if b in platform]
    if not offered:
        raise ModelConfigError(
            f"model {cfg.name!r} supports backends {cfg.training.backends} but the platform enables only "
            f"{platform} (MLOPS_TRAINING_BACKENDS)"
        )
    return offered


def discover_model_configs(models_dir: str | Path) -> dict[str, Path]:
    """Map model name -> config file for every ``*.yaml`` in ``models_dir`` (no parsing: cheap)."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def get_model_config(name: str, models_dir: str | Path) -> ModelConfig:
    """Load the config of the model called ``name`` from ``models_dir``."""
    configs = discover_model_configs(models_dir)
    if name not in configs:
        known = ", ".join(configs) or "none"
        raise ModelConfigError(f"unknown model {name!r} in {models_dir} (known: {known})")
    return load_model_config(configs[name])
