"""Training entrypoint + gate + registry against a real MLflow server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from mlops.config.model import BUILTIN_MODELS_DIR, load_model_config
from mlops.demo.datagen import generate_churn, write_frame
from mlops.gate.judge import judge_candidate, promote_candidate, reject_candidate
from mlops.registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version


@pytest.fixture
def models_dir(tmp_path, request):
    """A private copy of the churn config under a unique model name, so tests never share a registry entry."""
    name = f"churn_{request.node.name.lower().replace('[', '_').replace(']', '')[:30]}"
    raw = yaml.safe_load((BUILTIN_MODELS_DIR / "churn.yaml").read_text())
    raw["name"] = name
    raw["training"]["params"]["max_iter"] = 60  # fast
    d = tmp_path / "models"
    d.mkdir()
    (d / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return d, name


def _batch(tmp_path, seed, rows=2000):
    path = tmp_path / f"batch-{seed}.csv"
    return path if path.exists() else write_frame(generate_churn(rows, seed=seed), path)


def test_cli_train_registers_challenger_with_lineage(tmp_path, mlflow_uri, models_dir):
    from mlflow import MlflowClient

    d, name = models_dir
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops.training",
            "--model",
            name,
            "--models-dir",
            str(d),
            "--data",
            str(_batch(tmp_path, 1)),
            "--data",
            str(_batch(tmp_path, 2)),
            "--tracking-uri",
            mlflow_uri,
            "--tag",
            "airflow.dag_id=x_training",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["model_version"] == "1"
    assert result["train_rows"] + result["holdout_rows"] == 4000
    assert 0.7 < result["metrics"]["roc_auc"] < 1.0
    assert any(k.startswith("roc_auc__contract_type__") for k in result["metrics"])

    client = MlflowClient(mlflow_uri)
    assert alias_version(client, name, CHALLENGER) == "1"
    assert alias_version(client, name, CHAMPION) is None
    mv = client.get_model_version(name, "1")
    assert mv.run_id == result["run_id"]
    assert mv.tags["airflow.dag_id"] == "x_training"
    assert mv.tags["mlops.data_digest"] == result["data_digest"]
    run = client.get_run(result["run_id"])
    assert run.data.params["hp.max_iter"] == "60"
    assert run.inputs.dataset_inputs, "training data must be logged as an MLflow dataset input"
    for m in ("roc_auc", "pr_auc", "f1", "log_loss", "brier", "train_roc_auc"):
        assert m in run.data.metrics
    # the drift reference is computed once, at training time, and stored with the version's run
    from mlflow.artifacts import download_artifacts
    from mlops.drift.profile import ReferenceProfile

    path = download_artifacts(
        run_id=mv.run_id,
        artifact_path="drift/reference_profile.json",
        tracking_uri=mlflow_uri,
        dst_path=str(tmp_path),
    )
    profile = ReferenceProfile.load(path)
    assert profile.n_rows == result["holdout_rows"]
    cfg = load_model_config(models_dir[0] / f"{name}.yaml")
    assert set(profile.numeric) == set(cfg.features.numeric)
    assert set(profile.categorical) == set(cfg.features.categorical)
    assert profile.score is not None


def test_gate_promotes_then_rejects_and_champion_is_untouched(tmp_path, mlflow_uri, models_dir):
    from mlflow import MlflowClient
    from mlops.training.train import train

    d, name = models_dir
    cfg = load_model_config(d / f"{name}.yaml")
    client = MlflowClient(mlflow_uri)
    weak = {"max_iter": 3, "learning_rate": 0.02, "max_leaf_nodes": 2}
    first = train(cfg, [_batch(tmp_path, 1)], mlflow_uri, params=weak)
    verdict = judge_candidate(cfg, mlflow_uri, first.model_version, first.run_id)
    assert "There is no @champion yet" in " ".join(verdict.reasons)
    assert promote_candidate(cfg, mlflow_uri, first.model_version, forced=not verdict.passed) is None

    second = train(cfg, [_batch(tmp_path, 1), _batch(tmp_path, 2)], mlflow_uri)
    verdict = judge_candidate(cfg, mlflow_uri, second.model_version, second.run_id)
    assert verdict.passed, str(verdict)
    assert verdict.champion_version == first.model_version
    assert promote_candidate(cfg, mlflow_uri, second.model_version) == first.model_version
    assert alias_version(client, name, CHAMPION) == second.model_version
    assert alias_version(client, name, PREVIOUS) == first.model_version

    third = train(cfg, [_batch(tmp_path, 3)], mlflow_uri, params=weak)
    verdict = judge_candidate(cfg, mlflow_uri, third.model_version, third.run_id)
    assert not verdict.passed
    assert "improvement:roc_auc" in verdict.failed_checks
    reject_candidate(cfg, mlflow_uri, third.model_version)
    assert alias_version(client, name, CHAMPION) == second.model_version
    assert alias_version(client, name, CHALLENGER) is None
    mv = client.get_model_version(name, third.model_version)
    assert mv.tags["gate"] == "failed" and "does not improve on champion" in mv.tags["gate.reasons"]
    assert [a.path for a in client.list_artifacts(third.run_id, "gate")] == ["gate/gate.json"]


def test_bad_target_is_refused_before_anything_is_logged(tmp_path, mlflow_uri, models_dir):
    from mlops.training.train import train

    d, name = models_dir
    cfg = load_model_config(d / f"{name}.yaml")
    df = generate_churn(500, seed=1)
    df["churned"] = 0
    path = write_frame(df, tmp_path / "one-class.csv")
    with pytest.raises(ValueError, match="single class"):
        train(cfg, [path], mlflow_uri)
