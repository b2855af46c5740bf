from __future__ import annotations

import pytest
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.data.io import BatchReadError, file_sha256, load_training_frame, read_batch
from mlops.demo.datagen import generate_churn


@pytest.fixture
def cfg():
    return get_model_config("churn", BUILTIN_MODELS_DIR)


def test_csv_and_parquet_round_trip(tmp_path):
    df = generate_churn(100, seed=1)
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_parquet(tmp_path / "a.parquet", index=False)
    assert read_batch(tmp_path / "a.csv").shape == df.shape
    assert read_batch(tmp_path / "a.parquet").equals(df)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.csv", b"", "file is empty"),
        ("blank.csv", b"\n\n", "no columns"),
        ("latin1.csv", "a,b\n\xe9t\xe9,1\n".encode("latin-1"), "not valid UTF-8"),
        ("trunc.parquet", b"PAR1\x00\x00garbage", "magic bytes"),
        ("x.json", b"{}", "unsupported file type"),
    ],
)
def test_unreadable_batches_name_file_and_cause(tmp_path, name, content, needle):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(BatchReadError) as exc:
        read_batch(p)
    assert needle in str(exc.value) and name in str(exc.value)
    assert p.read_bytes() == content  # never altered


def test_training_frame_keeps_config_columns_and_checks_missing(tmp_path, cfg):
    df = generate_churn(100, seed=1)
    df["extra"] = 1
    df.to_csv(tmp_path / "a.csv", index=False)
    df.drop(columns=["tenure_months"]).to_csv(tmp_path / "b.csv", index=False)
    frame = load_training_frame([tmp_path / "a.csv"], cfg)
    assert "extra" not in frame.columns and len(frame) == 100
    with pytest.raises(BatchReadError, match=r"b.csv: missing columns \['tenure_months'\]"):
        load_training_frame([tmp_path / "a.csv", tmp_path / "b.csv"], cfg)


def test_sha256_is_content_hash(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "b").write_bytes(b"x" * 10)
    assert file_sha256(tmp_path / "a") == file_sha256(tmp_path / "b")
