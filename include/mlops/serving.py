"""The model server: an ASGI app serving one MLflow scikit-learn model by URI (``mlops serve``).

Endpoints (all JSON unless said otherwise):

``POST /invocations``
    The payloads of ``mlflow models serve`` (``dataframe_split``, ``dataframe_records``,
    ``instances``, ``inputs``; ``params`` ignored), answered as ``{"predictions": [...]}``, so a
    client of MLflow's scoring server switches with no change (JSON only: CSV and Parquet bodies get
    415).
``POST /predict``
    ``{"instances": [{...}, ...]}`` (or any shape ``/invocations`` takes) answered as
    ``{"predictions": [{"class": 1, "score": 0.83}, ...], "model_version": ..., "variant": ...}``;
    ``score`` is the probability of the positive class.
``GET /health`` (also ``/ping``)
    Liveness: 200 as soon as the process answers.
``GET /ready``
    200 once the model is loaded and warmed up (in every worker of a multi-worker server), 503 before.
``GET /version``
    Model name, version, URI, run id, variant, image digest (``MLOPS_IMAGE_DIGEST``).
``GET /metrics``
    Prometheus text (see :class:`Metrics` for the names), summed over every worker process.

Input rows are checked against the model's input signature before the model sees them: a missing
or wrongly typed field is a 422 naming the field, a malformed body a 400, a body over
``max_body_bytes`` a 413, an unsupported content type a 415. Whole floats are accepted for integer
columns and integers for float columns; ``null`` is accepted for float columns (the pipeline's
imputer sees NaN).

Throughput: the per-request work stays small (orjson, no pandas on the request path, one pure ASGI
callable with no middleware stack). Model calls run in one thread per worker and concurrent
requests are coalesced into one model call (up to ``max_batch_rows`` rows): a scikit-learn
pipeline costs about the same for 1 row and for 50 (here ~5 ms + ~3 us a row), and ``predict``
of a fitted pipeline is row-independent, so every request gets exactly the rows it would get alone.
Under load a call waits up to ``MAX_LINGER_S`` for the requests that are on their way back (see
``ServingApp._linger``), which doubles the rows per call of closed-loop clients.

Sampled prediction logging goes to JSONL files (one line per row, one file per hour, process and
size part) written by a background thread with a bounded queue; full queue = dropped and counted.
The thread wakes at most every ``LOG_BATCH_INTERVAL_S`` and serialises column by column.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import queue
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_BATCH_ROWS = 256
ENV_VARIANT = "MLOPS_SERVE_VARIANT"
ENV_MODEL_VERSION = "MLOPS_SERVE_MODEL_VERSION"
ENV_MODEL_NAME = "MLOPS_SERVE_MODEL_NAME"
ENV_IMAGE_DIGEST = "MLOPS_IMAGE_DIGEST"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_PREFIX = "ready."

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: Shared buckets of every numeric feature histogram (1-2-5 series): scale-free enough for drift checks.
FEATURE_BUCKETS = (0.0,) + tuple(m * 10.0**e for e in range(-1, 6) for m in (1, 2, 5))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OTHER = "__other__"
SWITCH_INTERVAL_S = 0.001
#: Longest wait for more rows before a model call, once under load (see ServingApp._linger).
MAX_LINGER_S = 0.002
#: Half-life of the "requests recently in the server at once" estimate the wait is based on.
ACTIVE_HALF_LIFE_S = 0.5
#: The prediction-log thread wakes at most this often and writes through a buffer of this size, so
#: under load it takes the GIL (from the model and event-loop threads) once per many requests.
LOG_BATCH_INTERVAL_S = 0.05
LOG_BUFFER_BYTES = 1 << 20

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


# ----------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ServingSettings:
    """Configuration of one server process (every worker gets the same)."""

    model_uri: str
    tracking_uri: str | None = None
    #: Local copy of the model (``serve`` resolves and downloads once, so every worker serves the same
    #: version even if ``@champion`` moves meanwhile). Empty: resolved from ``model_uri`` at load.
    model_path: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    variant: str = "stable"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    #: Folder of the JSONL prediction logs. Empty: ``$MLOPS_HOME/predictions/<model>``.
    predictions_dir: Path | None = None
    sample_rate: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Rows of concurrent requests merged into one model call; 0 or 1: one call per request.
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    log_queue_size: int = 10_000
    log_rotate_bytes: int = 64 << 20
    #: Distinct values counted per categorical feature (per process); the rest count as ``__other__``.
    max_categories: int = 50
    #: OpenMP/BLAS threads of the model per worker (1: the workers are the parallelism).
    model_threads: int = 1
    image_digest: str | None = None
    #: Where workers of a multi-worker server leave their ready markers (the multiprocess metrics dir).
    state_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, got {self.sample_rate}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.variant):
            raise ValueError(f"variant must be 1-64 letters, digits, '_', '-' or '.', got {self.variant!r}")

    @classmethod
    def from_env(cls, model_uri: str, **overrides: Any) -> ServingSettings:
        """Settings with ``variant``, ``model_version``, ``model_name`` and ``image_digest`` from env."""
        env = {
            "variant": os.environ.get(ENV_VARIANT),
            "model_version": os.environ.get(ENV_MODEL_VERSION),
            "model_name": os.environ.get(ENV_MODEL_NAME),
            "image_digest": os.environ.get(ENV_IMAGE_DIGEST),
        }
        values = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model_uri=model_uri, **values)


# ------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    name: str
    version: str | None
    uri: str
    run_id: str | None = None


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")


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

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    dst = dst or tempfile.mkdtemp(prefix="mlops-serve-model-")
    m = _MODELS_URI.match(uri)
    if m:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        name = m["name"]
        if m["alias"]:
            mv = client.get_model_version_by_alias(name, m["alias"])
        elif m["version"].isdigit():
            mv = client.get_model_version(name, m["version"])
        else:  # a stage name (deprecated in MLflow, still resolvable)
            found = client.get_latest_versions(name, stages=[m["version"]])
            if not found:
                raise ValueError(f"no version of {name!r} in stage {m['version']!r}")
            mv = found[0]
        path = download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=dst)
        return ResolvedModel(path, name, str(mv.version), uri, mv.run_id)
    path = download_artifacts(artifact_uri=uri, dst_path=dst)
    run = re.match(r"^runs:/([^/]+)/", uri)
    name = Path(path).name if not run else f"run-{run[1][:8]}"
    return ResolvedModel(path, name, None, uri, run[1] if run else None)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # int | float | str | bool | any
    dtype: Any
    required: bool
    type_name: str


class InputError(Exception):
    """A request the server refuses: status, MLflow-style error body, and the field when known."""

    def __init__(self, status: int, message: str, field: str | None = None, row: int | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.row = status, message, field, row

    def body(self) -> bytes:
        code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
            self.status, "INVALID_PARAMETER_VALUE"
        )
        out: dict[str, Any] = {"error_code": code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.row is not None:
            out["row"] = self.row
        return orjson.dumps(out)


_INT64 = (-(2**63), 2**63 - 1)
_NONE = type(None)


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
            dtype = {"int": np.int32 if type_name == "integer" else np.int64, "bool": np.bool_}.get(kind)
            if kind == "float":
                dtype = np.float32 if type_name == "float" else np.float64
            cols.append(Column(spec.name, kind, dtype or object, bool(spec.required), type_name))
        return cols
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError("the model has neither an input signature with column names nor feature_names_in_")
    return [Column(str(n), "any", object, True, "any") for n in names]


def _bad_type(col: Column, vals: list, row_offset: int = 0) -> InputError:
    for i, v in enumerate(vals):
        if not _value_ok(col, v):
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            what = "null" if v is None else f"{type(v).__name__} {shown}"
            return InputError(
                422,
                f"field {col.name!r} (row {i + row_offset}): expected {col.type_name}, got {what}",
                col.name,
                i + row_offset,
            )
    return InputError(422, f"field {col.name!r}: values do not match {col.type_name}", col.name)


def _value_ok(col: Column, v: Any) -> bool:
    t = type(v)
    if v is None:
        return col.kind == "float" or not col.required or col.kind == "any"
    if col.kind == "float":
        return t is float or t is int
    if col.kind == "int":
        return (t is int or (t is float and v.is_integer())) and _INT64[0] <= v <= _INT64[1]
    if col.kind == "str":
        return t is str
    if col.kind == "bool":
        return t is bool
    return t in (int, float, str, bool)


def coerce_column(col: Column, vals: list) -> list:
    """Check one column's JSON values against its type; whole floats become ints. Raises a 422."""
    types = set(map(type, vals))
    if col.kind == "float":
        if types <= {float, int, _NONE}:
            return vals
    elif col.kind == "int":
        if types <= {int} and (not vals or (min(vals) >= _INT64[0] and max(vals) <= _INT64[1])):
            return vals
        if types <= {int, float} and all(_value_ok(col, v) for v in vals):
            return [int(v) for v in vals]
        if not col.required and types <= {int, float, _NONE} and all(_value_ok(col, v) for v in vals):
            return [None if v is None else int(v) for v in vals]
    elif col.kind == "str":
        if types <= {str} or (not col.required and types <= {str, _NONE}):
            return vals
    elif col.kind == "bool":
        if types <= {bool} or (not col.required and types <= {bool, _NONE}):
            return vals
    elif types <= {int, float, str, bool, _NONE}:
        return vals
    raise _bad_type(col, vals)


def _columns_from_rows(rows: list, cols: list[Column], what: str) -> dict[str, list]:
    if not rows:
        return {c.name: [] for c in cols}
    if all(type(r) is dict for r in rows):
        out = {}
        for c in cols:
            try:
                out[c.name] = [r[c.name] for r in rows]
            except KeyError:
                if c.required:
                    row = next(i for i, r in enumerate(rows) if c.name not in r)
                    raise InputError(422, f"missing field {c.name!r} (row {row})", c.name, row) from None
                out[c.name] = [r.get(c.name) for r in rows]
        return out
    if all(type(r) is list for r in rows):
        width = len(cols)
        for i, r in enumerate(rows):
            if len(r) != width:
                missing = cols[len(r)].name if len(r) < width else None
                raise InputError(
                    422,
                    f"row {i} has {len(r)} values, expected {width} in signature order "
                    f"({', '.join(c.name for c in cols)})",
                    missing,
                    i,
                )
        return {c.name: [r[j] for r in rows] for j, c in enumerate(cols)}
    raise InputError(400, f"{what} must be a list of objects (or of lists in signature order)")


def _columns_from_split(split: Any, cols: list[Column]) -> dict[str, list]:
    if type(split) is not dict or "data" not in split or set(split) - {"columns", "data", "index"}:
        raise InputError(
            400, "dataframe_split must be an object with 'data' and optionally 'columns' and 'index'"
        )
    data, names = split["data"], split.get("columns")
    if type(data) is not list or not all(type(r) is list for r in data):
        raise InputError(400, "dataframe_split.data must be a list of rows (lists)")
    if names is None:
        return _columns_from_rows(data, cols, "dataframe_split.data")
    if type(names) is not list or not all(type(n) is str for n in names):
        raise InputError(400, "dataframe_split.columns must be a list of column names")
    width = len(names)
    for i, r in enumerate(data):
        if len(r) != width:
            raise InputError(400, f"dataframe_split row {i} has {len(r)} values for {width} columns", row=i)
    index = {n: j for j, n in enumerate(names)}
    out = {}
    for c in cols:
        j = index.get(c.name)
        if j is None:
            if c.required:
                raise InputError(422, f"missing field {c.name!r}", c.name)
            out[c.name] = [None] * len(data)
        else:
            out[c.name] = [r[j] for r in data]
    return out


def _columns_from_columnar(obj: dict, cols: list[Column], what: str) -> dict[str, list]:
    lengths = {len(v) if type(v) is list else None for v in obj.values()}
    if lengths == {None}:  # one row given as scalars
        obj, n = {k: [v] for k, v in obj.items()}, 1
    elif len(lengths) == 1:
        n = lengths.pop()
    else:
        raise InputError(400, f"{what}: every column must be a list of the same length")
    out = {}
    for c in cols:
        if c.name in obj:
            out[c.name] = obj[c.name]
        elif c.required:
            raise InputError(422, f"missing field {c.name!r}", c.name)
        else:
            out[c.name] = [None] * n
    return out


def parse_payload(payload: Any, cols: list[Column]) -> tuple[dict[str, list], int]:
    """Columns (name -> checked values) and row count of an MLflow scoring payload."""
    if type(payload) is not dict:
        raise InputError(400, f"the body must be a JSON object with exactly one of {list(MLFLOW_FORMATS)}")
    keys = [k for k in MLFLOW_FORMATS if k in payload]
    if len(keys) != 1:
        raise InputError(
            400,
            f"the body must be a JSON object with exactly one of {list(MLFLOW_FORMATS)}; got {sorted(payload)}",
        )
    fmt = keys[0]
    value = payload[fmt]
    if fmt == "dataframe_split":
        raw = _columns_from_split(value, cols)
    elif fmt == "dataframe_records":
        if type(value) is not list:
            raise InputError(400, "dataframe_records must be a list of records")
        raw = _columns_from_rows(value, cols, fmt)
    elif type(value) is list:
        raw = _columns_from_rows(value, cols, fmt)
    elif type(value) is dict:
        raw = _columns_from_columnar(value, cols, fmt)
    else:
        raise InputError(400, f"{fmt} must be a list of rows or an object of columns")
    out = {c.name: coerce_column(c, raw[c.name]) for c in cols}
    n = len(out[cols[0].name]) if cols else 0
    return out, n


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

    def frame(self, columns: dict[str, list], arrays: dict[str, Any] | None = None):
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
            if self.derive_class:
                return self.classes[np.argmax(proba, axis=1)], score
            return np.asarray(getattr(self.model, self.predict_fn)(X)), score
        return np.asarray(getattr(self.model, self.predict_fn)(X)), None

    def example_columns(self) -> dict[str, list]:
        """Warm-up rows: the model's saved input example, else one synthetic row from the signature."""
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
        cols = self.example_columns()
        for _ in range(rounds):
            preds, _ = self.predict(cols)
        if self.derive_class:
            direct = self.np.asarray(self.model.predict(self.frame(cols)))
            if direct.shape != preds.shape or not (direct == preds).all():
                log.warning("classes from predict_proba differ from predict(): calling predict() per batch")
                self.derive_class = False


# ----------------------------------------------------------------------------------------- metrics


def _multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


def observe_many(hist_child: Any, values: Any) -> None:
    """``observe`` every value of a numpy array into one histogram child, in a few vectorised steps."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return
    bounds = getattr(hist_child, "_upper_bounds", None)
    buckets = getattr(hist_child, "_buckets", None)
    total = getattr(hist_child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values.tolist():  # prometheus_client internals changed: the public, slower path
            hist_child.observe(v)
        return
    idx = np.searchsorted(np.asarray(bounds), values, side="left")
    counts = np.bincount(idx, minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(float(values.sum()))


class Metrics:
    """Every Prometheus metric of the server, in one registry of its own.

    * ``mlops_http_requests_total{route,status,variant,model_version}`` counter
    * ``mlops_http_request_duration_seconds{route,status,variant,model_version}`` histogram
    * ``mlops_http_requests_in_flight{variant,model_version}`` gauge (summed over live workers)
    * ``mlops_prediction_score{variant,model_version}`` histogram of the positive-class probability
    * ``mlops_predictions_total{class,variant,model_version}`` counter of predicted classes
    * ``mlops_feature_value{feature,variant,model_version}`` histogram per numeric input feature
    * ``mlops_feature_missing_total{feature,variant,model_version}`` nulls per numeric feature
    * ``mlops_feature_category_total{feature,value,variant,model_version}`` counter per categorical
      value (at most ``max_categories`` values per feature and process, the rest ``__other__``)
    * ``mlops_model_batch_rows{variant,model_version}`` rows per model call,
      ``mlops_model_predict_duration_seconds{variant,model_version}`` time per model call
    * ``mlops_prediction_log_records_total`` / ``mlops_prediction_log_dropped_total`` ``{variant,model_version}``
    * ``mlops_model_info{model,model_version,variant,uri}`` = 1

    With ``PROMETHEUS_MULTIPROC_DIR`` set (several workers), values live in that folder's files and
    ``render()`` sums every process's, in a fresh registry per scrape.
    """

    def __init__(self, variant: str, model_version: str, max_categories: int = 50):
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client import values as pvalues

        self.multiproc_dir = _multiproc_dir()
        if self.multiproc_dir and pvalues.ValueClass is pvalues.MutexValue:
            # prometheus_client was imported before the variable was set: choose the value class again.
            pvalues.ValueClass = pvalues.get_value_class()
        self.prometheus_client = prometheus_client
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        base = ["variant", "model_version"]
        self.base = (variant, model_version)
        self.requests = Counter(
            "mlops_http_requests", "HTTP requests.", ["route", "status", *base], registry=r
        )
        self.latency = Histogram(
            "mlops_http_request_duration_seconds",
            "Time from request start to the last response byte.",
            ["route", "status", *base],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mlops_http_requests_in_flight",
            "Requests being processed.",
            base,
            registry=r,
            multiprocess_mode="livesum",
        ).labels(*self.base)
        self.score = Histogram(
            "mlops_prediction_score",
            "Predicted probability of the positive class, per row.",
            base,
            buckets=SCORE_BUCKETS,
            registry=r,
        ).labels(*self.base)
        self.classes = Counter(
            "mlops_predictions", "Predicted rows per predicted class.", ["class", *base], registry=r
        )
        self.feature = Histogram(
            "mlops_feature_value",
            "Values of each numeric input feature, per row.",
            ["feature", *base],
            buckets=FEATURE_BUCKETS,
            registry=r,
        )
        self.missing = Counter(
            "mlops_feature_missing", "Null values per numeric input feature.", ["feature", *base], registry=r
        )
        self.category = Counter(
            "mlops_feature_category",
            "Rows per value of each categorical input feature (bounded: the rest count as __other__).",
            ["feature", "value", *base],
            registry=r,
        )
        self.batch_rows = Histogram(
            "mlops_model_batch_rows",
            "Rows per model call (concurrent requests are merged).",
            base,
            buckets=BATCH_BUCKETS,
            registry=r,
        ).labels(*self.base)
        self.predict_seconds = Histogram(
            "mlops_model_predict_duration_seconds",
            "Time of one model call.",
            base,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(*self.base)
        self.log_records = Counter(
            "mlops_prediction_log_records", "Prediction log lines written.", base, registry=r
        ).labels(*self.base)
        self.log_dropped = Counter(
            "mlops_prediction_log_dropped",
            "Prediction log records dropped because the queue was full.",
            base,
            registry=r,
        ).labels(*self.base)
        self.info = Gauge(
            "mlops_model_info",
            "The model this server serves (value 1).",
            ["model", "model_version", "variant", "uri"],
            registry=r,
            multiprocess_mode="max",
        )
        self.max_categories = max_categories
        self._http: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._features: dict[str, Any] = {}
        self._missing: dict[str, Any] = {}
        self._cats: dict[str, dict[str, Any]] = {}
        self._classes: dict[str, Any] = {}
        self._lock = threading.Lock()

    def http(self, route: str, status: int) -> tuple[Any, Any]:
        key = (route, status)
        pair = self._http.get(key)
        if pair is None:
            labels = (route, str(status), *self.base)
            pair = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._http[key] = pair
        return pair

    def observe_batch(
        self,
        columns: dict[str, list],
        cols: list[Column],
        preds: Any,
        score: Any,
        np: Any,
        arrays: dict[str, Any] | None = None,
    ):
        """Per-row distributions of one model call (``arrays``: the model's numpy columns, if at hand)."""
        with self._lock:
            numeric = [c.name for c in cols if c.kind in ("int", "float")]
            if numeric:
                src = arrays if arrays is not None else columns
                self._observe_features(numeric, [src[n] for n in numeric], np)
            for c in cols:
                vals = columns[c.name]
                if c.kind in ("str", "bool"):
                    known = self._cats.setdefault(c.name, {})
                    for value, n in Counter(vals).items():
                        key = str(value).lower() if c.kind == "bool" else str(value)
                        child = known.get(key)
                        if child is None:
                            if len(known) >= self.max_categories:
                                key = OTHER
                                child = known.get(OTHER)
                            if child is None:
                                child = known[key] = self.category.labels(c.name, key, *self.base)
                        child.inc(n)
            if score is not None:
                observe_many(self.score, score)
            if preds is not None and getattr(preds, "ndim", 1) == 1:
                labels, counts = np.unique(preds, return_counts=True)
                for label, n in zip(labels.tolist(), counts.tolist(), strict=True):
                    key = str(label)
                    child = self._classes.get(key)
                    if child is None:
                        child = self._classes[key] = self.classes.labels(key, *self.base)
                    child.inc(n)

    def _observe_features(self, names: list[str], columns: list, np: Any) -> None:
        """Every numeric feature's values into its histogram in one vectorised pass (they share buckets)."""
        children = []
        for name in names:
            child = self._features.get(name)
            if child is None:
                child = self._features[name] = self.feature.labels(name, *self.base)
                self._missing[name] = self.missing.labels(name, *self.base)
            children.append(child)
        values = np.array(columns, dtype=np.float64)  # (features, rows); None -> NaN
        nan = np.isnan(values)
        bounds = getattr(children[0], "_upper_bounds", None)
        if (
            bounds is None
            or not all(hasattr(ch, "_buckets") and hasattr(ch, "_sum") for ch in children)
            or len(children[0]._buckets) != len(bounds)
        ):  # prometheus_client internals changed: feature by feature
            for name, child, row, isnan in zip(names, children, values, nan, strict=True):
                nulls = int(isnan.sum())
                if nulls:
                    self._missing[name].inc(nulls)
                observe_many(child, row)
            return
        width = len(bounds) + 1  # one more slot per feature: NaN sorts past the last bound (+Inf)
        idx = np.searchsorted(np.asarray(bounds), values, side="left")
        idx += (np.arange(len(names)) * width)[:, None]
        counts = np.bincount(idx.ravel(), minlength=len(names) * width).reshape(len(names), width)
        sums = np.where(nan, 0.0, values).sum(axis=1).tolist()
        nulls = counts[:, -1].tolist()
        hit_feature, hit_bucket = np.nonzero(counts[:, :-1])
        for i, j, n in zip(
            hit_feature.tolist(), hit_bucket.tolist(), counts[hit_feature, hit_bucket].tolist(), strict=True
        ):
            children[i]._buckets[j].inc(n)
        for name, child, total, missing, n in zip(
            names, children, sums, nulls, counts.sum(axis=1).tolist(), strict=True
        ):
            if n > missing:
                child._sum.inc(total)
            if missing:
                self._missing[name].inc(missing)

    def render(self) -> tuple[bytes, str]:
        pc = self.prometheus_client
        if self.multiproc_dir:
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)
            return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST
        return pc.generate_latest(self.registry), pc.CONTENT_TYPE_LATEST


# ------------------------------------------------------------------------------- prediction logging


class PredictionLog:
    """Sampled prediction records written as JSONL by one background thread, off the request path.

    One line per row: ``ts`` (ISO-8601 UTC), ``request_id``, ``route``, ``model``, ``model_version``,
    ``variant``, ``inputs`` (feature -> value), ``prediction`` and ``score``. Files are
    ``predictions-<YYYYmmddTHH>-<host>-<pid>-<part>.jsonl`` (UTC hour; a new part past
    ``rotate_bytes``), so several workers never share a file and a monitor reads a window by name.
    """

    _STOP = object()

    def __init__(
        self,
        folder: Path,
        *,
        model: str,
        model_version: str,
        variant: str,
        queue_size: int = 10_000,
        rotate_bytes: int = 64 << 20,
        on_written: Any = None,
        on_dropped: Any = None,
    ):
        self.folder = Path(folder)
        self.static = {"model": model, "model_version": model_version, "variant": variant}
        self.rotate_bytes = rotate_bytes
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0
        self._on_written, self._on_dropped = on_written, on_dropped
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._file = None
        self._file_hour: str | None = None
        self._part = 0
        self._templates: dict[tuple[str, ...], bytes] = {}
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, record: tuple) -> bool:
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped()
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the thread."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self.queue.put(self._STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _open(self, hour: str):
        if self._file is not None and self._file_hour == hour and self._file.tell() < self.rotate_bytes:
            return self._file
        if self._file is not None:
            self._file.close()
            self._part = self._part + 1 if self._file_hour == hour else 0
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.folder / f"predictions-{hour}-{self._tag}-{self._part:03d}.jsonl"
            if not path.exists() or path.stat().st_size < self.rotate_bytes:
                break
            self._part += 1
        # kept open across records, closed on rotation/stop; flushed after every batch of records
        self._file = open(path, "ab", buffering=LOG_BUFFER_BYTES)  # noqa: SIM115
        self._file_hour = hour
        return self._file

    def _write(self, record: tuple) -> None:
        ts, request_id, route, columns, preds, scores = record
        when = datetime.fromtimestamp(ts, UTC)
        f = self._open(when.strftime("%Y%m%dT%H"))
        stamp = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
        # Columnar: each column is serialised in one go, then every line is one bytes %-format of a
        # per-record template with the row's values (the fields shared by the record are in it once).
        head = orjson.dumps(
            {"ts": stamp, "request_id": request_id or uuid.uuid4().hex, "route": route, **self.static}
        )
        names = tuple(columns)
        cols = [_json_column(columns[n]) for n in names]
        quoted = tuple(q for _, q in cols)
        values = [v for v, _ in cols]
        values.append(_json_column(preds, strings=False)[0])
        values.append(itertools.repeat(b"null") if scores is None else _json_column(scores, strings=False)[0])
        template = head[:-1].replace(b"%", b"%%") + self._row_template(names, quoted)
        lines = [template % row for row in zip(*values)]  # noqa: B905 - the score column may be repeat()
        f.write(b"\n".join(lines) + b"\n")
        self.written += len(lines)
        if self._on_written is not None:
            self._on_written(len(lines))

    def _row_template(self, names: tuple[str, ...], quoted: tuple[bool, ...]) -> bytes:
        """``,"inputs":{"a":%s,"b":"%s",...},"prediction":%s,"score":%s}`` for these columns."""
        key = (names, quoted)
        tpl = self._templates.get(key)
        if tpl is None:
            fields = [
                orjson.dumps(n).replace(b"%", b"%%") + (b':"%s"' if q else b":%s")
                for n, q in zip(names, quoted, strict=True)
            ]
            tpl = self._templates[key] = b',"inputs":{' + b",".join(fields) + b'},"prediction":%s,"score":%s}'
        return tpl

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self.queue.get()
            items = [item]
            if item is not self._STOP:
                # Let the records of the next requests pile up: one wake-up of this thread (one GIL
                # hand-over with the model and event-loop threads), one write and one flush for all.
                time.sleep(LOG_BATCH_INTERVAL_S)
            with contextlib.suppress(queue.Empty):
                while len(items) < 5000:
                    items.append(self.queue.get_nowait())
            for it in items:
                if it is self._STOP:
                    stop = True
                    continue
                try:
                    self._write(it)
                except Exception:  # noqa: BLE001 - a logging failure must never take the server down
                    log.exception("prediction log: cannot write a record")
            if self._file is not None:
                self._file.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def _json_column(values: Any, strings: bool = True) -> tuple[list[bytes], bool]:
    """Each value of a column as JSON bytes, from one orjson call of the whole column when it is safe.

    The column's JSON is split where the split is exact: with no string and no nested list or object
    in it, every ``,`` separates two values. With only strings, none holding an escaped quote, every
    ``","`` separates two strings; their contents come back without quotes (the second item is then
    True; not done with ``strings=False``). Otherwise one orjson call per value.
    """
    n = len(values)
    if not n:
        return [], False
    opt = orjson.OPT_SERIALIZE_NUMPY
    data = orjson.dumps(values, option=opt)
    inner = data[1:-1]
    if b'"' not in inner and b"[" not in inner and b"{" not in inner:
        return inner.split(b","), False
    if (
        strings
        and data.startswith(b'["')
        and data.endswith(b'"]')
        and b'\\"' not in inner
        and inner.count(b'","') == n - 1
    ):
        return inner[1:-1].split(b'","'), True
    return [orjson.dumps(v, option=opt) for v in values], False


# --------------------------------------------------------------------------------------------- app


@dataclass
class _Pending:
    columns: dict[str, list]
    rows: int
    future: asyncio.Future


_JSON_HEADERS = [(b"content-type", b"application/json")]
_ROUTES = {
    "/invocations": ("POST", "invocations"),
    "/predict": ("POST", "predict"),
    "/health": ("GET", "health"),
    "/ping": ("GET", "health"),
    "/ready": ("GET", "ready"),
    "/version": ("GET", "version"),
    "/metrics": ("GET", "metrics"),
}


class ServingApp:
    """The ASGI application (a plain callable: no framework routing or middleware on the hot path)."""

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.model: LoadedModel | None = None
        self.resolved: ResolvedModel | None = None
        self.load_error: str | None = None
        self.ready = False
        self.model_name = settings.model_name or _name_from_uri(settings.model_uri)
        self.model_version = settings.model_version or _version_from_uri(settings.model_uri) or "unknown"
        self.metrics: Metrics | None = None
        self.prediction_log: PredictionLog | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Pending] = []
        self._draining = False
        self._active = 0  # requests between joining the queue and getting their result
        self._recent_active = 0.0  # peak of _active, decaying with ACTIVE_HALF_LIFE_S
        self._recent_at = 0.0
        self._call_s = 0.0  # moving average of one model call (seconds)
        self._arrival: asyncio.Future | None = None
        self._ready_marker: Path | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    def startup(self) -> None:
        """Start the model thread and load + warm the model in it (``/ready`` says 503 until done)."""
        if self._started:
            return
        self._started = True
        self.metrics = Metrics(self.settings.variant, self.model_version, self.settings.max_categories)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._load_future = self._executor.submit(self._load)

    def _load(self) -> None:
        s = self.settings
        try:
            t0 = time.monotonic()
            if s.model_path:
                resolved = ResolvedModel(s.model_path, self.model_name, s.model_version, s.model_uri)
            else:
                resolved = resolve_model(s.model_uri, s.tracking_uri)
            model = LoadedModel(resolved, threads=s.model_threads)
            if not s.model_name:
                self.model_name = resolved.name
            if not s.model_version and resolved.version:
                self.model_version = resolved.version
            if self.metrics is not None and self.metrics.base[1] != self.model_version:
                self.metrics = Metrics(s.variant, self.model_version, s.max_categories)
            model.warm_up()
            gc.collect()
            gc.freeze()  # the model's objects leave the collector's generations: shorter GC pauses
            self.resolved, self.model = resolved, model
            if s.sample_rate > 0:
                folder = s.predictions_dir or _default_predictions_dir(self.model_name)
                m = self.metrics
                self.prediction_log = PredictionLog(
                    folder,
                    model=self.model_name,
                    model_version=self.model_version,
                    variant=s.variant,
                    queue_size=s.log_queue_size,
                    rotate_bytes=s.log_rotate_bytes,
                    on_written=m.log_records.inc if m else None,
                    on_dropped=m.log_dropped.inc if m else None,
                )
            if self.metrics is not None:
                self.metrics.info.labels(self.model_name, self.model_version, s.variant, s.model_uri).set(1)
            self.ready = True
            if s.state_dir:
                self._ready_marker = Path(s.state_dir) / f"{READY_PREFIX}{os.getpid()}"
                self._ready_marker.touch()
            log.info(
                "serving %s version %s (%s) as %s, ready in %.2fs",
                self.model_name,
                self.model_version,
                s.model_uri,
                s.variant,
                time.monotonic() - t0,
            )
        except Exception as exc:  # noqa: BLE001 - reported by /ready, the process stays live
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("cannot load model %s", s.model_uri)

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Block until the model is loaded (for tests and embedding); True if ready."""
        fut = getattr(self, "_load_future", None)
        if fut is not None:
            with contextlib.suppress(Exception):
                fut.result(timeout=timeout)
        return self.ready

    def shutdown(self) -> None:
        if self._ready_marker is not None:
            with contextlib.suppress(OSError):
                self._ready_marker.unlink()
        if self.prediction_log is not None:
            self.prediction_log.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
        self._started = False

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:  # noqa: BLE001
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        t0 = time.perf_counter()
        if not self._started:  # no lifespan (some test clients): start on first use
            self.startup()
        metrics = self.metrics
        path = scope["path"]
        entry = _ROUTES.get(path)
        route = path if entry else "other"
        metrics.in_flight.inc()
        status = 500
        try:
            if entry is None:
                status, body, headers = 404, _error(404, "NOT_FOUND", f"no route {path}"), _JSON_HEADERS
            elif scope["method"] != entry[0]:
                status, body, headers = (
                    405,
                    _error(405, "METHOD_NOT_ALLOWED", f"{path} takes {entry[0]}"),
                    [*_JSON_HEADERS, (b"allow", entry[0].encode())],
                )
            else:
                status, body, headers = await getattr(self, "_" + entry[1])(scope, receive)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.in_flight.dec()
            counter, hist = metrics.http(route, status)
            counter.inc()
            hist.observe(time.perf_counter() - t0)

    # -- endpoints ---------------------------------------------------------------------------------

    async def _health(self, scope, receive):
        return 200, b'{"status":"ok"}', _JSON_HEADERS

    async def _ready(self, scope, receive):
        if not self.ready:
            reason = self.load_error or "model loading"
            return 503, orjson.dumps({"ready": False, "reason": reason}), _JSON_HEADERS
        s = self.settings
        if s.state_dir and s.workers > 1:
            live = _live_ready_markers(Path(s.state_dir))
            if live < s.workers:
                body = {"ready": False, "reason": f"{live} of {s.workers} workers ready"}
                return 503, orjson.dumps(body), _JSON_HEADERS
        return 200, orjson.dumps({"ready": True, "model_version": self.model_version}), _JSON_HEADERS

    async def _version(self, scope, receive):
        s = self.settings
        body = {
            "model": self.model_name,
            "model_version": self.model_version,
            "model_uri": s.model_uri,
            "run_id": self.model.run_id if self.model else None,
            "variant": s.variant,
            "image_digest": s.image_digest or os.environ.get(ENV_IMAGE_DIGEST) or None,
            "ready": self.ready,
        }
        return 200, orjson.dumps(body), _JSON_HEADERS

    async def _metrics(self, scope, receive):
        body, ctype = self.metrics.render()
        return 200, body, [(b"content-type", ctype.encode())]

    async def _invocations(self, scope, receive):
        return await self._score(scope, receive, simple=False)

    async def _predict(self, scope, receive):
        return await self._score(scope, receive, simple=True)

    async def _score(self, scope, receive, simple: bool):
        try:
            body = await self._read_body(scope, receive)
            if not self.ready:
                reason = self.load_error or "the model is still loading"
                return 503, _error(503, "TEMPORARILY_UNAVAILABLE", reason), _JSON_HEADERS
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InputError(400, f"the body is not valid JSON: {exc}") from None
            columns, rows = parse_payload(payload, self.model.columns)
        except InputError as exc:
            return exc.status, exc.body(), _JSON_HEADERS
        if rows:
            try:
                preds, scores = await self._run_batched(columns, rows)
            except Exception as exc:  # noqa: BLE001 - a model failure on checked input: a server error
                log.exception("model call failed")
                return 500, _error(500, "INTERNAL_ERROR", f"model error: {type(exc).__name__}"), _JSON_HEADERS
        else:
            preds, scores = [], None
        self._log_sample(scope, columns, preds, scores, "/predict" if simple else "/invocations")
        if simple:
            out = {
                "predictions": [
                    {"class": p, "score": s}
                    for p, s in zip(preds, scores if scores is not None else [None] * len(preds), strict=True)
                ],
                "model_version": self.model_version,
                "variant": self.settings.variant,
            }
        else:
            out = {"predictions": preds}
        return 200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), _JSON_HEADERS

    def _log_sample(self, scope, columns, preds, scores, route: str) -> None:
        plog = self.prediction_log
        if plog is None or not len(preds):
            return
        rate = self.settings.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return
        request_id = None  # none given: the log thread makes one (off the event loop)
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                request_id = v.decode("latin-1")[:128] or None
                break
        plog.submit((time.time(), request_id, route, columns, preds, scores))

    async def _read_body(self, scope, receive) -> bytes:
        limit = self.settings.max_body_bytes
        ctype = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    size = int(v)
                except ValueError:
                    raise InputError(400, "invalid Content-Length") from None
                if size > limit:
                    raise InputError(413, f"the body has {size} bytes, more than the limit {limit}")
            elif k == b"content-type":
                ctype = v.decode("latin-1")
        if ctype is not None:
            mime, _, params = ctype.partition(";")
            if mime.strip().lower() != "application/json":
                raise InputError(415, f"only application/json is supported, got {ctype!r}")
            charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.I)
            if charset and charset[1].lower() not in ("utf-8", "utf8"):
                raise InputError(415, "the scoring server only supports UTF-8")
        chunks = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise InputError(400, "client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise InputError(413, f"the body is larger than the limit {limit} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- batching ----------------------------------------------------------------------------------

    async def _run_batched(self, columns: dict[str, list], rows: int):
        loop = asyncio.get_running_loop()
        item = _Pending(columns, rows, loop.create_future())
        self._pending.append(item)
        self._active += 1
        if self._active > self._recent_active:
            self._recent_active, self._recent_at = self._active, loop.time()
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        try:
            return await item.future
        finally:
            self._active -= 1

    async def _linger(self, limit: int) -> None:
        """Under load, wait a moment for the requests that are on their way back before a model call.

        A model call costs about the same for 1 row and for 50, and closed-loop clients split into
        groups that take turns (one group is answered and sends its next requests while the other is
        in the model): without this wait every call would take only the group that happens to be
        queued. Waits only while fewer requests are queued than were recently in the server at once,
        never longer than ``MAX_LINGER_S`` or half a model call, and not when the batch is full.
        """
        pending = self._pending
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._recent_active *= 0.5 ** ((now - self._recent_at) / ACTIVE_HALF_LIFE_S)
        self._recent_at = now
        wait = min(MAX_LINGER_S, self._call_s / 2)
        if wait <= 0 or len(pending) >= round(self._recent_active):
            return
        deadline = now + wait
        while len(pending) < round(self._recent_active):
            if sum(it.rows for it in pending) + pending[-1].rows > limit:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival = loop.create_future()
            try:
                await asyncio.wait_for(self._arrival, remaining)
            except TimeoutError:
                return
            finally:
                self._arrival = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        limit = max(1, self.settings.max_batch_rows)
        try:
            while self._pending:
                if limit > 1:
                    await self._linger(limit)
                batch, rows = [self._pending[0]], self._pending[0].rows
                i = 1
                while i < len(self._pending) and rows + self._pending[i].rows <= limit:
                    rows += self._pending[i].rows
                    batch.append(self._pending[i])
                    i += 1
                del self._pending[:i]
                t0 = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self._predict_batch, batch)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
                    results = [exc] * len(batch)
                self._call_s += 0.2 * (time.perf_counter() - t0 - self._call_s)
                for it, res in zip(batch, results, strict=True):
                    if it.future.done():
                        continue
                    if isinstance(res, BaseException):
                        it.future.set_exception(res)
                    else:
                        it.future.set_result(res)
        finally:
            self._draining = False

    def _predict_batch(self, batch: list[_Pending]) -> list:
        """One model call for the whole batch (in the model thread); a failing batch is retried per item."""
        model = self.model
        if len(batch) == 1:
            columns = batch[0].columns
        else:
            columns = {}
            for c in model.columns:
                merged = columns[c.name] = []
                for it in batch:
                    merged.extend(it.columns[c.name])
        t0 = time.perf_counter()
        try:
            arrays = model.arrays(columns)
            preds, score = model.predict(columns, arrays)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                return [exc]
            return [r for it in batch for r in self._predict_batch([it])]
        m = self.metrics
        m.predict_seconds.observe(time.perf_counter() - t0)
        m.batch_rows.observe(len(preds))
        try:
            m.observe_batch(columns, model.columns, preds, score, model.np, arrays)
        except Exception:  # noqa: BLE001 - metrics never fail a prediction
            log.exception("feature metrics failed")
        preds_list = preds.tolist()
        score_list = None if score is None else score.tolist()
        out, start = [], 0
        for it in batch:
            end = start + it.rows
            out.append((preds_list[start:end], None if score_list is None else score_list[start:end]))
            start = end
        return out


def _error(status: int, code: str, message: str) -> bytes:
    return orjson.dumps({"error_code": code, "message": message})


def _name_from_uri(uri: str) -> str:
    m = _MODELS_URI.match(uri)
    if m:
        return m["name"]
    run = re.match(r"^runs:/([^/]+)/", uri)
    if run:
        return f"run-{run[1][:8]}"
    return Path(uri.removeprefix("file://")).name or "model"


def _version_from_uri(uri: str) -> str | None:
    m = _MODELS_URI.match(uri)
    return m["version"] if m and m["version"] and m["version"].isdigit() else None


def _default_predictions_dir(model_name: str) -> Path:
    from mlops.settings import get_settings

    return get_settings().home / "predictions" / model_name


def _live_ready_markers(folder: Path) -> int:
    live = 0
    for p in folder.glob(f"{READY_PREFIX}*"):
        try:
            os.kill(int(p.name[len(READY_PREFIX) :]), 0)
            live += 1
        except (ValueError, ProcessLookupError):
            with contextlib.suppress(OSError):
                p.unlink()
        except PermissionError:
            live += 1
    return live


def create_app(settings: ServingSettings | None = None, **kwargs: Any) -> ServingApp:
    """The ASGI app for ``settings`` (or ``ServingSettings.from_env(**kwargs)``)."""
    if settings is None:
        settings = ServingSettings.from_env(**kwargs)
    elif kwargs:
        settings = replace(settings, **kwargs)
    return ServingApp(settings)


# ------------------------------------------------------------------------------------------ running


def _prepare_multiprocess(settings: ServingSettings) -> tuple[ServingSettings, str | None]:
    """Several workers: a clean PROMETHEUS_MULTIPROC_DIR (also the ready-marker folder), before any
    metric exists. Returns the settings and the folder to remove at exit (None if not ours)."""
    if settings.workers <= 1:
        return settings, None
    ours = None
    folder = _multiproc_dir()
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for p in Path(folder).iterdir():
            if p.suffix == ".db" or p.name.startswith(READY_PREFIX):
                p.unlink()
    else:
        folder = ours = tempfile.mkdtemp(prefix="mlops-serve-metrics-")
        os.environ[MULTIPROC_ENV] = folder
    return replace(settings, state_dir=folder), ours


def serve(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 1,
    variant: str = "stable",
    **options: Any,
) -> int:
    """Run the server until SIGTERM/SIGINT: uvicorn with 1 worker, gunicorn + uvicorn workers for N.

    The model URI is resolved and downloaded once here, so every worker serves the same version.
    ``options`` are the other :class:`ServingSettings` fields (``tracking_uri``, ``predictions_dir``,
    ``sample_rate``, ``max_body_bytes``, ``model_version``, ...).
    """
    settings = ServingSettings.from_env(
        model_uri, host=host, port=port, workers=workers, variant=variant, **options
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, settings.model_threads)))
    # The event loop and the model thread share the GIL: hand it over every 1 ms, not every 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    settings, metrics_dir = _prepare_multiprocess(settings)
    download_dir = None
    try:
        if not settings.model_path:
            local = not _MODELS_URI.match(settings.model_uri) and not settings.model_uri.startswith("runs:/")
            download_dir = None if local else tempfile.mkdtemp(prefix="mlops-serve-model-")
            resolved = resolve_model(settings.model_uri, settings.tracking_uri, dst=download_dir)
            settings = replace(
                settings,
                model_path=resolved.path,
                model_name=settings.model_name or resolved.name,
                model_version=settings.model_version or resolved.version,
            )
        log.info(
            "mlops serve: %s (version %s, variant %s) on http://%s:%d with %d worker(s)",
            settings.model_uri,
            settings.model_version or "unknown",
            settings.variant,
            settings.host,
            settings.port,
            settings.workers,
        )
        if settings.workers == 1:
            return _run_uvicorn(settings)
        return _run_gunicorn(settings)
    finally:
        for d in (download_dir, metrics_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)


def _run_uvicorn(settings: ServingSettings) -> int:
    import uvicorn

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=30,
    )

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises SIGTERM after its graceful shutdown, which kills the process before
            # serve() removes its temporary folders; stop gracefully and return 0 instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            import signal

            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    _Server(config).run()
    return 0


def _run_gunicorn(settings: ServingSettings) -> int:
    from gunicorn.app.base import BaseApplication

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # uvicorn.workers: uvicorn-worker is not locked
        import uvicorn.workers  # noqa: F401 - imported once here, quietly

    state_dir = settings.state_dir

    def child_exit(server, worker):  # in the master: forget a dead worker's live gauges and marker
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
        if state_dir:
            with contextlib.suppress(OSError):
                (Path(state_dir) / f"{READY_PREFIX}{worker.pid}").unlink()

    options = {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "uvicorn.workers.UvicornWorker",
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "child_exit": child_exit,
        "proc_name": f"mlops-serve-{settings.model_name or 'model'}",
    }

    class _App(BaseApplication):
        def load_config(self):
            for k, v in options.items():
                self.cfg.set(k, v)

        def load(self):
            return create_app(settings)

    _App().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops.serving ...``: same arguments as ``mlops serve``."""
    from mlops.cli import main as cli_main

    return cli_main(["serve", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":  # pragma: no cover - exercised through the CLI
    raise SystemExit(main())
