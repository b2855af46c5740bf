"""Batch validation with Great Expectations (real GX, ephemeral context) on generated, then broken, batches."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.data.io import file_sha256
from mlops.data.validation import (
    READ_EXPECTATION,
    FailedExpectation,
    ValidationReport,
    build_suite,
    validate_batch,
)
from mlops.demo.datagen import generate_churn

ROWS = 1000


@pytest.fixture(scope="module")
def cfg():
    return get_model_config("churn", BUILTIN_MODELS_DIR)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_churn(ROWS, seed=3)


# ------------------------------------------------------------------------------ batch builders
# Each takes (a copy of the good frame, a folder) and writes one batch file, returning its path.


def _csv(df: pd.DataFrame, folder: Path, name: str = "batch.csv") -> Path:
    df.to_csv(folder / name, index=False)
    return folder / name


def _parquet(df: pd.DataFrame, folder: Path, name: str = "batch.parquet") -> Path:
    df.to_parquet(folder / name, index=False)
    return folder / name


def _set(col: str, rows: slice, value) -> Callable[[pd.DataFrame, Path], Path]:
    def build(df: pd.DataFrame, folder: Path) -> Path:
        if isinstance(value, str) and pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].astype(object)
        df.loc[rows, col] = value
        return _csv(df, folder)

    return build


def _bytes(content: bytes, name: str) -> Callable[[pd.DataFrame, Path], Path]:
    def build(df: pd.DataFrame, folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return build


def _duplicated_ids(df: pd.DataFrame, folder: Path) -> Path:
    df.loc[10:14, "customer_id"] = df.loc[0:4, "customer_id"].to_numpy()  # 5 ids used twice
    return _csv(df, folder)


def _truncated_csv(df: pd.DataFrame, folder: Path) -> Path:
    """Cut the file 20 bytes into data row 600, as an interrupted copy would."""
    raw = _csv(df, folder, "full.csv").read_bytes()
    line_starts = [0] + [i + 1 for i, b in enumerate(raw) if b == ord("\n")]
    (folder / "batch.csv").write_bytes(raw[: line_starts[601] + 20])  # line 0 is the header
    (folder / "full.csv").unlink()
    return folder / "batch.csv"


def _truncated_parquet(df: pd.DataFrame, folder: Path) -> Path:
    raw = _parquet(df, folder, "full.parquet").read_bytes()
    (folder / "batch.parquet").write_bytes(raw[: len(raw) // 2])
    (folder / "full.parquet").unlink()
    return folder / "batch.parquet"


def _latin1_csv(df: pd.DataFrame, folder: Path) -> Path:
    text = df.to_csv(index=False).replace("north", "nörth", 1)
    (folder / "batch.csv").write_bytes(text.encode("latin-1"))
    return folder / "batch.csv"


def _nulls(col: str, fraction: float) -> Callable[[pd.DataFrame, Path], Path]:
    def build(df: pd.DataFrame, folder: Path) -> Path:
        if pd.api.types.is_integer_dtype(df[col]):
            df[col] = df[col].astype("float64")  # pandas 3 refuses NaN in an int64 column
        df.loc[: int(len(df) * fraction) - 1, col] = np.nan
        return _csv(df, folder)

    return build


@dataclass
class Case:
    id: str
    build: Callable[[pd.DataFrame, Path], Path]
    #: (expectation, column, unexpected_count) that must be among the failures; count ... = don't care
    failing: list[tuple] = field(default_factory=list)
    #: substrings the summary must contain
    needles: list[str] = field(default_factory=list)
    read_error: bool = False
    #: exact number of failures, when the case should fail on nothing else
    n_failures: int | None = None


BAD_CASES = [
    Case(
        "missing_column",
        lambda df, d: _csv(df.drop(columns=["tenure_months"]), d),
        [("expect_table_columns_to_match_set", None, None)],
        ["missing ['tenure_months']"],
    ),
    Case(
        "extra_column",
        lambda df, d: _csv(df.assign(loyalty_points=1), d),
        [("expect_table_columns_to_match_set", None, None)],
        ["unexpected ['loyalty_points']"],
        n_failures=1,
    ),
    Case(
        "string_in_numeric_column",
        _set("monthly_charges", slice(7, 7), "abc"),
        [("expect_column_values_to_be_in_type_list", "monthly_charges", 1)],
        ["monthly_charges: expected a numeric column, found dtype str", "1 value is not a number", "'abc'"],
    ),
    Case(
        "out_of_range",
        _set("tenure_months", slice(0, 11), 99),
        [("expect_column_values_to_be_between", "tenure_months", 12)],
        ["tenure_months: 12 rows outside [0, 72]", "max 99"],
        n_failures=1,
    ),
    Case(
        "unseen_category",
        _set("region", slice(0, 3), "mars"),
        [("expect_column_values_to_be_in_set", "region", 4)],
        ["region: 4 rows with unseen category: 'mars' (4)"],
        n_failures=1,
    ),
    Case(
        "empty_file",
        _bytes(b"", "batch.csv"),
        [(READ_EXPECTATION, None, None)],
        ["could not be read", "file is empty (0 bytes)"],
        read_error=True,
    ),
    Case(
        "blank_csv",
        _bytes(b"\n\n", "batch.csv"),
        [(READ_EXPECTATION, None, None)],
        ["could not be read", "no columns to parse"],
        read_error=True,
    ),
    Case(
        "header_only_csv",
        lambda df, d: _csv(df.head(0), d),
        [("expect_table_row_count_to_be_between", None, None)],
        ["0 rows, expected between 200 and 5000000"],
    ),
    Case(
        "too_few_rows",
        lambda df, d: _csv(df.head(150), d),
        [("expect_table_row_count_to_be_between", None, None)],
        ["150 rows, expected between 200 and 5000000"],
        n_failures=1,
    ),
    Case(
        "duplicated_ids",
        _duplicated_ids,
        [("expect_column_values_to_be_unique", "customer_id", 10)],
        ["customer_id: 10 rows share an id", "5 distinct ids duplicated", "C0003-0000000"],
        n_failures=1,
    ),
    Case(
        "null_ids",
        _set("customer_id", slice(0, 2), np.nan),
        [("expect_column_values_to_not_be_null", "customer_id", 3)],
        ["customer_id: 3 of 1000 rows are null"],
        n_failures=1,
    ),
    Case(
        "all_null_numeric_column",
        _nulls("age", 1.0),
        [("expect_column_values_to_not_be_null", "age", ROWS)],
        ["age: 1000 of 1000 rows are null (100.0%", "none allowed"],
        n_failures=1,
    ),
    Case(
        "all_null_categorical_column",
        _nulls("region", 1.0),
        [("expect_column_values_to_not_be_null", "region", ROWS)],
        ["region: 1000 of 1000 rows are null (100.0%"],
        n_failures=1,
    ),
    Case(
        "null_rate_above_column_override",  # satisfaction_score allows 5 %
        _nulls("satisfaction_score", 0.10),
        [("expect_column_values_to_not_be_null", "satisfaction_score", 100)],
        ["satisfaction_score: 100 of 1000 rows are null (10.0%", "at most 5% allowed"],
        n_failures=1,
    ),
    Case(
        "truncated_csv",
        _truncated_csv,
        [
            ("expect_column_values_to_not_be_null", "churned", 1),
            ("expect_column_values_to_not_be_null", "region", 1),
        ],
        ["churned: 1 of 601 rows are null", "only in the last row (index 600)"],
    ),
    Case(
        "truncated_parquet",
        _truncated_parquet,
        [(READ_EXPECTATION, None, None)],
        ["could not be read", "batch.parquet"],
        read_error=True,
    ),
    Case(
        "non_utf8_csv",
        _latin1_csv,
        [(READ_EXPECTATION, None, None)],
        ["could not be read", "not valid UTF-8"],
        read_error=True,
    ),
    Case(
        "missing_target_column",
        lambda df, d: _csv(df.drop(columns=["churned"]), d),
        [("expect_column_to_exist", "churned", None), ("expect_table_columns_to_match_set", None, None)],
        ["churned: the target column is missing", "missing ['churned']"],
    ),
    Case(
        "target_value_2",
        _set("churned", slice(0, 2), 2),
        [("expect_column_values_to_be_in_set", "churned", 3)],
        ["churned: 3 rows with target value outside {0, 1}: 2 (3)"],
        n_failures=1,
    ),
    Case(
        "target_rate_too_low",
        _set("churned", slice(None), 0),
        [("expect_column_mean_to_be_between", "churned", None)],
        ["churned: positive rate 0.0000 outside [0.05, 0.8]"],
        n_failures=1,
    ),
    Case(
        "target_rate_too_high",
        _set("churned", slice(None), 1),
        [("expect_column_mean_to_be_between", "churned", None)],
        ["churned: positive rate 1.0000 outside [0.05, 0.8]"],
        n_failures=1,
    ),
]


def _assert_json_round_trip(report: ValidationReport) -> None:
    data = report.to_dict()
    again = json.loads(json.dumps(data))
    assert again == data
    assert ValidationReport.from_dict(again) == report
    assert again["summary"] == report.summary()


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_broken_batch_fails_naming_expectation_column_and_rows(case, cfg, base, tmp_path):
    path = case.build(base.copy(), tmp_path)
    before = path.read_bytes()
    sha = file_sha256(path)

    report = validate_batch(path, cfg)

    assert report.success is False
    assert report.batch == path.name
    summary = report.summary()
    assert summary.startswith(f"Batch {path.name} ")
    for needle in case.needles:
        assert needle in summary, f"{needle!r} not in {summary!r}"
    got = {(f.expectation, f.column): f for f in report.failures}
    for expectation, column, count in case.failing:
        assert (expectation, column) in got, f"{expectation}[{column}] not failing: {summary}"
        failure = got[(expectation, column)]
        assert failure.unexpected_count == count, failure
        assert expectation in summary and failure.detail.rstrip(".") in summary
        if column is not None:
            assert column in failure.detail
    if case.n_failures is not None:
        assert len(report.failures) == case.n_failures, summary
    if case.read_error:
        assert report.read_error and report.row_count is None and report.evaluated == 0
        assert report.failures == (FailedExpectation(READ_EXPECTATION, None, None, report.read_error),)
        assert "REJECTED" in summary
    else:
        assert report.read_error is None and report.evaluated > 50 and report.row_count is not None
        assert f"FAILED {len(report.failures)} of {report.evaluated} expectations" in summary
    assert report.docs_path is None
    # the validator never touches the file: same bytes, same place, nothing else written next to it
    assert path.read_bytes() == before and file_sha256(path) == sha
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    _assert_json_round_trip(report)


@pytest.mark.parametrize("writer", [_csv, _parquet], ids=["csv", "parquet"])
def test_good_batch_passes(writer, cfg, base, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # an ephemeral GX context: no gx/ project folder appears anywhere
    path = writer(base.copy(), tmp_path)
    sha = file_sha256(path)

    report = validate_batch(path, cfg)

    assert report.success is True, report.summary()
    assert report.failures == () and report.read_error is None and report.docs_path is None
    assert report.row_count == ROWS and report.evaluated == len(build_suite(cfg).expectations)
    assert report.summary() == f"Batch {path.name} passed all {report.evaluated} expectations (1000 rows)."
    assert file_sha256(path) == sha
    assert list(cwd.iterdir()) == []
    _assert_json_round_trip(report)


def test_null_rate_within_column_override_passes(cfg, base, tmp_path):
    report = validate_batch(_nulls("satisfaction_score", 0.03)(base.copy(), tmp_path), cfg)
    assert report.success is True, report.summary()


def test_suite_is_derived_from_the_config(cfg):
    suite = build_suite(cfg)
    by_key = {(e.expectation_type, getattr(e, "column", None)): e for e in suite.expectations}
    assert set(by_key[("expect_table_columns_to_match_set", None)].column_set) == {
        cfg.id_column,
        *cfg.features.all,
        cfg.target,
    }
    assert by_key[("expect_table_columns_to_match_set", None)].exact_match is True
    rows = by_key[("expect_table_row_count_to_be_between", None)]
    assert (rows.min_value, rows.max_value) == (200, 5_000_000)
    for col in cfg.features.numeric:
        assert ("expect_column_values_to_be_in_type_list", col) in by_key
        assert ("expect_column_values_to_be_between", col) in by_key
    for col in cfg.features.categorical:
        assert by_key[("expect_column_values_to_be_of_type", col)].type_ == "str"
        in_set = by_key[("expect_column_values_to_be_in_set", col)]
        assert set(in_set.value_set) == set(cfg.validation.columns[col].values)
    assert by_key[("expect_column_values_to_not_be_null", "satisfaction_score")].mostly == pytest.approx(0.95)
    assert by_key[("expect_column_values_to_not_be_null", "tenure_months")].mostly == 1.0
    assert ("expect_column_values_to_be_unique", cfg.id_column) in by_key
    assert set(by_key[("expect_column_values_to_be_in_set", cfg.target)].value_set) == {0, 1}
    mean = by_key[("expect_column_mean_to_be_between", cfg.target)]
    assert (mean.min_value, mean.max_value) == (0.05, 0.80)


def test_suite_builds_in_a_fresh_process_without_any_gx_context():
    """build_suite needs no Data Context; importing the module does not import GX (it is heavy)."""
    code = (
        "import sys\n"
        "import mlops.data.validation as v\n"
        "assert 'great_expectations' not in sys.modules\n"
        "from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config\n"
        "suite = v.build_suite(get_model_config('churn', BUILTIN_MODELS_DIR))\n"
        "print(len(suite.expectations), sorted(k for k in sys.modules if k.split('.')[0] == 'airflow'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, airflow = out.stdout.strip().split(" ", 1)
    assert int(count) > 50 and airflow == "[]"


def test_failures_are_listed_schema_first_and_all_named(cfg, base, tmp_path):
    df = base.copy().drop(columns=["sms_count"])
    df.loc[:4, "tenure_months"] = -1
    df.loc[:1, "contract_type"] = "weekly"
    report = validate_batch(_csv(df, tmp_path), cfg)
    kinds = [(f.expectation, f.column) for f in report.failures]
    assert kinds[0] == ("expect_table_columns_to_match_set", None)
    assert ("expect_column_values_to_be_between", "tenure_months") in kinds
    assert ("expect_column_values_to_be_in_set", "contract_type") in kinds
    missing = [f for f in report.failures if f.column == "sms_count"]
    assert missing and all("column is missing" in f.detail for f in missing)
    summary = report.summary()
    for f in report.failures:
        assert f.detail.rstrip(".") in summary
    assert "tenure_months: 5 rows outside [0, 72] (observed min -1" in summary
    assert "'weekly' (2)" in summary


def test_gx_info_logging_is_kept_quiet(cfg, base, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        validate_batch(_csv(base.copy(), tmp_path), cfg)
    noisy = [
        r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING
    ]
    assert noisy == []


def test_data_docs_are_built_for_the_validation(cfg, base, tmp_path):
    df = base.copy()
    df.loc[:3, "region"] = "mars"
    path = _csv(df, tmp_path, "batch-0042.csv")
    docs = tmp_path / "docs"

    report = validate_batch(path, cfg, docs_dir=docs)

    assert report.success is False
    assert report.docs_path == str((docs / "index.html").resolve())
    index = Path(report.docs_path).read_text(encoding="utf-8")
    assert "batch-0042.csv" in index
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 1 and "batch-0042.csv" in str(pages[0])
    page = pages[0].read_text(encoding="utf-8")
    assert "region" in page and "mars" in page
    assert (docs / "expectations").is_dir()
    assert report.to_dict()["docs_path"] == report.docs_path
    _assert_json_round_trip(report)


def test_unreadable_file_gets_no_docs_and_does_not_raise(cfg, tmp_path):
    path = tmp_path / "batch.parquet"
    path.write_bytes(b"PAR1 not really")
    report = validate_batch(path, cfg, docs_dir=tmp_path / "docs")
    assert report.read_error and report.docs_path is None and not report.success


def test_missing_file_and_unsupported_type_are_read_errors(cfg, tmp_path):
    gone = validate_batch(tmp_path / "nope.csv", cfg)
    assert gone.read_error and "nope.csv" in gone.summary()
    (tmp_path / "batch.json").write_text("{}")
    odd = validate_batch(tmp_path / "batch.json", cfg)
    assert odd.read_error and "unsupported file type" in odd.summary()
