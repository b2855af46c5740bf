from __future__ import annotations

import pytest
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.demo.datagen import DRIFTED_FEATURES, generate_churn, write_frame


def test_schema_matches_churn_config():
    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    df = generate_churn(1000, seed=1)
    assert list(df.columns) == [cfg.id_column, *cfg.features.numeric, *cfg.features.categorical, cfg.target]
    assert df[cfg.id_column].is_unique
    assert set(df[cfg.target].unique()) == {0, 1}
    assert 0.2 < df[cfg.target].mean() < 0.5


def test_deterministic_per_seed_and_ids_do_not_collide():
    a, b = generate_churn(500, seed=7), generate_churn(500, seed=7)
    assert a.equals(b)
    c = generate_churn(500, seed=8)
    assert not set(a.customer_id) & set(c.customer_id)


def test_drift_shifts_documented_features_only():
    base, drifted = generate_churn(20000, seed=1), generate_churn(20000, seed=1, drift=1.0)
    assert drifted.monthly_charges.mean() - base.monthly_charges.mean() > 10
    assert drifted.support_calls_90d.mean() > 1.6 * base.support_calls_90d.mean()
    mtm = "month-to-month"
    assert (drifted.contract_type == mtm).mean() - (base.contract_type == mtm).mean() > 0.15
    assert abs(drifted.age.mean() - base.age.mean()) < 1.0  # not a drifted feature
    assert "age" not in DRIFTED_FEATURES


def test_target_depends_on_documented_drivers():
    df = generate_churn(20000, seed=2)
    by_contract = df.groupby("contract_type").churned.mean()
    assert by_contract["month-to-month"] > by_contract["two-year"] + 0.15


@pytest.mark.parametrize("bad", [{"rows": -1}, {"rows": 10, "drift": -0.5}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        generate_churn(**bad)


def test_write_frame_by_extension(tmp_path):
    df = generate_churn(50, seed=1)
    write_frame(df, tmp_path / "x.csv")
    write_frame(df, tmp_path / "x.parquet")
    assert (tmp_path / "x.csv").read_text().startswith("customer_id,")
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_frame(df, tmp_path / "x.json")


def test_breast_cancer_batches_are_real_cases_with_stable_ids():
    from mlops.demo.datagen import generate_breast_cancer

    a, b = generate_breast_cancer(300, seed=1), generate_breast_cancer(300, seed=2)
    assert a.case_id.is_unique and len(a) == 300
    shared = set(a.case_id) & set(b.case_id)
    assert shared, "overlapping draws of the 569 cases"
    cid = sorted(shared)[0]
    row_a = a[a.case_id == cid].drop(columns="case_id").reset_index(drop=True)
    row_b = b[b.case_id == cid].drop(columns="case_id").reset_index(drop=True)
    assert row_a.equals(row_b), "the same case keeps its id and its values in every batch"
    with pytest.raises(ValueError, match="569 real cases"):
        generate_breast_cancer(600)
