"""The served model: resolving its URI to a local folder, loading it, its input columns, warm-up.

:func:`resolve_model` pins a registry URI (``models:/name@alias``, ``models:/name/version``) to one
version before downloading it; :class:`LoadedModel` loads the scikit-learn flavour once and returns
classes and positive-class scores in one call (``predict_proba``, then the class of the highest
probability, checked against ``predict()`` at warm-up). mlflow, numpy and pandas are imported when a
model is resolved or loaded.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlops.serving.payloads import Column, InputError, parse_payload
from mlops.training.artifacts import KNOWN_CATEGORIES

log = logging.getLogger(__name__)

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")
_RUNS_URI = re.compile(r"^runs:/([^/]+)/")


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned to a local folder (and, for a registry URI, to one version)."""

    path: str
    name: str
    version: str | None
    uri: str
    run_id: str | None = None


def is_remote_uri(uri: str) -> bool:
    """Whether ``uri`` is downloaded (a ``models:/`` or ``runs:/`` URI) rather than a local folder."""
    return bool(MODELS_URI.match(uri)) or uri.startswith("runs:/")


def name_from_uri(uri: str) -> str:
    """The model name a URI implies: the registered name, ``run-<id>`` or the folder name."""
    m = MODELS_URI.match(uri)
    if m:
        return m["name"]
    run = _RUNS_URI.match(uri)
    if run:
        return f"run-{run[1][:8]}"
    return Path(uri.removeprefix("file://")).name or "model"


def version_from_uri(uri: str) -> str | None:
    """The version of a ``models:/name/<number>`` URI, else None."""
    m = MODELS_URI.match(uri)
    return m["version"] if m and m["version"] and m["version"].isdigit() else None


def resolve_model(uri: str, tracking_uri: str | None = None, dst: str | None = None) -> ResolvedModel:
    """A local folder holding the model of ``uri`` (``models:/n/v``, ``models:/n@alias``, ``runs:/``, path).

    A registry URI is pinned to a concrete version first, so a moving alias cannot change the model
    between the resolution and the download.
    """
    local = Path(uri[7:] if uri.startswith("file://") else uri)
    if "://" not in uri and ":/" not in uri or uri.startswith("file://"):
        if not (local / "MLmodel").is_file():
            raise FileNotFoundError(f"no MLflow model at {local} (MLmodel missing)")
        return ResolvedModel(str(local), local.resolve().name, None, uri)

    import mlflow
    from mlflow.artifacts import download_artifacts

    from mlops.registry.client import mlflow_client

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    dst = dst or tempfile.mkdtemp(prefix="mlops-serve-model-")
    m = MODELS_URI.match(uri)
    if m:
        client = mlflow_client(tracking_uri or mlflow.get_tracking_uri())
        name = m["name"]
        if m["alias"]:
            mv = client.get_model_version_by_alias(name, m["alias"])
        elif m["version"].isdigit():
            mv = client.get_model_version(name, m["version"])
        else:  # stages are deprecated in MLflow: the platform uses aliases only
            raise ValueError(
                f"{uri}: {m['version']!r} is neither a version number nor an @alias "
                f"(use models:/{name}/<version> or models:/{name}@<alias>; stages are not supported)"
            )
        path = download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=dst)
        return ResolvedModel(path, name, str(mv.version), uri, mv.run_id)
    path = download_artifacts(artifact_uri=uri, dst_path=dst)
    run = _RUNS_URI.match(uri)
    name = Path(path).name if not run else f"run-{run[1][:8]}"
    return ResolvedModel(path, name, None, uri, run[1] if run else None)


def _kind_of(type_name: str) -> str:
    return {"long": "int", "integer": "int", "double": "float", "float": "float", "string": "str"}.get(
        type_name, "bool" if type_name == "boolean" else "any"
    )


def signature_columns(meta: Any, model: Any) -> list[Column]:
    """Input columns of an MLflow model: its signature, else the estimator's ``feature_names_in_``."""
    import numpy as np

    schema = meta.get_input_schema() if meta is not None else None
    if schema is not None and schema.has_input_names():
        cols = []
        for spec in schema.inputs:
            type_name = getattr(spec.type, "name", str(spec.type))
            kind = _kind_of(type_name)
            dtype: Any = {"int": np.int32 if type_name == "integer" else np.int64, "bool": np.bool_}.get(kind)
            if kind == "float":
                dtype = np.float32 if type_name == "float" else np.float64
            cols.append(Column(spec.name, kind, dtype or object, bool(spec.required), type_name))
        return cols
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError("the model has neither an input signature with column names nor feature_names_in_")
    return [Column(str(n), "any", object, True, "any") for n in names]


class LoadedModel:
    """The scikit-learn model, its input columns and how to get classes and scores in one call."""

    def __init__(self, resolved: ResolvedModel, threads: int = 1):
        import mlflow.sklearn
        import numpy as np
        from mlflow.models import Model

        if threads > 0:
            with contextlib.suppress(Exception):  # best effort: threadpoolctl may miss a library
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=threads)
        self.resolved = resolved
        self.meta = Model.load(resolved.path)
        self.model = mlflow.sklearn.load_model(resolved.path)
        self.columns = signature_columns(self.meta, self.model)
        #: categories seen in training per feature (empty for models trained before it was recorded)
        self.known_categories: dict[str, list[str]] = dict(
            (self.meta.metadata or {}).get(KNOWN_CATEGORIES) or {}
        )
        pyfunc = self.meta.flavors.get("python_function", {})
        self.predict_fn = pyfunc.get("predict_fn") or "predict"
        self.run_id = resolved.run_id or self.meta.run_id
        self.has_proba = hasattr(self.model, "predict_proba")
        classes = getattr(self.model, "classes_", None)
        self.classes = None if classes is None else np.asarray(classes)
        #: class = classes_[argmax(proba)] saves a second pass; checked against predict() at warm-up.
        self.derive_class = self.has_proba and self.classes is not None and self.predict_fn == "predict"
        self.np = np

    def arrays(self, columns: dict[str, list]) -> dict[str, Any]:
        """One numpy array per input column, typed from the signature (also fed to the feature metrics)."""
        np = self.np
        out = {}
        for c in self.columns:
            vals = columns[c.name]
            if c.kind in ("int", "bool") and None in vals:
                out[c.name] = np.array(vals, dtype=object)
            else:
                out[c.name] = np.array(vals, dtype=c.dtype)
        return out

    def frame(self, columns: dict[str, list], arrays: dict[str, Any] | None = None) -> Any:
        """The pandas frame the model is called with."""
        import pandas as pd

        return pd.DataFrame(self.arrays(columns) if arrays is None else arrays, copy=False)

    def predict(self, columns: dict[str, list], arrays: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """(predictions as the pyfunc returns them, positive-class score or None) for a batch of rows.

        ``arrays``: ``self.arrays(columns)`` when the caller already has them."""
        np = self.np
        X = self.frame(columns, arrays)
        if self.has_proba:
            proba = np.asarray(self.model.predict_proba(X))
            score = proba[:, 1] if proba.ndim == 2 and proba.shape[1] == 2 else proba.max(axis=1)
            if self.predict_fn == "predict_proba":
                return proba, score
            if self.derive_class and self.classes is not None:
                return self.classes[np.argmax(proba, axis=1)], score
            return np.asarray(getattr(self.model, self.predict_fn)(X)), score
        return np.asarray(getattr(self.model, self.predict_fn)(X)), None

    def example_columns(self) -> dict[str, list]:
        """Warm-up rows: the model's saved input example, else one synthetic row from the signature."""
        ex: Any
        try:
            ex = self.meta.load_input_example(self.resolved.path)
        except Exception:  # noqa: BLE001 - no or unreadable example: synthesize one
            ex = None
        if ex is not None and hasattr(ex, "to_dict") and len(ex):
            try:
                cols, _ = parse_payload(
                    {"dataframe_split": orjson.loads(ex.to_json(orient="split"))}, self.columns
                )
                return cols
            except InputError:
                pass
        fill = {"int": 0, "float": 0.0, "str": "", "bool": False, "any": 0}
        return {c.name: [fill[c.kind]] for c in self.columns}

    def warm_up(self, rounds: int = 3) -> None:
        """A few model calls on example rows; stops deriving classes if they differ from ``predict()``."""
        cols = self.example_columns()
        for _ in range(rounds):
            preds, _ = self.predict(cols)
        if self.derive_class:
            direct = self.np.asarray(self.model.predict(self.frame(cols)))
            if direct.shape != preds.shape or not (direct == preds).all():
                log.warning("classes from predict_proba differ from predict(): calling predict() per batch")
                self.derive_class = False
