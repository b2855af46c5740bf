"""Model configuration: everything model-specific, read from one YAML file per model.

The platform code is dataset-agnostic: features, target, thresholds and hyperparameters come from
here. DAGs are generated per config file (``<name>_training``, ...).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Model configs shipped with the package (the default of ``MLOPS_MODELS_DIR``).
BUILTIN_MODELS_DIR = Path(__file__).resolve().parent / "model_configs"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ModelConfigError(ValueError):
    """A model config file is missing, unreadable or invalid. The message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class DataConfig(_Strict):
    generator: str | None = None
    min_rows: int = Field(default=100, ge=1)


class TrainingConfig(_Strict):
    backend: Literal["local", "docker", "kubernetes"] | None = None
    estimator: Literal["hist_gradient_boosting", "random_forest", "logistic_regression"] = (
        "hist_gradient_boosting"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    seed: int = 42
    decision_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)


class GateConfig(_Strict):
    primary_metric: str = "roc_auc"
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)


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
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)

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
        return self

    @property
    def registered_model_name(self) -> str:
        return self.name

    @property
    def experiment_name(self) -> str:
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


def models_dir_from_env() -> Path:
    """``MLOPS_MODELS_DIR`` resolved like :class:`mlops.settings.Settings` does, for DAG parse time.

    DAG files call this instead of building Settings: pydantic-settings alone costs ~0.1 s to import,
    the whole budget of a DAG file.
    """
    return Path(os.environ.get("MLOPS_MODELS_DIR") or BUILTIN_MODELS_DIR)


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
