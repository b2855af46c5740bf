"""Secrets: generated once into a 0600 file, reused, overridden by the environment, never weak off loopback."""

from __future__ import annotations

import os
import stat

import pytest
from mlops.config.secrets import (
    GENERATED_FIELDS,
    SECRET_FIELDS,
    ensure_secrets,
    exposure_problems,
    secrets_path,
)
from mlops.config.settings import Settings
from pydantic import SecretStr


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch):
    for name in SECRET_FIELDS:
        monkeypatch.delenv(f"MLOPS_{name.upper()}", raising=False)


def _values(s: Settings, fields: tuple[str, ...] = GENERATED_FIELDS) -> dict[str, str]:
    return {n: getattr(s, n).get_secret_value() for n in fields}


def test_no_secret_has_a_default(tmp_path):
    assert set(_values(Settings(home=tmp_path), SECRET_FIELDS).values()) == {""}


def test_generated_once_0600_and_reused(tmp_path):
    first = ensure_secrets(Settings(home=tmp_path))
    values = _values(first)
    assert all(len(v) >= 24 for v in values.values()) and len(set(values.values())) == len(GENERATED_FIELDS)
    assert first.endpoint_token.get_secret_value() == ""  # opt-in: never generated
    path = secrets_path(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # a new process (new Settings) reads them back; a second ensure generates nothing new
    assert _values(Settings(home=tmp_path)) == values
    before = path.read_bytes()
    assert _values(ensure_secrets(Settings(home=tmp_path))) == values and path.read_bytes() == before
    # the Fernet key is what Airflow's cryptography accepts
    from cryptography.fernet import Fernet

    Fernet(values["fernet_key"].encode()).encrypt(b"x")


def test_the_environment_wins_and_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_ADMIN_PASSWORD", "from-the-environment-123")
    s = ensure_secrets(Settings(home=tmp_path))
    assert s.admin_password.get_secret_value() == "from-the-environment-123"
    assert "from-the-environment-123" not in secrets_path(tmp_path).read_text()
    assert "MLOPS_ADMIN_PASSWORD" not in secrets_path(tmp_path).read_text()
    assert Settings(home=tmp_path).admin_password.get_secret_value() == "from-the-environment-123"


def test_loopback_is_fine_anything_else_needs_strong_secrets(tmp_path, monkeypatch):
    weak = Settings(home=tmp_path, admin_password="admin", jwt_secret="short")
    assert exposure_problems(weak) == []  # 127.0.0.1: a laptop
    for host in ("0.0.0.0", "10.1.2.3", "my-host"):
        problems = exposure_problems(weak.model_copy(update={"host": host}))
        assert "MLOPS_ADMIN_PASSWORD has a publicly known value" in problems
        assert "MLOPS_JWT_SECRET is shorter than 32 characters" in problems
        assert "MLOPS_FERNET_KEY is not set" in problems
    strong = ensure_secrets(Settings(home=tmp_path / "other", host="0.0.0.0"))
    # off loopback the model endpoint needs its token too
    assert exposure_problems(strong) == [
        "MLOPS_ENDPOINT_TOKEN is not set (the model endpoint would answer anyone)"
    ]
    assert exposure_problems(strong.model_copy(update={"endpoint_token": SecretStr("short")})) == [
        "MLOPS_ENDPOINT_TOKEN is shorter than 24 characters"
    ]
    strong = strong.model_copy(update={"endpoint_token": SecretStr("endpoint-token-of-32-characters!")})
    assert exposure_problems(strong) == []
    assert exposure_problems(strong.model_copy(update={"host": "::1"})) == []


def test_stack_up_refuses_a_public_bind_with_a_known_secret(tmp_path, monkeypatch):
    from mlops.stack import local as stack

    monkeypatch.setenv("MLOPS_ADMIN_PASSWORD", "admin")
    s = Settings(home=tmp_path, host="0.0.0.0")
    with pytest.raises(
        stack.StackError,
        match=r"refusing to bind to 0\.0\.0\.0 .*MLOPS_ADMIN_PASSWORD has a publicly known value",
    ):
        stack.up(s)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_config_output_masks_every_secret(tmp_path, capsys, monkeypatch):
    from mlops.cli import main

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    values = _values(ensure_secrets(Settings(home=tmp_path)))
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "**********" in out and not [v for v in values.values() if v in out]


def test_each_stack_service_gets_only_the_secrets_it_needs(tmp_path, monkeypatch):
    from mlops.stack import local as stack

    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING", "http://user:conn-password@host")
    s = ensure_secrets(Settings(home=tmp_path))
    v = _values(s)
    for name in ("mlflow", "prometheus", "alertmanager", "pushgateway"):
        env = stack.service_env(s, name)
        assert not [k for k in env if k.startswith("AIRFLOW")], name
        assert not [n for n, value in v.items() if value in env.values()], name
        assert env["MLOPS_HOME"] == str(tmp_path)  # the non-secret settings still reach every service
    for name in stack.AIRFLOW_SERVICES:
        env = stack.service_env(s, name)
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == v["jwt_secret"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == v["fernet_key"]
        assert v["admin_password"] not in env.values()  # Airflow reads its 0600 password file
        assert ("MLOPS_ALERT_WEBHOOK_TOKEN" in env) == (name == "api-server")  # the webhook receiver
        assert "MLOPS_ENDPOINT_TOKEN" not in env  # none set
    token = "endpoint-token-0123456789abcdef"
    s = s.model_copy(update={"endpoint_token": SecretStr(token)})
    assert stack.service_env(s, "scheduler")["MLOPS_ENDPOINT_TOKEN"] == token  # its tasks smoke-test servers
    for name in ("api-server", "triggerer", "dag-processor", "mlflow", "prometheus"):
        assert token not in stack.service_env(s, name).values(), name


def test_scrubbed_env_for_model_servers_and_training():
    from mlops.config.secrets import scrubbed_env

    env = {
        "PATH": "/bin",
        "MLOPS_HOME": "/h",
        "MLOPS_JWT_SECRET": "x",
        "MLOPS_ADMIN_PASSWORD": "y",
        "AIRFLOW__CORE__FERNET_KEY": "z",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": "http://u:p@h",
        "MLFLOW_TRACKING_URI": "http://mlflow",
    }
    assert scrubbed_env(env) == {"PATH": "/bin", "MLOPS_HOME": "/h", "MLFLOW_TRACKING_URI": "http://mlflow"}
    assert scrubbed_env(env, airflow=True) == {
        "PATH": "/bin",
        "MLOPS_HOME": "/h",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": "http://u:p@h",
        "MLFLOW_TRACKING_URI": "http://mlflow",
    }


def test_a_password_in_the_ledger_url_is_masked_in_config_output(tmp_path):
    url = "postgresql+psycopg://mlops:hunter2-in-the-url@db:5432/mlops"
    shown = Settings(home=tmp_path, alert_ledger_url=url).masked()["alert_ledger_url"]
    assert shown == "postgresql+psycopg://mlops:***@db:5432/mlops"
    assert Settings(home=tmp_path).masked()["alert_ledger_url"] == ""
