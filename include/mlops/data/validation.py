"""Batch validation with Great Expectations 1.x: the suite comes from the model config.

Pure domain code (never imports airflow). :func:`validate_batch` reads one landed batch, runs the
suite built by :func:`build_suite` in an *ephemeral* GX context (in-memory stores, nothing written to
the repo), optionally renders GX Data Docs into a folder, and returns a :class:`ValidationReport` that
names every failing expectation with the number of rows breaking it. It never raises on bad data: an
unreadable file becomes a failed report with ``read_error`` set. It never modifies or moves the file;
quarantining is the caller's job.

What the suite checks, all derived from ``cfg`` (``features``, ``id_column``, ``target``, ``validation``):

* schema: exactly the columns id + features + target; numeric features have a numeric dtype,
  categorical features a string dtype;
* ``validation.columns[col]``: ``min``/``max`` range, allowed ``values``, ``max_null_fraction``
  (falling back to ``validation.max_null_fraction``) for every feature;
* ``row_count_min`` <= rows <= ``row_count_max``;
* the id column is non-null and unique;
* the target exists, is non-null, takes values in {0, 1} and its mean lies in
  [``target_rate_min``, ``target_rate_max``].

GX only reports *that* an expectation failed and a sample of offending values; the report's one-line
details (exact counts of unseen categories, non-numeric cells, duplicated ids, observed ranges) are
computed from the same in-memory frame, and only for failed expectations.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite, ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from mlops.config.model import ModelConfig

log = logging.getLogger(__name__)

#: dtype names GX accepts for a numeric feature (numpy dtypes and pandas' nullable extension dtypes).
NUMERIC_TYPES = (
    *(f"{k}{bits}" for k in ("int", "uint") for bits in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"{k}{bits}Dtype" for k in ("Int", "UInt") for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
)
#: GX type name of a text column: matches pandas' ``str``/``string`` dtypes, and ``object`` columns
#: whose non-null values are all ``str``.
TEXT_TYPE = "str"
#: Pseudo expectation recorded when the file cannot be read as a table at all.
READ_EXPECTATION = "file_is_readable_table"

_RULE = "mlops_rule"  # key in each expectation's meta: which config rule produced it
_DOCS_SITE = "mlops_batch_validation"
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
_EXAMPLES = 3


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation a batch broke."""

    expectation: str  # GX expectation type, e.g. "expect_column_values_to_be_between"
    column: str | None
    unexpected_count: int | None  # rows breaking it (None for table-level expectations)
    detail: str  # one readable sentence

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (all fields)."""
        return {
            "expectation": self.expectation,
            "column": self.column,
            "unexpected_count": self.unexpected_count,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of validating one batch file."""

    batch: str  # file name
    success: bool
    row_count: int | None  # None when the file could not be read
    evaluated: int  # expectations evaluated
    failures: tuple[FailedExpectation, ...]
    docs_path: str | None  # index.html of the Data Docs built for this validation, if any
    read_error: str | None  # set when the file could not be read at all

    def summary(self) -> str:
        """One paragraph naming every failing expectation and how many rows break each."""
        if self.read_error is not None:
            return (
                f"Batch {self.batch} REJECTED, {READ_EXPECTATION} failed: the file could not be read "
                f"as a table: {self.read_error.rstrip('.')}."
            )
        rows = f"{self.row_count} rows" if self.row_count is not None else "unknown row count"
        if self.success:
            return f"Batch {self.batch} passed all {self.evaluated} expectations ({rows})."
        parts = [f"{f.expectation}: {f.detail.rstrip('.')}" for f in self.failures]
        return (
            f"Batch {self.batch} FAILED {len(self.failures)} of {self.evaluated} expectations ({rows}): "
            + "; ".join(parts)
            + "."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (all fields plus the summary)."""
        return {
            "batch": self.batch,
            "success": self.success,
            "row_count": self.row_count,
            "evaluated": self.evaluated,
            "failures": [f.to_dict() for f in self.failures],
            "docs_path": self.docs_path,
            "read_error": self.read_error,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Inverse of :meth:`to_dict` (``summary`` is recomputed, not read)."""
        return cls(
            batch=data["batch"],
            success=data["success"],
            row_count=data["row_count"],
            evaluated=data["evaluated"],
            failures=tuple(FailedExpectation(**f) for f in data["failures"]),
            docs_path=data["docs_path"],
            read_error=data["read_error"],
        )


# --------------------------------------------------------------------------------------------- suite


def build_suite(cfg: ModelConfig) -> ExpectationSuite:
    """The GX expectation suite every batch of ``cfg``'s model must satisfy.

    The suite is not bound to any Data Context (none is needed to build it); :func:`validate_batch`
    adds a fresh one to its ephemeral context.
    """
    gx = _gx()
    gxe = gx.expectations
    v = cfg.validation
    expectations: list[Any] = []

    def add(exp: Any, rule: str) -> None:
        exp.meta = {_RULE: rule}
        expectations.append(exp)

    expected = [cfg.id_column, *cfg.features.all, cfg.target]
    add(gxe.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True), "columns")
    add(
        gxe.ExpectTableRowCountToBeBetween(min_value=v.row_count_min, max_value=v.row_count_max),
        "row_count",
    )

    add(gxe.ExpectColumnValuesToNotBeNull(column=cfg.id_column), "id_not_null")
    add(gxe.ExpectColumnValuesToBeUnique(column=cfg.id_column), "id_unique")

    add(gxe.ExpectColumnToExist(column=cfg.target), "target_exists")
    add(gxe.ExpectColumnValuesToNotBeNull(column=cfg.target), "target_not_null")
    add(gxe.ExpectColumnValuesToBeInSet(column=cfg.target, value_set=[0, 1]), "target_values")
    add(
        gxe.ExpectColumnMeanToBeBetween(
            column=cfg.target, min_value=v.target_rate_min, max_value=v.target_rate_max
        ),
        "target_rate",
    )

    for col in cfg.features.all:
        rule = v.columns.get(col)
        if col in cfg.features.numeric:
            add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=list(NUMERIC_TYPES)), "numeric")
        else:
            add(gxe.ExpectColumnValuesToBeOfType(column=col, type_=TEXT_TYPE), "text")
        max_null = rule.max_null_fraction if rule and rule.max_null_fraction is not None else None
        if max_null is None:
            max_null = v.max_null_fraction
        if max_null < 1.0:
            mostly = round(1.0 - max_null, 12)
            add(gxe.ExpectColumnValuesToNotBeNull(column=col, mostly=mostly), "nulls")
        if rule is None:
            continue
        if rule.min is not None or rule.max is not None:
            add(
                gxe.ExpectColumnValuesToBeBetween(column=col, min_value=rule.min, max_value=rule.max), "range"
            )
        if rule.values is not None:
            add(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(rule.values)), "values")
    # Passing the expectations to the constructor (rather than suite.add_expectation, which looks
    # for the suite in the current Data Context) keeps this usable without any context.
    return gx.ExpectationSuite(name=f"{cfg.name}_batch", expectations=expectations)


# ---------------------------------------------------------------------------------------- validation


def validate_batch(
    path: str | Path, cfg: ModelConfig, docs_dir: str | Path | None = None
) -> ValidationReport:
    """Validate one batch file against ``cfg``'s suite. Never raises on bad data; never touches the file.

    With ``docs_dir``, GX Data Docs (static HTML: this validation and the suite) are built there and
    ``docs_path`` is its ``index.html``.
    """
    from mlops.data.io import BatchReadError, read_batch

    path = Path(path)
    try:
        df = read_batch(path)
    except BatchReadError as exc:
        return _unreadable(path.name, str(exc))
    except Exception as exc:  # read_batch wraps parse errors; anything else is still "cannot read"
        return _unreadable(path.name, f"{path.name}: cannot be read: {type(exc).__name__}: {exc}")

    df = _normalise_empty_columns(df, cfg)
    result, docs_path, order = _run_gx(df, cfg, batch_name=path.name, docs_dir=docs_dir)
    # GX returns results in its own order; report them in suite order (schema first).
    results = sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    failures = tuple(_describe(r, df) for r in results if not r.success)
    return ValidationReport(
        batch=path.name,
        success=bool(result.success) and not failures,
        row_count=len(df),
        evaluated=len(results),
        failures=failures,
        docs_path=docs_path,
        read_error=None,
    )


def _unreadable(name: str, message: str) -> ValidationReport:
    return ValidationReport(
        batch=name,
        success=False,
        row_count=None,
        evaluated=0,
        failures=(FailedExpectation(READ_EXPECTATION, None, None, message),),
        docs_path=None,
        read_error=message,
    )


def _normalise_empty_columns(df: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """Give columns without a single value (all null, or a 0-row batch) the dtype the config expects.

    pandas has nothing to infer a dtype from in such a column (an empty CSV column reads as float64, a
    header-only CSV as strings), so a type failure there would be noise: the real problem is reported
    by the null-rate or row-count expectation. Columns with at least one value are left untouched.
    Works on a copy; the file is never written.
    """
    numeric = {*cfg.features.numeric, cfg.target}
    empty = [c for c in df.columns if c in numeric or c in cfg.features.categorical or c == cfg.id_column]
    empty = [c for c in empty if not df[c].notna().any()]
    if not empty:
        return df
    df = df.copy()
    for col in empty:
        df[col] = df[col].astype("float64" if col in numeric else "object")
    return df


def _run_gx(
    df: pd.DataFrame, cfg: ModelConfig, batch_name: str, docs_dir: str | Path | None
) -> tuple[Any, str | None, dict[str, int]]:
    """Run the suite on ``df`` in a fresh ephemeral context.

    Returns the suite result, the Data Docs index path (or None) and each expectation id's position
    in the suite.
    """
    gx = _gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        sites[_DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    context = gx.get_context(
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            data_docs_sites=sites,
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
        mode="ephemeral",
    )
    batch_definition = (
        context.data_sources.add_pandas(cfg.name)
        .add_dataframe_asset(batch_name)
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    suite = context.suites.add(build_suite(cfg))
    order = {exp.id: i for i, exp in enumerate(suite.expectations)}
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{cfg.name}:{batch_name}", data=batch_definition, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": df},
        result_format=_RESULT_FORMAT,
        run_id=RunIdentifier(run_name=batch_name),
    )  # also stores the result in the context's in-memory store, where the docs builder finds it

    docs_path = None
    if docs_dir is not None:
        try:
            built = context.build_data_docs(site_names=[_DOCS_SITE])
            from mlops.data.report_html import make_site_self_contained

            make_site_self_contained(docs_dir)  # GX pages load CDN assets: none may be needed offline
            index = docs_dir / "index.html"
            docs_path = str(index) if index.is_file() else None
            log.debug("data docs built: %s", built)
        except Exception as exc:  # docs are a convenience: the validation result stands without them
            log.warning("building Data Docs for %s into %s failed: %s", batch_name, docs_dir, exc)
    return result, docs_path, order


def _gx() -> Any:
    """Import great_expectations lazily (heavy) and keep its INFO chatter out of task logs."""
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)
    with warnings.catch_warnings():  # GX 1.x imports the deprecated sre_* modules
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx

    return gx


def _column_of(kwargs: dict) -> str | None:
    col = kwargs.get("column")
    return str(col) if col is not None else None


def _rule_of(config: ExpectationConfiguration) -> str | None:
    return (config.meta or {}).get(_RULE)


def _observed(res: dict) -> str:
    """What GX observed for an expectation no rule-specific sentence covers."""
    observed = res.get("observed_value")
    return f"observed {observed!r}" if observed is not None else "failed"


# ------------------------------------------------------------------------------------------- details


def _describe(r: ExpectationValidationResult, df: pd.DataFrame) -> FailedExpectation:
    """Turn one failed GX result into a FailedExpectation with a readable, specific sentence."""
    # Long by design: one branch per kind of GX expectation, each building its own specific sentence.
    config = r.expectation_config
    assert config is not None, "GX returned a result without the configuration of its expectation"
    kwargs = config.kwargs
    col = _column_of(kwargs)
    rule = _rule_of(config)
    res = r.result or {}
    count = res.get("unexpected_count")
    count = int(count) if count is not None else None

    def failed(detail: str, unexpected: int | None = count) -> FailedExpectation:
        return FailedExpectation(config.type, col, unexpected, detail)

    if rule == "columns":
        mismatch = (res.get("details") or {}).get("mismatched") or {}
        missing, extra = mismatch.get("missing") or [], mismatch.get("unexpected") or []
        bits = []
        if missing:
            bits.append(f"missing {_names(missing)}")
        if extra:
            bits.append(f"unexpected {_names(extra)}")
        why = "; ".join(bits) or _exception_message(r) or "columns differ from the config"
        return FailedExpectation(config.type, None, None, f"columns do not match the config: {why}")
    if rule == "row_count":
        observed = res.get("observed_value", len(df))
        return FailedExpectation(
            config.type,
            None,
            None,
            f"{observed} rows, expected {_bounds(kwargs.get('min_value'), kwargs.get('max_value'))}",
        )

    if rule == "target_exists":
        return failed(f"{col}: the target column is missing from the batch", None)
    if col is None:  # the suite's table-level expectations are handled above: any other, what GX saw
        return failed(f"table: {_observed(res)}")
    if col not in df.columns:
        return failed(f"{col}: not evaluated, the column is missing from the batch", None)
    series = df[col]
    error = _exception_message(r)

    if rule == "numeric":
        return _numeric_type_failure(failed, col, series)
    if rule == "text":
        non_null = int(series.notna().sum())
        unexpected = count if count is not None else non_null
        return failed(
            f"{col}: expected text (a string column), found dtype {series.dtype}"
            + (f"; {unexpected} non-null values are not strings" if unexpected else ""),
            unexpected,
        )
    if error is not None:
        why = error
        if rule in ("range", "target_rate") and not _is_numeric(series):
            why = f"the column is not numeric (dtype {series.dtype})"
        return failed(f"{col}: not evaluated, {why}", None)

    total = int(res.get("element_count") or len(series))
    if rule in ("nulls", "id_not_null", "target_not_null"):
        limit = 1.0 - float(kwargs.get("mostly", 1.0))
        share = f"{100.0 * (count or 0) / total:.1f}%" if total else "n/a"
        allowed = "none allowed" if limit <= 0 else f"at most {100.0 * limit:g}% allowed"
        where = list(res.get("partial_unexpected_index_list") or [])
        at = f"; e.g. at row index {', '.join(str(i) for i in where[:_EXAMPLES])}" if where else ""
        if where == [len(df) - 1]:
            at = f"; only in the last row (index {len(df) - 1})"
        return failed(f"{col}: {count or 0} of {total} rows are null ({share}), {allowed}{at}")
    if rule == "range":
        s = _numeric(series)
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return failed(
            f"{col}: {_rows(count)} outside {_interval(low, high)} "
            f"(observed min {_num(s.min())}, max {_num(s.max())})"
        )
    if rule in ("values", "target_values"):
        value_set = kwargs.get("value_set") or []
        bad = series[series.notna() & ~series.isin(value_set)]
        counts = bad.astype("object").value_counts()
        seen = ", ".join(f"{v!r} ({n})" for v, n in counts.head(5).items())
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        noun = "unseen categor" + ("y" if len(counts) == 1 else "ies")
        if rule == "target_values":
            noun = "target value" + ("" if len(counts) == 1 else "s") + " outside {0, 1}"
        return failed(f"{col}: {_rows(count)} with {noun}: {seen}{more}", count)
    if rule == "id_unique":
        dup_ids = int(series[series.duplicated(keep=False)].nunique())
        example = series[series.duplicated()].head(_EXAMPLES).tolist()
        return failed(
            f"{col}: {_rows(count)} share an id with another row "
            f"({dup_ids} distinct ids duplicated, e.g. {_names(example)})"
        )
    if rule == "target_rate":
        observed = res.get("observed_value")
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if observed is None or (isinstance(observed, float) and math.isnan(observed)):
            return failed(f"{col}: positive rate could not be computed (no non-null target values)", None)
        return failed(f"{col}: positive rate {float(observed):.4f} outside {_interval(low, high)}", None)

    # Any other expectation: fall back on what GX observed.
    return failed(f"{col or 'table'}: {_observed(res)}")


def _numeric_type_failure(failed: Any, col: str, series: pd.Series) -> FailedExpectation:
    import pandas as pd

    coerced = pd.to_numeric(series, errors="coerce")
    bad = series[series.notna() & coerced.isna()]
    examples = list(dict.fromkeys(bad.astype("object").tolist()))[:_EXAMPLES]
    detail = f"{col}: expected a numeric column, found dtype {series.dtype}"
    if len(bad):
        noun = "value is" if len(bad) == 1 else "values are"
        detail += f"; {len(bad)} {noun} not a number, e.g. {_names(examples)}"
    return failed(detail, int(len(bad)) if len(bad) else None)


def _exception_message(r: ExpectationValidationResult) -> str | None:
    """First exception message GX recorded for this expectation (flat or keyed by metric)."""
    info = r.exception_info or {}
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "an exception was raised").strip()
    return None


def _is_numeric(series: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype)


def _numeric(series: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(series, errors="coerce")


def _rows(n: int | None) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def _interval(low: Any, high: Any) -> str:
    return f"[{'-inf' if low is None else _num(low)}, {'+inf' if high is None else _num(high)}]"


def _bounds(low: Any, high: Any) -> str:
    if high is None:
        return f"at least {_num(low)}"
    if low is None:
        return f"at most {_num(high)}"
    return f"between {_num(low)} and {_num(high)}"


def _num(x: Any) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return repr(x)
    if math.isnan(f):
        return "n/a"
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return f"{f:g}"


def _names(items: Any) -> str:
    return "[" + ", ".join(repr(str(i)) for i in items) + "]"
