"""The server's Prometheus metrics: every name defined once here, one registry per app, several workers.

The family names below are a contract: the canary analysis parses them from ``/metrics``
(:func:`mlops.deploy.analysis.snapshot_from_text`), the Kubernetes target queries them from
Prometheus, the alert rules and the dashboard chart them. A counter's samples end in ``_total``, a
histogram's in ``_bucket``, ``_sum`` and ``_count``. Every series is labelled ``variant`` and
``model_version``.

:class:`Metrics` registers its collectors in the app's one ``CollectorRegistry`` (passed in). With
``PROMETHEUS_MULTIPROC_DIR`` set (several workers; it must be set before prometheus_client is imported,
which the runner does), values live in that folder's files and :meth:`Metrics.render` sums every
process's, in a fresh registry per scrape. Only prometheus_client's public API is used.

prometheus_client is imported when a :class:`Metrics` is made, never at import of this module (the
names are imported by packages that never serve).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import HistogramMetricFamily

    from mlops.serving.payloads import Column

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# ----------------------------------------------------------------------------------- family names

#: counter ``{route,status,variant,model_version}``
HTTP_REQUESTS = "mlops_http_requests"
#: histogram ``{route,status,variant,model_version}``: request start to the last response byte
HTTP_REQUEST_DURATION_SECONDS = "mlops_http_request_duration_seconds"
#: gauge ``{variant,model_version}`` (summed over live workers)
HTTP_REQUESTS_IN_FLIGHT = "mlops_http_requests_in_flight"
#: histogram ``{variant,model_version}`` of the positive-class probability, per row
PREDICTION_SCORE = "mlops_prediction_score"
#: counter ``{class,variant,model_version}`` of predicted classes
PREDICTIONS = "mlops_predictions"
#: histogram ``{feature,variant,model_version}`` per numeric input feature
FEATURE_VALUE = "mlops_feature_value"
#: counter ``{feature,variant,model_version}`` of nulls per numeric feature
FEATURE_MISSING = "mlops_feature_missing"
#: counter ``{feature,value,variant,model_version}`` per categorical value (at most ``max_categories``
#: values per feature and process, the rest :data:`OTHER`)
FEATURE_CATEGORY = "mlops_feature_category"
#: histogram ``{variant,model_version}`` of rows per model call
MODEL_BATCH_ROWS = "mlops_model_batch_rows"
#: histogram ``{variant,model_version}`` of the time of one model call
MODEL_PREDICT_DURATION_SECONDS = "mlops_model_predict_duration_seconds"
#: counters ``{variant,model_version}`` of prediction-log lines written / records dropped (queue full) /
#: rows lost because the log could not be written (disk full, ...)
PREDICTION_LOG_RECORDS = "mlops_prediction_log_records"
PREDICTION_LOG_DROPPED = "mlops_prediction_log_dropped"
PREDICTION_LOG_FAILED = "mlops_prediction_log_failed"
#: gauge ``{model,model_version,variant,uri}`` = 1
MODEL_INFO = "mlops_model_info"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: Shared buckets of every numeric feature histogram (1-2-5 series): scale-free enough for drift checks.
FEATURE_BUCKETS = (0.0,) + tuple(m * 10.0**e for e in range(-1, 6) for m in (1, 2, 5))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OTHER = "__other__"
#: Longer category values are counted as :data:`OTHER` (label values come from request bodies).
MAX_CATEGORY_CHARS = 64

#: Suffix of the gauges a :class:`BulkHistogram` counts in (never exposed under these names).
_PARTS = "__parts"


def multiproc_dir() -> str | None:
    """The multiprocess metrics folder of this process, if any."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


# ------------------------------------------------------------------------------- bulk histograms


class BulkHistogram:
    """A histogram family observed a whole array at a time, exposed exactly like a ``Histogram``.

    ``Histogram.observe`` takes one value (about 2 us a call); the server observes every numeric
    feature of every row, which would cost more than the model call. Here a batch is counted per
    bucket with numpy and added in one step: to numpy arrays in a single process; with several
    processes (``PROMETHEUS_MULTIPROC_DIR``), to public ``Gauge`` children kept out of every registry,
    one per bucket with values (they live in the metrics files like every metric, and
    :meth:`family` reassembles the histogram from the summed files). Either way the exposition is a
    ``Histogram``'s: same name, help, labels, ``le`` bounds, ``_count``, ``_sum`` and ``_created``.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ):
        from prometheus_client import Gauge
        from prometheus_client.utils import floatToGoString

        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = [float(b) for b in buckets]
        if self.bounds[-1] != math.inf:
            self.bounds.append(math.inf)
        self.le = [floatToGoString(b) for b in self.bounds]
        self._slot = {le: i for i, le in enumerate(self.le)}
        self.shared = multiproc_dir() is not None
        self.counts_name, self.totals_name = name + _PARTS + "_bucket", name + _PARTS + "_sum"
        self.counts: Any = None
        self.totals: Any = None
        if self.shared:  # "sum": every process's counts add up, dead workers' included, as a Histogram's
            self.counts = Gauge(
                self.counts_name,
                documentation,
                [*self.labelnames, "le"],
                registry=None,
                multiprocess_mode="sum",
            )
            self.totals = Gauge(
                self.totals_name, documentation, self.labelnames, registry=None, multiprocess_mode="sum"
            )
        # prometheus_client's own switch for the _created samples (read the same way)
        self.with_created = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
            "true",
            "1",
            "t",
        )
        self._children: dict[tuple[str, ...], BulkHistogramChild] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: Any) -> BulkHistogramChild:
        """The child of one label set (made on first use, like ``Histogram.labels``)."""
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = BulkHistogramChild(self, key)
        return child

    def describe(self) -> list[HistogramMetricFamily]:
        """Name and type, for the registry's duplicate check."""
        return [self.family(None, None)]

    def collect(self) -> list[HistogramMetricFamily]:
        """The histogram family of this process's counts."""
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.samples import Sample

        if self.shared:
            counts, totals = next(iter(self.counts.collect())), next(iter(self.totals.collect()))
            return [self.family(counts, totals)]
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            buckets, total = child.snapshot()
            fam.add_metric(list(key), list(zip(self.le, itertools.accumulate(buckets), strict=True)), total)
            if self.with_created:
                labels = dict(zip(self.labelnames, key, strict=True))
                fam.samples.append(Sample(self.name + "_created", labels, child.created))
        return [fam]

    def family(self, counts: Any, totals: Any) -> HistogramMetricFamily:
        """The histogram family from the collected ``counts`` and ``totals`` gauge families (or None)."""
        from prometheus_client.core import HistogramMetricFamily

        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        per_key: dict[tuple[str, ...], list[float]] = {}
        sums: dict[tuple[str, ...], float] = {}
        for s in totals.samples if totals is not None else ():
            key = tuple(s.labels[n] for n in self.labelnames)
            sums[key] = s.value
            per_key.setdefault(key, [0.0] * len(self.le))
        for s in counts.samples if counts is not None else ():
            key = tuple(s.labels[n] for n in self.labelnames)
            per_key.setdefault(key, [0.0] * len(self.le))[self._slot[s.labels["le"]]] += s.value
        for key, buckets in per_key.items():
            cumulative = list(itertools.accumulate(buckets))
            fam.add_metric(list(key), list(zip(self.le, cumulative, strict=True)), sums.get(key, 0.0))
        return fam


class BulkHistogramChild:
    """One label set of a :class:`BulkHistogram`."""

    def __init__(self, parent: BulkHistogram, key: tuple[str, ...]):
        import numpy as np

        self.parent, self.key = parent, key
        self.created = time.time()
        self._lock = threading.Lock()
        self._counts = np.zeros(len(parent.bounds))
        self._total = 0.0
        # several processes: made now, so that the label set is exposed from the start
        self._shared_total = parent.totals.labels(*key) if parent.shared else None
        self._shared_counts: list[Any] = [None] * len(parent.bounds)

    def add(self, counts: Any, total: float | None) -> None:
        """Count a batch: ``counts`` per bucket (numpy ints, one per bound, not cumulative; bucket ``i``
        holds ``bounds[i - 1] < value <= bounds[i]``) and their sum (None: no value in the batch)."""
        if self._shared_total is None:
            with self._lock:
                self._counts += counts
                if total is not None:
                    self._total += total
            return
        for i in counts.nonzero()[0].tolist():
            gauge = self._shared_counts[i]
            if gauge is None:
                gauge = self._shared_counts[i] = self.parent.counts.labels(*self.key, self.parent.le[i])
            gauge.inc(int(counts[i]))
        if total is not None:
            self._shared_total.inc(total)

    def snapshot(self) -> tuple[list[float], float]:
        """This process's (count per bucket, sum), for a single-process exposition."""
        with self._lock:
            return self._counts.tolist(), self._total

    def observe(self, amount: float) -> None:
        """One value, like ``Histogram.observe``."""
        observe_many(self, [amount])


def observe_many(hist_child: Any, values: Any) -> None:
    """``observe`` every value of a numpy array (NaN skipped) into one histogram child.

    A :class:`BulkHistogramChild` takes them in a few vectorised steps; any other child (a
    ``Histogram``'s) one ``observe`` call per value.
    """
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return
    if not isinstance(hist_child, BulkHistogramChild):
        for v in values.tolist():
            hist_child.observe(v)
        return
    idx = np.searchsorted(np.asarray(hist_child.parent.bounds), values, side="left")
    hist_child.add(np.bincount(idx, minlength=len(hist_child.parent.bounds)), float(values.sum()))


class _AllProcesses:
    """The collector of one multiprocess scrape: every process's files, bulk histograms reassembled."""

    def __init__(self, path: str, bulk: Iterable[BulkHistogram]):
        self.path = path
        self.bulk = list(bulk)
        self.parts = {n for h in self.bulk for n in (h.counts_name, h.totals_name)}

    def collect(self) -> Iterable[Any]:
        from prometheus_client import multiprocess

        found: dict[str, Any] = {}
        for fam in multiprocess.MultiProcessCollector(None, path=self.path).collect():
            if fam.name in self.parts:
                found[fam.name] = fam
            else:
                yield fam
        for h in self.bulk:
            counts, totals = found.get(h.counts_name), found.get(h.totals_name)
            if counts is not None or totals is not None:
                yield h.family(counts, totals)


# ----------------------------------------------------------------------------------------- Metrics


class Metrics:
    """Every Prometheus metric of the server (the families above), in the app's registry.

    ``registry``: the app's ``CollectorRegistry`` (a new one when not given); the collectors are
    registered in it until :meth:`unregister`.
    """

    def __init__(
        self,
        variant: str,
        model_version: str,
        max_categories: int = 50,
        registry: CollectorRegistry | None = None,
    ):
        # One flat declaration per family (13 of them): long, but nothing to follow but the list.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiproc_dir = multiproc_dir()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._families: list[Any] = []
        self.base = (variant, model_version)
        self.max_categories = max_categories
        self.known_categories: dict[str, set[str]] = {}
        base = ["variant", "model_version"]
        new = self._new
        self.requests = new(Counter, HTTP_REQUESTS, "HTTP requests.", ["route", "status", *base])
        self.latency = new(
            Histogram,
            HTTP_REQUEST_DURATION_SECONDS,
            "Time from request start to the last response byte.",
            ["route", "status", *base],
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = new(
            Gauge, HTTP_REQUESTS_IN_FLIGHT, "Requests being processed.", base, multiprocess_mode="livesum"
        ).labels(*self.base)
        self.score = new(
            BulkHistogram,
            PREDICTION_SCORE,
            "Predicted probability of the positive class, per row.",
            base,
            buckets=SCORE_BUCKETS,
        ).labels(*self.base)
        self.classes = new(Counter, PREDICTIONS, "Predicted rows per predicted class.", ["class", *base])
        self.feature = new(
            BulkHistogram,
            FEATURE_VALUE,
            "Values of each numeric input feature, per row.",
            ["feature", *base],
            buckets=FEATURE_BUCKETS,
        )
        self.missing = new(
            Counter, FEATURE_MISSING, "Null values per numeric input feature.", ["feature", *base]
        )
        self.category = new(
            Counter,
            FEATURE_CATEGORY,
            "Rows per value of each categorical input feature (bounded: the rest count as __other__).",
            ["feature", "value", *base],
        )
        self.batch_rows = new(
            Histogram,
            MODEL_BATCH_ROWS,
            "Rows per model call (concurrent requests are merged).",
            base,
            buckets=BATCH_BUCKETS,
        ).labels(*self.base)
        self.predict_seconds = new(
            Histogram,
            MODEL_PREDICT_DURATION_SECONDS,
            "Time of one model call.",
            base,
            buckets=LATENCY_BUCKETS,
        ).labels(*self.base)
        self.log_records = new(Counter, PREDICTION_LOG_RECORDS, "Prediction log lines written.", base).labels(
            *self.base
        )
        self.log_dropped = new(
            Counter,
            PREDICTION_LOG_DROPPED,
            "Prediction log records dropped because the queue was full.",
            base,
        ).labels(*self.base)
        self.log_failed = new(
            Counter,
            PREDICTION_LOG_FAILED,
            "Prediction log rows lost because the log could not be written (disk full, folder gone).",
            base,
        ).labels(*self.base)
        self.info = new(
            Gauge,
            MODEL_INFO,
            "The model this server serves (value 1).",
            ["model", "model_version", "variant", "uri"],
            multiprocess_mode="max",
        )
        self._http: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._features: dict[str, BulkHistogramChild] = {}
        self._missing: dict[str, Any] = {}
        self._cats: dict[str, dict[str, Any]] = {}
        self._classes: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _new(self, kind: Any, name: str, documentation: str, labelnames: list[str], **kwargs: Any) -> Any:
        family = kind(name, documentation, labelnames, registry=self.registry, **kwargs)
        self._families.append(family)
        return family

    def unregister(self) -> None:
        """Take every collector out of the registry (before other metrics take their names)."""
        for family in self._families:
            self.registry.unregister(family)

    def http(self, route: str, status: int) -> tuple[Any, Any]:
        """The (request counter, latency histogram) children of one route and status."""
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
    ) -> None:
        """Per-row distributions of one model call (``arrays``: the model's numpy columns, if at hand)."""
        with self._lock:
            numeric = [c.name for c in cols if c.kind in ("int", "float")]
            if numeric:
                src = arrays if arrays is not None else columns
                self._observe_features(numeric, [src[n] for n in numeric], np)
            for c in cols:
                if c.kind in ("str", "bool"):
                    self._observe_categories(c, columns[c.name])
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

    def set_known_categories(self, categories: dict[str, list[str]]) -> None:
        """Count only these values per feature (the model's training categories); the rest as __other__."""
        self.known_categories = {name: set(map(str, values)) for name, values in categories.items()}

    def _observe_categories(self, col: Column, vals: list) -> None:
        known = self._cats.setdefault(col.name, {})
        allowed = self.known_categories.get(col.name)
        for value, n in Tally(vals).items():
            key = str(value).lower() if col.kind == "bool" else str(value)
            if len(key) > MAX_CATEGORY_CHARS or (allowed is not None and key not in allowed):
                key = OTHER  # a label value comes from the request only if training saw it, and is short
            child = known.get(key)
            if child is None:
                if len(known) >= self.max_categories:
                    key = OTHER
                    child = known.get(OTHER)
                if child is None:
                    child = known[key] = self.category.labels(col.name, key, *self.base)
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
        bounds = self.feature.bounds
        width = len(bounds) + 1  # one more slot per feature: NaN sorts past the last bound (+Inf)
        idx = np.searchsorted(np.asarray(bounds), values, side="left")
        idx += (np.arange(len(names)) * width)[:, None]
        counts = np.bincount(idx.ravel(), minlength=len(names) * width).reshape(len(names), width)
        sums = np.where(nan, 0.0, values).sum(axis=1).tolist()
        nulls = counts[:, -1].tolist()
        for name, child, row, total, missing, n in zip(
            names, children, counts[:, :-1], sums, nulls, counts.sum(axis=1).tolist(), strict=True
        ):
            child.add(row, total if n > missing else None)
            if missing:
                self._missing[name].inc(missing)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of ``/metrics`` and its content type (every worker's, when several)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not self.multiproc_dir:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        bulk = [f for f in self._families if isinstance(f, BulkHistogram)]
        registry.register(_AllProcesses(self.multiproc_dir, bulk))
        return generate_latest(registry), CONTENT_TYPE_LATEST
