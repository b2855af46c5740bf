"""Drift detection: compare a current batch with a reference profile and decide, per feature and overall.

:func:`detect` runs the per-feature statistics of :mod:`mlops.drift.stats` on the columns of a
:class:`~mlops.drift.profile.ReferenceProfile` (pure numpy/scipy/pandas, no MLflow, no Airflow) and
returns a :class:`DriftResult`. ``mlops drift`` reads batches with :func:`mlops.data.io.read_batch` (Arrow-backed).

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
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlops.drift.profile import (
    DriftInputError,
    ReferenceProfile,
    check_frame,
    check_importance,
    numeric_values,
    score_values,
)
from mlops.drift.stats import FeatureDrift, Status, bh_adjust, categorical_stats, numeric_stats

if TYPE_CHECKING:
    import pandas as pd


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
        """Names of the features that drifted."""
        return [f.name for f in self.features if f.drifted]

    @property
    def is_drift(self) -> bool:
        """Whether the comparison concluded drift."""
        return self.status == "drift"

    def to_dict(self, plots: bool = False) -> dict[str, Any]:
        """JSON-serialisable form with ``drifted_features``; the plots only when ``plots``."""
        d = asdict(self)
        d["drifted_features"] = self.drifted_features
        if not plots:
            for f in [*d["features"], *([d["score"]] if d["score"] else [])]:
                f.pop("plot", None)
        return d

    def to_json(self, plots: bool = False) -> str:
        """The :meth:`to_dict` form as indented JSON."""
        return json.dumps(self.to_dict(plots), indent=2, allow_nan=False, default=str)

    def __str__(self) -> str:
        return self.message


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
    # Long by design: the detection steps in order (schema, per-feature tests, multiple-testing correction,
    # decision, summary), each short and using the previous step's values.
    t0 = time.perf_counter()
    th = thresholds or DriftThresholds()
    numeric, categorical = list(profile.numeric), list(profile.categorical)
    check_frame(current, numeric, categorical, what="current data")
    if score is not None and profile.score is None:
        raise DriftInputError("a current score was given but the reference profile has no score distribution")
    importance = check_importance(
        feature_importance if feature_importance is not None else profile.feature_importance,
        numeric + categorical,
    )
    n_cur = len(current)
    if n_cur < th.min_rows or profile.n_rows < th.min_rows:
        # still check the numeric columns' types, so bad input is reported as such
        for c in numeric:
            numeric_values(current.head(1000), c)
        features: list[FeatureDrift] = [
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

    features = []
    for c in numeric:
        features.append(numeric_stats(profile.numeric[c], numeric_values(current, c), n_cur, "numeric"))
    for c in categorical:
        features.append(categorical_stats(profile.categorical[c], current[c]))
    score_fd = None
    if score is not None and profile.score is not None:
        _, values = score_values(current, score)
        score_fd = numeric_stats(profile.score, values, n_cur, "score")

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
    for fd, p_adj in zip(
        tested, bh_adjust([fd.p_value for fd in tested if fd.p_value is not None]), strict=True
    ):
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
