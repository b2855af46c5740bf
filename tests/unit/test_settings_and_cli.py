from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlops.cli import main
from mlops.config.settings import Settings


def test_env_overrides_and_types(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_AIRFLOW_PORT", "18080")
    s = Settings()
    assert s.home == tmp_path
    assert s.airflow_port == 18080
    assert s.airflow_url == "http://127.0.0.1:18080"
    assert s.tracking_uri == "http://127.0.0.1:5000"


def test_bad_value_is_named(monkeypatch):
    monkeypatch.setenv("MLOPS_AIRFLOW_PORT", "eighty")
    with pytest.raises(ValueError, match="airflow_port"):
        Settings()


def test_config_masks_secrets(monkeypatch, capsys):
    monkeypatch.setenv("MLOPS_ADMIN_PASSWORD", "s3cret-value")
    monkeypatch.setenv("MLOPS_JWT_SECRET", "jwt-s3cret")
    assert main(["config", "--json"]) == 0
    out = capsys.readouterr().out
    values = json.loads(out)
    assert values["admin_password"] == "**********"
    assert values["jwt_secret"] == "**********"
    assert "s3cret" not in out
    assert values["airflow_port"] == "8080"


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("config", "generate", "train", "stack", "demo"):
        assert cmd in out


def test_generate_writes_batch_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "b.parquet"
    assert main(["generate", "--model", "churn", "--rows", "300", "--seed", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    before = out.read_bytes()
    assert main(["generate", "--model", "churn", "--rows", "300", "--seed", "4", "--out", str(out)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_unknown_model_is_a_clear_error(capsys, tmp_path):
    assert main(["generate", "--model", "nope", "--rows", "3", "--out", str(tmp_path / "x.csv")]) == 1
    assert "no data generator for model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "value"),
    [({}, None), ({"MLOPS_MODELS_DIR": "/x/models", "MLOPS_DATA_ROOT": "/x/data", "MLOPS_DOCKER_URL": "tcp://h:1",
                   "MLOPS_TRAINING_BACKENDS": "local,docker"}, True)],
)  # fmt: skip
def test_parse_time_defaults_agree_with_settings(monkeypatch, env, value):
    from mlops.config import defaults

    for k in ("MLOPS_MODELS_DIR", "MLOPS_DATA_ROOT", "MLOPS_DOCKER_URL", "MLOPS_TRAINING_BACKENDS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert defaults.models_dir() == s.models_dir
    assert defaults.data_root() == s.data_root
    assert defaults.docker_url() == s.docker_url
    assert defaults.training_backends() == [b.strip() for b in s.training_backends.split(",")]


def test_unknown_backend_is_named(monkeypatch):
    from mlops.config import defaults

    monkeypatch.setenv("MLOPS_TRAINING_BACKENDS", "local,slurm")
    with pytest.raises(ValueError, match=r"unknown backends \['slurm'\]"):
        defaults.training_backends()
