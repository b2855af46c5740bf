"""Reference profiles: what drift detection needs from the training frame, computed once, stored as JSON.

:meth:`ReferenceProfile.from_frame` makes one; ``to_json`` / ``save`` and ``from_json`` / ``load`` keep
it next to the model version (format ``mlops.drift.reference-profile/1``). Per column:

* numeric feature (and the model score, if given): count, missing count, mean, standard deviation, and
  an ECDF sketch: the sorted distinct values found at ``sketch_size + 1`` evenly spaced quantile levels
  (0, 1/500, ..., 1; minimum and maximum included) with the exact number of reference rows ``<=`` and
  ``==`` each of them. A feature with at most ``sketch_size + 1`` distinct values is stored exactly. The
  PSI bins are the reference deciles (distinct values only, so discrete features get fewer bins), a
  subset of the sketch points: one pass over the current data serves every statistic;
* categorical feature: the count of each category (the ``max_categories`` most frequent; the rest
  folded into ``__other__``), missing values as the category ``__missing__``;
* the row count, and optionally feature importances (weights of the dataset-level decision).

Also the column readers the detector shares (:func:`numeric_values`, :func:`category_counts`) and
:class:`DriftInputError`. Pure numpy/pandas, imported when used.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FORMAT = "mlops.drift.reference-profile/1"
OTHER = "__other__"
MISSING = "__missing__"


class DriftInputError(ValueError):
    """The current data (or a profile) cannot be compared: the message names the column and the problem."""


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
        """Every profiled feature: the numeric ones, then the categorical ones."""
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
        check_frame(df, numeric, categorical, what="training frame")
        importance = check_importance(feature_importance, numeric + categorical)
        score_profile = None
        if score is not None:
            name, values = score_values(df, score)
            score_profile = _numeric_profile(name, values, len(df), sketch_size, psi_bins)
        return cls(
            n_rows=len(df),
            numeric={
                c: _numeric_profile(c, numeric_values(df, c), len(df), sketch_size, psi_bins) for c in numeric
            },
            categorical={c: _categorical_profile(c, df[c], max_categories) for c in categorical},
            score=score_profile,
            feature_importance=importance,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    # ----------------------------------------------------------------- serialization

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (all fields)."""
        return asdict(self)

    def to_json(self) -> str:
        """The :meth:`to_dict` form as compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON to ``path`` (its folder created); return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReferenceProfile:
        """Inverse of :meth:`to_dict`; a :class:`DriftInputError` if ``raw`` is not a reference profile."""
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
        """A profile from JSON text; a :class:`DriftInputError` if the text is not one."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DriftInputError(f"reference profile is not valid JSON: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """A profile saved with :meth:`save`; a :class:`DriftInputError` if it is missing or unreadable."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise DriftInputError(f"reference profile not found: {path}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DriftInputError(f"cannot read reference profile {path}: {exc}") from exc
        return cls.from_json(text)


def check_importance(importance: dict[str, float] | None, features: list[str]) -> dict[str, float] | None:
    """``importance`` as floats, checked: only profiled features, finite weights ``>= 0`` (ValueError)."""
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


def check_frame(df: Any, numeric: list[str], categorical: list[str], what: str) -> None:
    """Raise :class:`DriftInputError` unless ``df`` is a DataFrame with every listed column."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DriftInputError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in [*numeric, *categorical] if c not in df.columns]
    if missing:
        raise DriftInputError(f"{what} lacks column(s) {missing} (it has {len(df.columns)} columns)")


def numeric_values(df: pd.DataFrame, col: str) -> np.ndarray:
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


def score_values(df: pd.DataFrame, score: Any) -> tuple[str, np.ndarray]:
    """Name and finite values of the score: a column of ``df`` or an array of one value per row."""
    import numpy as np

    if isinstance(score, str):
        if score not in df.columns:
            raise DriftInputError(f"score column {score!r} is not in the frame")
        return score, numeric_values(df, score)
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


def category_counts(s: pd.Series) -> dict[str, int]:
    """Rows per category label (missing values counted as ``__missing__``)."""
    counts: dict[str, int] = {}
    for value, count in s.value_counts(dropna=False, sort=False).items():
        label = _label(value)
        counts[label] = counts.get(label, 0) + int(count)
    return counts


def _categorical_profile(name: str, s: pd.Series, max_categories: int) -> CategoricalProfile:
    counts = sorted(category_counts(s).items(), key=lambda kv: (-kv[1], kv[0]))
    kept, rest = counts[:max_categories], counts[max_categories:]
    return CategoricalProfile(
        name=name,
        n=int(len(s)),
        categories=[k for k, _ in kept],
        counts=[c for _, c in kept],
        other=sum(c for _, c in rest),
        truncated=bool(rest),
    )
