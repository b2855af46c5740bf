"""Data and prediction drift: a reference profile made once from the training frame, and a vectorized
detector that compares a current batch with it (pure numpy/scipy/pandas, no MLflow, no Airflow).

Reference profile (``ReferenceProfile.from_frame``), stored as JSON next to the model version:

* numeric feature (and the model score, if given): count, missing count, mean, standard deviation, and
  an ECDF sketch: the sorted distinct values found at ``sketch_size + 1`` evenly spaced quantile levels
  (0, 1/500, ..., 1; minimum and maximum included) with the exact number of reference rows ``<=`` and
  ``==`` each of them. A feature with at most ``sketch_size + 1`` distinct values is stored exactly. The
  PSI bins are the reference deciles (distinct values only, so discrete features get fewer bins), a
  subset of the sketch points: one pass over the current data serves every statistic;
* categorical feature: the count of each category (the ``max_categories`` most frequent; the rest
  folded into ``__other__``), missing values as the category ``__missing__``;
* the row count, and optionally feature importances (weights of the dataset-level decision).

Per feature, ``detect`` computes (current values are sorted once, then the sketch is looked up in them):

* numeric: two-sample Kolmogorov-Smirnov statistic ``D`` evaluated at the sketch points (left and right
  limits, so atoms are exact); it is never larger than the exact ``D`` and at most ``1 / sketch_size``
  smaller. The p-value uses the effective size ``en = n_ref * n_cur / (n_ref + n_cur)``: scipy's exact
  ``kstwo(en)`` up to ``en = 10,000``, its limit ``kstwobign`` (of ``sqrt(en) * D``, as
  ``scipy.special.kolmogorov``) above (the two differ by less than 0.003 there). Also PSI on the
  reference decile bins and the Wasserstein-1 distance on the sketch grid divided by the reference
  standard deviation (approximate, informative, not part of the decision);
* categorical: chi-square test of homogeneity on the 2 x k table of counts, PSI and Jensen-Shannon
  distance (natural log, 0..0.83) over the categories plus an ``__unseen__`` bucket: current values the
  reference never had are counted there and named in the result (up to 20, with counts);
* PSI uses proportions floored at 1e-4 (so an unseen value with 5 % of the rows alone gives PSI ~ 0.3).

Decision (``DriftThresholds``, defaults):

* false-positive control over all features tested in one call (the score included): Benjamini-Hochberg
  at ``fdr_q = 0.05``. With no drift at all, the chance that any feature is flagged is at most 5 %
  (BH controls the family-wise error under the global null, for independent or positively dependent
  tests); with drift, the expected share of false discoveries among flagged features is at most 5 %;
* effect size, because at a million rows a p-value flags shifts too small to matter: a numeric feature
  (or the score) must also have ``D >= 0.1`` or ``PSI >= 0.2``; a categorical feature ``JS >= 0.1`` or
  ``PSI >= 0.2``. A feature is drifted only if it is significant after BH AND over an effect threshold;
* minimum sample: fewer than ``min_rows = 200`` current rows, or reference rows, gives the status
  ``insufficient_data`` and never drift (per feature too: fewer non-missing values than ``min_rows``);
* dataset: ``drift`` when the share of drifted features, weighted by feature importance when the
  profile (or the call) has it and equally otherwise, is at least ``drift_share = 0.2``, or when the
  prediction score drifted; ``no_drift`` otherwise.

Missing-value shares are reported per feature; numeric tests use the finite values only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FORMAT = "mlops.drift.reference-profile/1"
OTHER = "__other__"
MISSING = "__missing__"
UNSEEN = "__unseen__"
PSI_FLOOR = 1e-4
#: Above this effective size the KS p-value uses the Kolmogorov limit distribution (exact ``kstwo``
#: gets slow: ~0.5 s per call at en = 500,000).
KS_EXACT_MAX_N = 10_000
_DISPLAY_BINS = 30
_MAX_UNSEEN_NAMED = 20

Status = Literal["drift", "no_drift", "insufficient_data"]


class DriftInputError(ValueError):
    """The current data (or a profile) cannot be compared: the message names the column and the problem."""


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class NumericProfile:
    """Reference distribution of one numeric column as an ECDF sketch (see the module docstring)."""

    name: str
    n: int  # finite values
    n_missing: int  # missing or non-finite values
    mean: float | None
    std: float | None
    values: list[float]  # sorted distinct sketch points
    le: list[int]  # reference rows <= each point
    eq: list[int]  # reference rows == each point
    psi_edges: list[int]  # indices into ``values``: PSI bins (-inf, v[e0]], (v[e0], v[e1]], ..., (v[ek], inf)
    exact: bool  # the sketch holds every distinct reference value


@dataclass(frozen=True)
class CategoricalProfile:
    """Reference counts of one categorical column."""

    name: str
    n: int
    categories: list[str]  # most frequent first
    counts: list[int]
    other: int  # rows of categories beyond ``max_categories`` (folded into __other__)
    truncated: bool


@dataclass(frozen=True)
class ReferenceProfile:
    """What drift detection needs from the training frame, computed once; JSON-serializable."""

    n_rows: int
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    score: NumericProfile | None = None
    feature_importance: dict[str, float] | None = None
    created_at: str = ""
    format: str = FORMAT

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        numeric: list[str] | tuple[str, ...],
        categorical: list[str] | tuple[str, ...],
        score: str | Any | None = None,
        feature_importance: dict[str, float] | None = None,
        *,
        sketch_size: int = 500,
        psi_bins: int = 10,
        max_categories: int = 100,
    ) -> ReferenceProfile:
        """Profile ``df``. ``score`` is a column of ``df`` or an array of one score per row."""

        if sketch_size < psi_bins or sketch_size % psi_bins:
            raise ValueError(f"sketch_size ({sketch_size}) must be a multiple of psi_bins ({psi_bins})")
        if max_categories < 1:
            raise ValueError("max_categories must be >= 1")
        numeric, categorical = list(numeric), list(categorical)
        dupes = sorted({c for c in numeric + categorical if (numeric + categorical).count(c) > 1})
        if dupes:
            raise ValueError(f"features listed twice: {dupes}")
        _check_frame(df, numeric, categorical, what="training frame")
        importance = _check_importance(feature_importance, numeric + categorical)
        score_profile = None
        if score is not None:
            name, values = _score_values(df, score)
            score_profile = _numeric_profile(name, values, len(df), sketch_size, psi_bins)
        return cls(
            n_rows=len(df),
            numeric={
                c: _numeric_profile(c, _numeric_values(df, c), len(df), sketch_size, psi_bins)
                for c in numeric
            },
            categorical={c: _categorical_profile(c, df[c], max_categories) for c in categorical},
            score=score_profile,
            feature_importance=importance,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    # ----------------------------------------------------------------- serialization

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReferenceProfile:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise DriftInputError(f"not a reference profile (format {got!r}, expected {FORMAT!r})")
        try:
            prof = cls(
                n_rows=int(raw["n_rows"]),
                numeric={k: NumericProfile(**v) for k, v in raw["numeric"].items()},
                categorical={k: CategoricalProfile(**v) for k, v in raw["categorical"].items()},
                score=NumericProfile(**raw["score"]) if raw.get("score") else None,
                feature_importance=raw.get("feature_importance"),
                created_at=raw.get("created_at", ""),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DriftInputError(f"malformed reference profile: {exc}") from exc
        for p in [*prof.numeric.values(), *([prof.score] if prof.score else [])]:
            if not (len(p.values) == len(p.le) == len(p.eq)) or any(e >= len(p.values) for e in p.psi_edges):
                raise DriftInputError(f"malformed reference profile: sketch of {p.name!r} is inconsistent")
        return prof

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DriftInputError(f"reference profile is not valid JSON: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise DriftInputError(f"reference profile not found: {path}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DriftInputError(f"cannot read reference profile {path}: {exc}") from exc
        return cls.from_json(text)


def _check_importance(importance: dict[str, float] | None, features: list[str]) -> dict[str, float] | None:
    if importance is None:
        return None
    out = {}
    for k, v in importance.items():
        if k not in features:
            raise ValueError(f"feature_importance names {k!r}, which is not a profiled feature")
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"feature_importance[{k!r}] must be a finite number >= 0, got {v!r}")
        out[k] = float(v)
    return out


def _check_frame(df: Any, numeric: list[str], categorical: list[str], what: str) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DriftInputError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in [*numeric, *categorical] if c not in df.columns]
    if missing:
        raise DriftInputError(f"{what} lacks column(s) {missing} (it has {len(df.columns)} columns)")


def _numeric_values(df: pd.DataFrame, col: str) -> np.ndarray:
    """Finite float64 values of a numeric column (a view when possible); the missing count is implied."""
    import numpy as np
    import pandas as pd

    s = df[col]
    if pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype("float64")
    if not pd.api.types.is_numeric_dtype(s.dtype):
        converted = pd.to_numeric(s, errors="coerce")
        bad = s[converted.isna() & s.notna()]
        if len(bad):
            raise DriftInputError(
                f"column {col!r} must be numeric but has dtype {s.dtype} (e.g. value {bad.iloc[0]!r})"
            )
        s = converted
    x = s.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(x)
    return x if finite.all() else x[finite]


def _score_values(df: pd.DataFrame, score: Any) -> tuple[str, np.ndarray]:
    import numpy as np

    if isinstance(score, str):
        if score not in df.columns:
            raise DriftInputError(f"score column {score!r} is not in the frame")
        return score, _numeric_values(df, score)
    x = np.asarray(score, dtype="float64").ravel()
    if len(x) != len(df):
        raise DriftInputError(f"score has {len(x)} values for {len(df)} rows")
    return "score", x[np.isfinite(x)]


def _numeric_profile(
    name: str, x: np.ndarray, n_rows: int, sketch_size: int, psi_bins: int
) -> NumericProfile:
    import numpy as np

    xs = np.sort(x)
    n = len(xs)
    if n == 0:
        return NumericProfile(name, 0, n_rows, None, None, [], [], [], [], True)
    distinct = xs[np.concatenate(([True], xs[1:] != xs[:-1]))]
    if len(distinct) <= sketch_size + 1:
        values, exact = distinct, True
    else:
        pos = np.floor(np.arange(sketch_size + 1) / sketch_size * (n - 1)).astype(np.int64)
        values, exact = np.unique(xs[pos]), False
    le = np.searchsorted(xs, values, side="right")
    eq = le - np.searchsorted(xs, values, side="left")
    decile_pos = np.floor(np.arange(1, psi_bins) / psi_bins * (n - 1)).astype(np.int64)
    edges = np.searchsorted(values, np.unique(xs[decile_pos]))
    return NumericProfile(
        name=name,
        n=int(n),
        n_missing=int(n_rows - n),
        mean=float(xs.mean()),
        std=float(xs.std()),
        values=values.tolist(),
        le=le.tolist(),
        eq=eq.tolist(),
        psi_edges=edges.tolist(),
        exact=exact,
    )


def _label(v: Any) -> str:
    """One text label per category value: NaN/None -> __missing__, 2.0 -> '2', else str()."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return MISSING
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _category_counts(s: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value, count in s.value_counts(dropna=False, sort=False).items():
        label = _label(value)
        counts[label] = counts.get(label, 0) + int(count)
    return counts


def _categorical_profile(name: str, s: pd.Series, max_categories: int) -> CategoricalProfile:
    counts = sorted(_category_counts(s).items(), key=lambda kv: (-kv[1], kv[0]))
    kept, rest = counts[:max_categories], counts[max_categories:]
    return CategoricalProfile(
        name=name,
        n=int(len(s)),
        categories=[k for k, _ in kept],
        counts=[c for _, c in kept],
        other=sum(c for _, c in rest),
        truncated=bool(rest),
    )


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class DriftThresholds:
    """The decision rule of ``detect`` (see the module docstring for the reasoning)."""

    fdr_q: float = 0.05
    ks_min: float = 0.1
    psi_min: float = 0.2
    js_min: float = 0.1
    drift_share: float = 0.2
    min_rows: int = 200

    def __post_init__(self) -> None:
        for name in ("fdr_q", "ks_min", "js_min", "drift_share"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if not isinstance(self.psi_min, int | float) or self.psi_min <= 0:
            raise ValueError(f"psi_min must be > 0, got {self.psi_min!r}")
        if not isinstance(self.min_rows, int) or self.min_rows < 1:
            raise ValueError(f"min_rows must be an integer >= 1, got {self.min_rows!r}")


@dataclass
class FeatureDrift:
    """Statistics and decision for one feature (or the prediction score)."""

    name: str
    kind: Literal["numeric", "categorical", "score"]
    status: Status
    n_reference: int
    n_current: int
    test: Literal["ks", "chi2"]
    statistic: float | None = None  # KS D, or chi-square
    p_value: float | None = None
    p_adjusted: float | None = None  # Benjamini-Hochberg adjusted p-value
    significant: bool = False
    psi: float | None = None
    js: float | None = None  # categorical: Jensen-Shannon distance
    wasserstein_norm: float | None = None  # numeric: W1 / reference std (None if the std is 0)
    effects_over: list[str] = field(default_factory=list)  # e.g. ["ks>=0.1", "psi>=0.2"]
    missing_share_reference: float = 0.0
    missing_share_current: float = 0.0
    unseen: dict[str, int] = field(default_factory=dict)  # categorical: unseen values (top 20) -> rows
    unseen_share: float = 0.0
    weight: float = 1.0
    reason: str = ""
    plot: dict[str, Any] | None = None  # what the HTML report draws: labels/edges and two proportions

    @property
    def drifted(self) -> bool:
        return self.status == "drift"


@dataclass
class DriftResult:
    """Outcome of one comparison; ``str()`` reads as a sentence."""

    status: Status
    n_reference: int
    n_current: int
    drifted_share: float  # weighted share of drifted features among those tested
    thresholds: DriftThresholds
    features: list[FeatureDrift]
    score: FeatureDrift | None = None
    weighted: bool = False
    message: str = ""
    seconds: float = 0.0

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def is_drift(self) -> bool:
        return self.status == "drift"

    def to_dict(self, plots: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["drifted_features"] = self.drifted_features
        if not plots:
            for f in [*d["features"], *([d["score"]] if d["score"] else [])]:
                f.pop("plot", None)
        return d

    def to_json(self, plots: bool = False) -> str:
        return json.dumps(self.to_dict(plots), indent=2, allow_nan=False, default=str)

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- statistics


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    import numpy as np

    r = np.maximum(ref, PSI_FLOOR)
    c = np.maximum(cur, PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    import numpy as np

    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max(0.5 * (kl_p + kl_q), 0.0)))


def _ks_pvalue(d: float, n_ref: int, n_cur: int) -> float:
    if d <= 0:
        return 1.0
    en = n_ref * n_cur / (n_ref + n_cur)
    if en <= KS_EXACT_MAX_N:
        from scipy import stats

        return float(min(1.0, max(0.0, stats.kstwo.sf(d, max(1, round(en))))))
    from scipy import special  # kolmogorov(x) is scipy.stats.kstwobign.sf(x), without importing scipy.stats

    return float(min(1.0, max(0.0, special.kolmogorov(d * math.sqrt(en)))))


def _bh_adjust(p: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``p_adj <= q`` is the BH procedure at level q)."""
    import numpy as np

    if not p:
        return []
    arr = np.asarray(p, dtype="float64")
    m = len(arr)
    order = np.argsort(arr)
    scaled = arr[order] * m / np.arange(1, m + 1)
    adj = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def _ref_cdf_at(prof: NumericProfile, v: np.ndarray, le: np.ndarray, eq: np.ndarray, pts: np.ndarray):
    """Reference ECDF at arbitrary points, linear between sketch points (display only)."""
    import numpy as np

    j = np.searchsorted(v, pts, side="right") - 1
    out = np.empty(len(pts))
    below, above = j < 0, j >= len(v) - 1
    out[below] = 0.0
    out[above] = 1.0
    mid = ~(below | above)
    jm = j[mid]
    lo_f = le[jm]
    hi_f = le[jm + 1] - eq[jm + 1]
    frac = (pts[mid] - v[jm]) / (v[jm + 1] - v[jm])
    out[mid] = (lo_f + frac * (hi_f - lo_f)) / prof.n
    return out


def _numeric_stats(prof: NumericProfile, x: np.ndarray, n_rows_cur: int, kind: str) -> FeatureDrift:
    import numpy as np

    n_cur = len(x)
    fd = FeatureDrift(
        name=prof.name,
        kind=kind,  # type: ignore[arg-type]
        status="no_drift",
        n_reference=prof.n,
        n_current=n_cur,
        test="ks",
        missing_share_reference=prof.n_missing / max(prof.n + prof.n_missing, 1),
        missing_share_current=(n_rows_cur - n_cur) / n_rows_cur if n_rows_cur else 0.0,
    )
    if prof.n == 0 or n_cur == 0:
        return fd
    v = np.asarray(prof.values, dtype="float64")
    le_r = np.asarray(prof.le, dtype="float64")
    eq_r = np.asarray(prof.eq, dtype="float64")
    xs = np.sort(x)
    le_c = np.searchsorted(xs, v, side="right").astype("float64")
    lt_c = np.searchsorted(xs, v, side="left").astype("float64")
    n_r = float(prof.n)
    # KS at each sketch point, right limit (<=) and left limit (<)
    d_right = np.abs(le_r / n_r - le_c / n_cur)
    d_left = np.abs((le_r - eq_r) / n_r - lt_c / n_cur)
    d = float(max(d_right.max(), d_left.max()))
    fd.statistic = d
    fd.p_value = _ks_pvalue(d, prof.n, n_cur)
    # PSI on the reference decile bins
    e = np.asarray(prof.psi_edges, dtype=np.int64)
    ref_bins = np.diff(np.concatenate(([0.0], le_r[e], [n_r]))) / n_r
    cur_bins = np.diff(np.concatenate(([0.0], le_c[e], [float(n_cur)]))) / n_cur
    fd.psi = _psi(ref_bins, cur_bins)
    # Wasserstein-1 on the sketch grid plus the current tails outside the reference range, / std
    w = float(np.sum(np.abs(le_r[:-1] / n_r - le_c[:-1] / n_cur) * np.diff(v)))
    k_lo, k_hi = int(lt_c[0]), int(le_c[-1])
    if k_lo:
        w += float(v[0] * k_lo - xs[:k_lo].sum()) / n_cur
    if k_hi < n_cur:
        w += float(xs[k_hi:].sum() - v[-1] * (n_cur - k_hi)) / n_cur
    std = prof.std or 0.0
    fd.wasserstein_norm = w / std if std > 0 else None  # undefined for a constant reference
    fd.plot = _numeric_plot(prof, v, le_r, eq_r, xs, le_c, lt_c)
    return fd


def _numeric_plot(prof, v, le_r, eq_r, xs, le_c, lt_c) -> dict[str, Any]:
    import numpy as np

    n_r, n_c = float(prof.n), float(len(xs))
    if prof.exact and len(v) <= _DISPLAY_BINS:
        cur_eq = le_c - lt_c
        other = max(0.0, n_c - cur_eq.sum())
        labels = [f"{val:g}" for val in v]
        ref = (eq_r / n_r).tolist()
        cur = (cur_eq / n_c).tolist()
        if other:
            labels.append("other values")
            ref.append(0.0)
            cur.append(other / n_c)
        return {"type": "bars", "labels": labels, "reference": ref, "current": cur}
    # equal-width bins over the central 99 % of both distributions; the end bins take the tails
    k = len(v) - 1
    ref_lo, ref_hi = (
        v[int(np.searchsorted(le_r / n_r, 0.005))],
        v[min(k, int(np.searchsorted(le_r / n_r, 0.995)))],
    )
    cur_lo, cur_hi = xs[int(0.005 * (n_c - 1))], xs[int(0.995 * (n_c - 1))]
    lo, hi = float(min(ref_lo, cur_lo)), float(max(ref_hi, cur_hi))
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, _DISPLAY_BINS + 1)
    inner = edges[1:-1]
    f_ref = np.concatenate(([0.0], _ref_cdf_at(prof, v, le_r, eq_r, inner), [1.0]))
    f_cur = np.concatenate(([0.0], np.searchsorted(xs, inner, side="right") / n_c, [1.0]))
    return {
        "type": "hist",
        "edges": edges.tolist(),
        "reference": np.clip(np.diff(f_ref), 0.0, None).tolist(),
        "current": np.diff(f_cur).tolist(),
    }


def _categorical_stats(prof: CategoricalProfile, s: pd.Series) -> FeatureDrift:
    import numpy as np
    from scipy import special

    counts = _category_counts(s)
    n_cur = int(len(s))
    index = {c: i for i, c in enumerate(prof.categories)}
    k = len(prof.categories)
    cur = np.zeros(k + 2)  # categories, __other__, __unseen__
    unseen: dict[str, int] = {}
    for label, c in counts.items():
        i = index.get(label)
        if i is not None:
            cur[i] += c
        elif prof.truncated:
            cur[k] += c
        else:
            cur[k + 1] += c
            unseen[label] = c
    ref = np.asarray([*prof.counts, prof.other, 0], dtype="float64")
    miss_ref = ref[index[MISSING]] / prof.n if MISSING in index and prof.n else 0.0
    fd = FeatureDrift(
        name=prof.name,
        kind="categorical",
        status="no_drift",
        n_reference=prof.n,
        n_current=n_cur,
        test="chi2",
        missing_share_reference=float(miss_ref),
        missing_share_current=counts.get(MISSING, 0) / n_cur if n_cur else 0.0,
        unseen=dict(sorted(unseen.items(), key=lambda kv: -kv[1])[:_MAX_UNSEEN_NAMED]),
        unseen_share=float(cur[k + 1] / n_cur) if n_cur else 0.0,
    )
    if prof.n == 0 or n_cur == 0:
        return fd
    used = (ref + cur) > 0
    r, c = ref[used], cur[used]
    n_r, n_c = r.sum(), c.sum()
    total = r + c
    exp_r, exp_c = total * n_r / (n_r + n_c), total * n_c / (n_r + n_c)
    chi2 = float(np.sum((r - exp_r) ** 2 / exp_r) + np.sum((c - exp_c) ** 2 / exp_c))
    dof = int(used.sum()) - 1
    fd.statistic = chi2
    fd.p_value = float(special.chdtrc(dof, chi2)) if dof > 0 else 1.0  # = scipy.stats.chi2.sf(chi2, dof)
    p, q = r / n_r, c / n_c
    fd.psi = _psi(p, q)
    fd.js = _js_distance(p, q)
    labels = [*prof.categories, OTHER, UNSEEN]
    shown = [i for i in range(k + 2) if used[i]]
    shown = sorted(shown, key=lambda i: -(ref[i] / n_r + cur[i] / n_c))[:_DISPLAY_BINS]
    fd.plot = {
        "type": "bars",
        "labels": [labels[i] for i in shown],
        "reference": [float(ref[i] / n_r) for i in shown],
        "current": [float(cur[i] / n_c) for i in shown],
    }
    return fd


# --------------------------------------------------------------------------- detection


def detect(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    *,
    score: str | Any | None = None,
    thresholds: DriftThresholds | None = None,
    feature_importance: dict[str, float] | None = None,
) -> DriftResult:
    """Compare ``current`` with ``profile``: per-feature tests, FP control, effect sizes, dataset decision.

    ``score``: the current prediction scores (a column name or an array), compared with the profile's
    score distribution. ``feature_importance`` overrides the profile's weights. Raises
    ``DriftInputError`` naming the column when the frame lacks a feature or a numeric feature is not
    numeric.
    """
    t0 = time.perf_counter()
    th = thresholds or DriftThresholds()
    numeric, categorical = list(profile.numeric), list(profile.categorical)
    _check_frame(current, numeric, categorical, what="current data")
    if score is not None and profile.score is None:
        raise DriftInputError("a current score was given but the reference profile has no score distribution")
    importance = _check_importance(
        feature_importance if feature_importance is not None else profile.feature_importance,
        numeric + categorical,
    )
    n_cur = len(current)
    if n_cur < th.min_rows or profile.n_rows < th.min_rows:
        # still check the numeric columns' types, so bad input is reported as such
        for c in numeric:
            _numeric_values(current.head(1000), c)
        features = [
            FeatureDrift(
                name=c,
                kind="numeric" if c in profile.numeric else "categorical",
                status="insufficient_data",
                n_reference=profile.n_rows,
                n_current=n_cur,
                test="ks" if c in profile.numeric else "chi2",
                reason=f"fewer than {th.min_rows} rows",
            )
            for c in numeric + categorical
        ]
        msg = (
            f"insufficient data: {n_cur} current rows and {profile.n_rows} reference rows; "
            f"at least {th.min_rows} of each are needed (no drift decision)"
        )
        return DriftResult(
            "insufficient_data", profile.n_rows, n_cur, 0.0, th, features, None, False, msg,
            time.perf_counter() - t0,
        )  # fmt: skip

    features: list[FeatureDrift] = []
    for c in numeric:
        features.append(_numeric_stats(profile.numeric[c], _numeric_values(current, c), n_cur, "numeric"))
    for c in categorical:
        features.append(_categorical_stats(profile.categorical[c], current[c]))
    score_fd = None
    if score is not None and profile.score is not None:
        _, values = _score_values(current, score)
        score_fd = _numeric_stats(profile.score, values, n_cur, "score")

    family = [*features, *([score_fd] if score_fd else [])]
    tested = []
    for fd in family:
        if min(fd.n_reference, fd.n_current) < th.min_rows or fd.p_value is None:
            fd.status = "insufficient_data"
            fd.reason = (
                f"{fd.n_current} current / {fd.n_reference} reference non-missing values, "
                f"fewer than {th.min_rows}"
            )
        else:
            tested.append(fd)
    for fd, p_adj in zip(tested, _bh_adjust([fd.p_value for fd in tested]), strict=True):
        fd.p_adjusted = p_adj
        fd.significant = p_adj <= th.fdr_q
        over = []
        if fd.test == "ks" and fd.statistic is not None and fd.statistic >= th.ks_min:
            over.append(f"ks>={th.ks_min:g}")
        if fd.test == "chi2" and fd.js is not None and fd.js >= th.js_min:
            over.append(f"js>={th.js_min:g}")
        if fd.psi is not None and fd.psi >= th.psi_min:
            over.append(f"psi>={th.psi_min:g}")
        fd.effects_over = over
        if fd.significant and over:
            fd.status = "drift"
            fd.reason = f"significant after BH (adjusted p={p_adj:.2g} <= {th.fdr_q:g}) and {', '.join(over)}"
        elif fd.significant:
            fd.reason = f"significant (adjusted p={p_adj:.2g}) but every effect size is under its threshold"
        else:
            fd.reason = f"not significant after BH (adjusted p={p_adj:.2g} > {th.fdr_q:g})"
        if fd.unseen:
            fd.reason += f"; unseen values: {', '.join(list(fd.unseen)[:5])}"

    tested_features = [fd for fd in features if fd.status != "insufficient_data"]
    weights = {fd.name: (importance or {}).get(fd.name, 0.0) for fd in tested_features}
    weighted = bool(importance) and sum(weights.values()) > 0
    if not weighted:
        weights = dict.fromkeys(weights, 1.0)
    total = sum(weights.values())
    for fd in features:
        fd.weight = weights.get(fd.name, 0.0) / total if total else 0.0
    share = sum(fd.weight for fd in tested_features if fd.drifted)
    drifted = [fd.name for fd in features if fd.drifted]
    score_drift = score_fd is not None and score_fd.drifted
    if not tested_features and not (score_fd and score_fd in tested):
        status: Status = "insufficient_data"
        msg = f"insufficient data: no feature has {th.min_rows} non-missing values on both sides"
    elif share >= th.drift_share or score_drift:
        status = "drift"
        w = "weighted " if weighted else ""
        why = [f"{w}share of drifted features {share:.0%} {'>=' if share >= th.drift_share else '<'} "
               f"{th.drift_share:.0%}"]  # fmt: skip
        if score_drift:
            why.append("the prediction score drifted")
        msg = (
            f"DRIFT: {len(drifted)} of {len(tested_features)} features drifted "
            f"({', '.join(drifted) or 'none'}); {'; '.join(why)}"
        )
    else:
        status = "no_drift"
        msg = (
            f"no drift: {len(drifted)} of {len(tested_features)} features drifted"
            f"{' (' + ', '.join(drifted) + ')' if drifted else ''}, "
            f"{'weighted ' if weighted else ''}share {share:.0%} < {th.drift_share:.0%}"
        )
    return DriftResult(
        status=status,
        n_reference=profile.n_rows,
        n_current=n_cur,
        drifted_share=float(share),
        thresholds=th,
        features=features,
        score=score_fd,
        weighted=weighted,
        message=msg,
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- files


def read_frame(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file (by extension), only ``columns`` when given; missing ones are named.

    Columns stay Arrow-backed (``dtype_backend="pyarrow"``): no second copy of the data in pandas
    blocks, which roughly halves the peak memory of reading a large batch.
    """
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        raise DriftInputError(f"{path.name}: expected a .csv or .parquet file")
    if not path.is_file():
        raise DriftInputError(f"data file not found: {path}")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            _require(path, names, columns)
            return pd.read_parquet(path, columns=columns, dtype_backend="pyarrow")
        header = pd.read_csv(path, nrows=0).columns.tolist()
        _require(path, header, columns)
        return pd.read_csv(path, usecols=columns, dtype_backend="pyarrow")
    except DriftInputError:
        raise
    except Exception as exc:  # parser errors of pandas/pyarrow: name the file
        raise DriftInputError(f"cannot read {path}: {exc}") from exc


def _require(path: Path, have: list[str], want: list[str] | None) -> None:
    missing = [c for c in want or [] if c not in have]
    if missing:
        raise DriftInputError(f"{path.name} lacks column(s) {missing}")
