"""Pipeline steps without Airflow: quarantine of every kind of bad batch, the entrypoint's argv."""

from __future__ import annotations

import json
import shutil

import pytest
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.data.io import file_sha256
from mlops.data.landing import landing_dir, quarantine_dir, validate_landing
from mlops.demo.datagen import generate_churn, write_frame
from mlops.training.spec import entrypoint_argv

from tests.unit.test_validation import BAD_CASES


@pytest.fixture(scope="module")
def cfg():
    return get_model_config("churn", BUILTIN_MODELS_DIR)


def test_every_bad_batch_is_quarantined_byte_for_byte_with_its_report(tmp_path, cfg):
    data_root = tmp_path / "data"
    landing = landing_dir(data_root, "churn")
    landing.mkdir(parents=True)
    good = write_frame(generate_churn(1000, seed=5), landing / "good.csv")
    expected = {}
    for case in BAD_CASES:
        work = tmp_path / "build" / case.id
        work.mkdir(parents=True)
        built = case.build(generate_churn(1000, seed=3), work)
        target = landing / f"{case.id}{built.suffix}"
        shutil.move(built, target)
        expected[target.name] = file_sha256(target)

    check = validate_landing(cfg, data_root, tmp_path / "reports")

    assert check.good == [{"path": str(good), "sha256": file_sha256(good)}] and good.exists()
    assert sorted(r["batch"] for r in check.rejected) == sorted(expected)
    q = quarantine_dir(data_root, "churn")
    for name, sha in expected.items():
        assert not (landing / name).exists()
        assert file_sha256(q / name) == sha, f"{name} must be kept byte-for-byte"
        report = json.loads((q / f"{name}.validation.json").read_text())
        assert report["success"] is False and report["sha256"] == sha and report["summary"]
    message = check.error_message()
    assert f"{len(expected)} batch(es) refused and moved to quarantine" in message
    assert "missing ['tenure_months']" in message


def test_quarantine_never_overwrites(tmp_path, cfg):
    data_root = tmp_path / "data"
    for i in range(2):
        path = landing_dir(data_root, "churn") / "same-name.csv"
        write_frame(generate_churn(50, seed=i), path)  # too few rows: refused
        validate_landing(cfg, data_root, tmp_path / "reports")
    kept = sorted(p.name for p in quarantine_dir(data_root, "churn").glob("same-name*.csv"))
    assert len(kept) == 2


def test_entrypoint_argv_local_and_pod():
    ts = {"repo": "/d/repo", "rev": "abc123", "digest": "f" * 64, "paths": ["churn/batches/00001-x-a.csv"]}
    local = entrypoint_argv(
        "churn", ts, fetch=False, models_dir="/m", tags={"k": "v"}, params={"max_iter": 5}
    )
    assert local[:5] == ["python", "-m", "mlops.training", "--model", "churn"]
    assert local[7:9] == ["--data", "/d/repo/churn/batches/00001-x-a.csv"]
    assert (
        "--dvc-rev" in local and "abc123" in local and local[local.index("--tag") :][:2] == ["--tag", "k=v"]
    )
    assert json.loads(local[local.index("--params") + 1]) == {"max_iter": 5}
    pod = entrypoint_argv("churn", ts, fetch=True, output="/airflow/xcom/return.json")
    assert pod[pod.index("--data") + 1] == "churn/batches/00001-x-a.csv"  # fetched through DVC in the pod
    assert pod[-2:] == ["--output", "/airflow/xcom/return.json"] and "--models-dir" not in pod


def test_a_batch_written_to_during_validation_is_left_in_landing_not_judged(tmp_path, cfg, monkeypatch):
    """The uploader appends while Great Expectations reads: neither accepted nor quarantined, kept whole."""
    import mlops.data.validation as validation

    data_root = tmp_path / "data"
    path = write_frame(generate_churn(600, seed=5), landing_dir(data_root, "churn") / "arriving.csv")
    real = validation.validate_batch

    def validate_while_the_upload_goes_on(p, *args, **kwargs):
        report = real(p, *args, **kwargs)
        with open(p, "a") as f:  # the next rows arrive while the report is being written
            f.write("c-999999,1")
        return report

    monkeypatch.setattr(validation, "validate_batch", validate_while_the_upload_goes_on)
    check = validate_landing(cfg, data_root, tmp_path / "reports", settle_s=0)
    assert check.waiting == ["arriving.csv"] and check.good == [] and check.rejected == []
    assert path.exists() and not quarantine_dir(data_root, "churn").exists()


def test_fresh_batches_are_probed_and_growing_ones_wait(tmp_path):
    from mlops.data.landing import settled_batches

    data_root = tmp_path / "data"
    folder = landing_dir(data_root, "churn")
    folder.mkdir(parents=True)
    old = write_frame(generate_churn(50, seed=1), folder / "old.csv")
    growing = write_frame(generate_churn(50, seed=2), folder / "growing.csv")
    (folder / "upload.csv.part").write_text("a,b\n")  # the uploader's temporary name: not a batch
    (folder / ".upload.csv.x1y2").write_text("a,b\n")  # rsync's hidden temporary: not a batch
    sleeps = []

    def sleep(s):  # the probe: meanwhile one file grows
        sleeps.append(s)
        with growing.open("a") as f:
            f.write("more\n")

    mtime_old = old.stat().st_mtime
    import os

    os.utime(old, (mtime_old - 60, mtime_old - 60))  # settled a minute ago: not probed
    complete, moving = settled_batches(data_root, "churn", settle_s=10, probe_s=2, sleep=sleep)
    assert complete == [old] and moving == [growing] and sleeps == [2]
    os.utime(growing, (mtime_old - 60, mtime_old - 60))
    assert settled_batches(data_root, "churn", settle_s=10, sleep=sleep) == ([growing, old], [])
    assert sleeps == [2], "nothing fresh: no probe"
