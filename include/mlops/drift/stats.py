"""The per-feature statistics of drift detection: a reference profile's column vs the current values.

Per feature (current values are sorted once, then the sketch is looked up in them):

* numeric (:func:`numeric_stats`): two-sample Kolmogorov-Smirnov statistic ``D`` evaluated at the
  sketch points (left and right limits, so atoms are exact); it is never larger than the exact ``D``
  and at most ``1 / sketch_size`` smaller. The p-value (:func:`ks_pvalue`) uses the effective size
  ``en = n_ref * n_cur / (n_ref + n_cur)``: scipy's exact ``kstwo(en)`` up to ``en = 10,000``, its
  limit ``kstwobign`` (of ``sqrt(en) * D``, as ``scipy.special.kolmogorov``) above (the two differ by
  less than 0.003 there). Also PSI on the reference decile bins and the Wasserstein-1 distance on the
  sketch grid divided by the reference standard deviation (approximate, informative, not part of the
  decision);
* categorical (:func:`categorical_stats`): chi-square test of homogeneity on the 2 x k table of
  counts, PSI and Jensen-Shannon distance (:func:`js_distance`, natural log, 0..0.83) over the
  categories plus an ``__unseen__`` bucket: current values the reference never had are counted there
  and named in the result (up to 20, with counts);
* PSI (:func:`psi`) uses proportions floored at 1e-4 (so an unseen value with 5 % of the rows alone
  gives PSI ~ 0.3).

:func:`bh_adjust` gives the Benjamini-Hochberg adjusted p-values the decision in
:mod:`mlops.drift.detect` uses. Each result is a :class:`FeatureDrift`, with the data the HTML report
draws (``plot``). numpy and scipy are imported when used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlops.drift.profile import MISSING, OTHER, CategoricalProfile, NumericProfile, category_counts

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

UNSEEN = "__unseen__"
PSI_FLOOR = 1e-4
#: Above this effective size the KS p-value uses the Kolmogorov limit distribution (exact ``kstwo``
#: gets slow: ~0.5 s per call at en = 500,000).
KS_EXACT_MAX_N = 10_000
_DISPLAY_BINS = 30
_MAX_UNSEEN_NAMED = 20

Status = Literal["drift", "no_drift", "insufficient_data"]


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
        """Whether this feature drifted."""
        return self.status == "drift"


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index of two proportion vectors (each floored at :data:`PSI_FLOOR`)."""
    import numpy as np

    r = np.maximum(ref, PSI_FLOOR)
    c = np.maximum(cur, PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance of two proportion vectors (natural log: 0 to sqrt(ln 2) ~ 0.83)."""
    import numpy as np

    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max(0.5 * (kl_p + kl_q), 0.0)))


def ks_pvalue(d: float, n_ref: int, n_cur: int) -> float:
    """p-value of the two-sample KS statistic ``d`` (exact up to :data:`KS_EXACT_MAX_N`, then the limit)."""
    if d <= 0:
        return 1.0
    en = n_ref * n_cur / (n_ref + n_cur)
    if en <= KS_EXACT_MAX_N:
        from scipy import stats

        return float(min(1.0, max(0.0, stats.kstwo.sf(d, max(1, round(en))))))
    from scipy import special  # kolmogorov(x) is scipy.stats.kstwobign.sf(x), without importing scipy.stats

    return float(min(1.0, max(0.0, special.kolmogorov(d * math.sqrt(en)))))


def bh_adjust(p: list[float]) -> list[float]:
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


def numeric_stats(prof: NumericProfile, x: np.ndarray, n_rows_cur: int, kind: str) -> FeatureDrift:
    """KS, PSI and normalized Wasserstein-1 of the finite current values ``x`` vs the profile's sketch."""
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
    fd.p_value = ks_pvalue(d, prof.n, n_cur)
    # PSI on the reference decile bins
    e = np.asarray(prof.psi_edges, dtype=np.int64)
    ref_bins = np.diff(np.concatenate(([0.0], le_r[e], [n_r]))) / n_r
    cur_bins = np.diff(np.concatenate(([0.0], le_c[e], [float(n_cur)]))) / n_cur
    fd.psi = psi(ref_bins, cur_bins)
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


def categorical_stats(prof: CategoricalProfile, s: pd.Series) -> FeatureDrift:
    """Chi-square test, PSI and Jensen-Shannon distance of the current column ``s`` vs the counts."""
    import numpy as np
    from scipy import special

    counts = category_counts(s)
    n_cur = int(len(s))
    index = {c: i for i, c in enumerate(prof.categories)}
    k = len(prof.categories)
    cur = np.zeros(k + 2)  # categories, __other__, __unseen__
    unseen: dict[str, int] = {}
    for label, rows in counts.items():
        i = index.get(label)
        if i is not None:
            cur[i] += rows
        elif prof.truncated:
            cur[k] += rows
        else:
            cur[k + 1] += rows
            unseen[label] = rows
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
    fd.psi = psi(p, q)
    fd.js = js_distance(p, q)
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
