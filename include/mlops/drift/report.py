"""One self-contained HTML file for a ``DriftResult``: verdict, method, a table of every feature, and
for each drifted feature (and the score) a chart of reference vs current drawn as inline SVG.

No plotting library: numeric features get a histogram overlay (proportion of rows per equal-width bin
over the central 99 % of both distributions, end bins holding the tails; one bar per value for a
feature with few distinct values), categorical features grouped bars per category (``__unseen__`` holds
values the reference never had).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.drift.detect import DriftResult
    from mlops.drift.stats import FeatureDrift

_REF, _CUR = "#7f8c8d", "#d35400"
_W, _H, _PAD_L, _PAD_B, _PAD_T = 560, 230, 48, 58, 12

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right} th{background:#f4f4f4}
td.l,th.l{text-align:left} tr.drift td{background:#fdecea} tr.insufficient_data td{color:#888}
.verdict{font-size:1.1em;padding:8px 12px;border-radius:4px;display:inline-block}
.v-drift{background:#fdecea;border:1px solid #e74c3c} .v-no_drift{background:#eafaf1;border:1px solid #27ae60}
.v-insufficient_data{background:#f4f4f4;border:1px solid #999}
.charts{display:flex;flex-wrap:wrap;gap:18px} .chart{border:1px solid #eee;padding:6px;max-width:580px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
small{color:#666}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if v != 0 and (abs(v) < 10**-digits or abs(v) >= 1e6):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return escape(str(v))


def _svg_bars(labels: list[str], ref: list[float], cur: list[float], title: str) -> str:
    """Grouped bars (reference, current) per label."""
    n = max(len(labels), 1)
    plot_w, plot_h = _W - _PAD_L - 10, _H - _PAD_B - _PAD_T
    top = max([*ref, *cur, 1e-12]) * 1.1
    slot = plot_w / n
    bar = max(slot * 0.38, 1.0)
    parts = [_axes(plot_w, plot_h, top)]
    for i, (lab, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        x0 = _PAD_L + i * slot + slot * 0.1
        for k, (val, color) in enumerate(((r, _REF), (c, _CUR))):
            h = plot_h * val / top
            parts.append(
                f'<rect x="{x0 + k * bar:.1f}" y="{_PAD_T + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{escape(lab)}: '
                f"{'reference' if k == 0 else 'current'} {val:.2%}</title></rect>"
            )
        lx, ly = _PAD_L + (i + 0.5) * slot, _PAD_T + plot_h + 8
        short = lab if len(lab) <= 16 else lab[:15] + "…"
        parts.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" text-anchor="end" '
            f'transform="rotate(-35 {lx:.1f} {ly:.1f})">{escape(short)}</text>'
        )
    return _frame(title, "".join(parts))


def _svg_hist(edges: list[float], ref: list[float], cur: list[float], title: str) -> str:
    """Reference as filled bars, current as an outlined step overlay, over the same bins."""
    plot_w, plot_h = _W - _PAD_L - 10, _H - _PAD_B - _PAD_T
    top = max([*ref, *cur, 1e-12]) * 1.1
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return _PAD_L + plot_w * (v - lo) / span

    def y(v: float) -> float:
        return _PAD_T + plot_h - plot_h * v / top

    parts = [_axes(plot_w, plot_h, top)]
    for i, r in enumerate(ref):
        parts.append(
            f'<rect x="{x(edges[i]):.1f}" y="{y(r):.1f}" width="{max(x(edges[i + 1]) - x(edges[i]), 0.5):.1f}" '
            f'height="{_PAD_T + plot_h - y(r):.1f}" fill="{_REF}" fill-opacity="0.55">'
            f"<title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): reference {r:.2%}, current {cur[i]:.2%}</title></rect>"
        )
    pts = [f"{x(lo):.1f},{y(0):.1f}"]
    for i, c in enumerate(cur):
        pts += [f"{x(edges[i]):.1f},{y(c):.1f}", f"{x(edges[i + 1]):.1f},{y(c):.1f}"]
    pts.append(f"{x(hi):.1f},{y(0):.1f}")
    parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{_CUR}" stroke-width="2"/>')
    for v, anchor in ((lo, "start"), ((lo + hi) / 2, "middle"), (hi, "end")):
        parts.append(
            f'<text x="{x(v):.1f}" y="{_PAD_T + plot_h + 14}" font-size="10" text-anchor="{anchor}">{v:.4g}</text>'
        )
    return _frame(title, "".join(parts))


def _axes(plot_w: float, plot_h: float, top: float) -> str:
    y0 = _PAD_T + plot_h
    return (
        f'<line x1="{_PAD_L}" y1="{y0}" x2="{_PAD_L + plot_w}" y2="{y0}" stroke="#444"/>'
        f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{y0}" stroke="#444"/>'
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + 8}" font-size="10" text-anchor="end">{top / 1.1:.0%}</text>'
        f'<text x="{_PAD_L - 4}" y="{y0}" font-size="10" text-anchor="end">0</text>'
    )


def _frame(title: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{escape(title)}">{body}</svg>'
    )


def feature_chart(fd: FeatureDrift) -> str:
    """The SVG of one feature (empty string when the result holds no plot data for it)."""
    plot = fd.plot
    if not plot:
        return ""
    title = f"{fd.name}: reference vs current"
    if plot["type"] == "hist":
        return _svg_hist(plot["edges"], plot["reference"], plot["current"], title)
    return _svg_bars(plot["labels"], plot["reference"], plot["current"], title)


def render_html(result: DriftResult, title: str = "Drift report") -> str:
    """The report as one self-contained HTML page: verdict, method, every feature, charts of the drifted."""
    th = result.thresholds
    rows = []
    for fd in [*result.features, *([result.score] if result.score else [])]:
        unseen = ", ".join(f"{escape(k)} ({v})" for k, v in list(fd.unseen.items())[:5])
        rows.append(
            f'<tr class="{fd.status}"><td class="l">{escape(fd.name)}</td><td class="l">{fd.kind}</td>'
            f'<td class="l"><b>{fd.status}</b></td><td>{fd.n_current}</td><td class="l">{fd.test}</td>'
            f"<td>{_fmt(fd.statistic, 4)}</td><td>{_fmt(fd.p_value)}</td><td>{_fmt(fd.p_adjusted)}</td>"
            f"<td>{_fmt(fd.psi)}</td><td>{_fmt(fd.js)}</td><td>{_fmt(fd.wasserstein_norm)}</td>"
            f"<td>{_fmt(fd.missing_share_reference)}</td><td>{_fmt(fd.missing_share_current)}</td>"
            f'<td>{_fmt(fd.weight)}</td><td class="l">{unseen}</td><td class="l">{escape(fd.reason)}</td></tr>'
        )
    # Features and the prediction score are counted apart, as in ``result.message`` ("6 of 20 features
    # drifted ...; the prediction score drifted"): the score is never counted as a feature.
    drifted = [fd for fd in result.features if fd.drifted]
    tested = sum(fd.status != "insufficient_data" for fd in result.features)
    score = result.score
    charts = "".join(_chart_box(fd) for fd in drifted)
    legend = (
        f'<p class="legend"><span style="background:{_REF}"></span>reference (training profile)'
        f'<span style="background:{_CUR}"></span>current</p>'
    )
    method = (
        f"Numeric features and the score: two-sample Kolmogorov-Smirnov (D on the reference ECDF sketch, "
        f"p-value from the effective sample size) and PSI on reference deciles; categorical: chi-square, PSI and "
        f"Jensen-Shannon distance with an unseen-category bucket. A feature drifts when it is significant after "
        f"Benjamini-Hochberg at q={th.fdr_q:g} across all tested features AND an effect size is over its "
        f"threshold (KS D&ge;{th.ks_min:g} or PSI&ge;{th.psi_min:g}; categorical JS&ge;{th.js_min:g} or "
        f"PSI&ge;{th.psi_min:g}). Dataset drift: {'importance-weighted ' if result.weighted else ''}share of "
        f"drifted features &ge; {th.drift_share:.0%}, or the score drifted. Fewer than {th.min_rows} rows: "
        f"insufficient data, never drift."
    )
    head = (
        "<tr>"
        + "".join(
            f'<th class="{"l" if h in ("feature", "kind", "status", "test", "unseen", "reason") else ""}">{h}</th>'
            for h in (
                "feature", "kind", "status", "n current", "test", "statistic", "p", "p (BH)", "PSI", "JS",
                "W/std", "missing ref", "missing cur", "weight", "unseen", "reason",
            )
        )
        + "</tr>"
    )  # fmt: skip
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="verdict v-{result.status}">{escape(result.message)}</p>'
        f"<p><small>{result.n_reference:,} reference rows, {result.n_current:,} current rows; "
        f"computed in {result.seconds:.2f} s.</small></p><p><small>{method}</small></p>"
        f'<h2 id="drifted-features">Drifted features: {len(drifted)} of {tested} tested</h2>'
        f"{legend if drifted else '<p>none</p>'}"
        f'<div class="charts">{charts}</div>{_score_section(score, legend)}'
        f"<h2>All features{' and the prediction score' if score else ''}</h2>"
        f"<table>{head}{''.join(rows)}</table></body></html>"
    )


def _chart_box(fd: FeatureDrift) -> str:
    return (
        f'<div class="chart" id="chart-{escape(fd.name)}"><b>{escape(fd.name)}</b> <small>{escape(fd.reason)}'
        f"</small><br>{feature_chart(fd)}</div>"
    )


def _score_section(score: FeatureDrift | None, legend: str) -> str:
    """The prediction score's own heading (not one of the features): its status, and its chart if drifted."""
    if score is None:
        return ""
    status = {"drift": "drifted", "no_drift": "no drift"}.get(score.status, score.status.replace("_", " "))
    body = f'{legend}<div class="charts">{_chart_box(score)}</div>' if score.drifted else ""
    return (
        f'<h2 id="prediction-score">Prediction score ({escape(score.name)}): {status}</h2>'
        f"<p><small>{escape(score.reason)}</small></p>{body}"
    )


def write_report(result: DriftResult, path: str | Path, title: str = "Drift report") -> Path:
    """Write the report to ``path`` (folders created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title), encoding="utf-8")
    return path
