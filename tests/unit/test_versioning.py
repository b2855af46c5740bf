from __future__ import annotations

import subprocess

import pytest
from mlops.data.versioning import DataRepo, VersioningError, fetch_training_set
from mlops.demo.datagen import generate_churn, write_frame


@pytest.fixture
def repo(tmp_path):
    return DataRepo(tmp_path / "repo", str(tmp_path / "remote"))


def _batch(tmp_path, name, seed):
    return write_frame(generate_churn(200, seed=seed), tmp_path / "landing" / name)


def test_accept_versions_pushes_and_dedupes(tmp_path, repo):
    a = _batch(tmp_path, "a.csv", 1)
    data = a.read_bytes()
    first = repo.accept("churn", a)
    assert not first.duplicate and not a.exists()
    stored = repo.root / first.path
    assert stored.read_bytes() == data  # moved byte-for-byte
    assert any((tmp_path / "remote").rglob("*")), "dvc push must fill the remote"
    log = subprocess.run(
        ["git", "log", "--format=%H %s"], cwd=repo.root, capture_output=True, text=True
    ).stdout
    assert first.rev in log and "accept batch a.csv" in log

    again = _batch(tmp_path, "a-again.csv", 1)  # same bytes, other name
    dup = repo.accept("churn", again)
    assert dup.duplicate and dup.path == first.path and dup.rev == first.rev
    assert again.exists(), "a duplicate is left for the caller to archive"
    assert len(repo.batches("churn")) == 1


def test_training_window_and_fetch_through_dvc(tmp_path, repo):
    for i in range(4):
        repo.accept("churn", _batch(tmp_path, f"b{i}.csv", 10 + i))
    ts = repo.training_set("churn", window=3)
    assert len(ts.paths) == 3 and ts.paths[0].startswith("churn/batches/00002-")
    assert ts.rev == repo.head() and len(ts.digest) == 64
    fetched = fetch_training_set(ts.repo, ts.rev, list(ts.paths), tmp_path / "fetched")
    assert [p.read_bytes() for p in fetched] == [(repo.root / p).read_bytes() for p in ts.paths]
    with pytest.raises(VersioningError, match="no accepted batches for model 'other'"):
        repo.training_set("other", 3)


def test_failed_versioning_puts_the_batch_back(tmp_path, repo, monkeypatch):
    a = _batch(tmp_path, "a.csv", 1)
    data = a.read_bytes()
    repo.ensure()

    def broken_git(*args):
        if args and args[0] == "commit":
            raise VersioningError("git commit failed: disk full (simulated)")
        return DataRepo._git(repo, *args)

    monkeypatch.setattr(repo, "_git", broken_git)
    with pytest.raises(VersioningError, match="simulated"):
        repo.accept("churn", a)
    assert a.read_bytes() == data


def test_interrupted_acceptance_loses_nothing_and_a_retry_of_the_run_completes(tmp_path, repo, monkeypatch):
    from dvc.repo import Repo

    a = _batch(tmp_path, "a.csv", 1)
    data = a.read_bytes()
    repo.ensure()
    real_add = Repo.add

    def killed_after_add(self, *args, **kwargs):
        real_add(self, *args, **kwargs)
        raise KeyboardInterrupt  # the supervisor's SIGINT lands between `dvc add` and the commit

    monkeypatch.setattr(Repo, "add", killed_after_add)
    with pytest.raises(KeyboardInterrupt):
        repo.accept("churn", a, run_id="run-1")
    monkeypatch.setattr(Repo, "add", real_add)
    assert a.read_bytes() == data, "the landing file is untouched"
    assert repo.batches("churn") == []
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo.root, capture_output=True, text=True
    ).stdout
    assert status == "", f"no half-accepted leftovers: {status!r}"

    first = repo.accept("churn", a, run_id="run-1")
    assert not first.duplicate and not a.exists()
    # the same bytes landed again in the same run (a retry after the commit) count as this run's
    again = _batch(tmp_path, "a.csv", 1)
    same = repo.accept("churn", again, run_id="run-1")
    assert not same.duplicate and same.path == first.path and not again.exists()
    # ...and in another run as a duplicate, left for the caller to archive
    third = _batch(tmp_path, "a.csv", 1)
    assert repo.accept("churn", third, run_id="run-2").duplicate and third.exists()
    assert len(repo.batches("churn")) == 1


def test_a_batch_changed_after_validation_is_not_versioned(tmp_path, repo):
    from mlops.data.io import file_sha256
    from mlops.data.versioning import BatchChangedError

    src = write_frame(generate_churn(300, seed=4), tmp_path / "landing" / "b.csv")
    validated_sha = file_sha256(src)
    with src.open("a") as f:  # the uploader appended after validation
        f.write("999999,1,2,3\n")
    with pytest.raises(BatchChangedError, match="changed after it was validated"):
        repo.accept("churn", src, validated_sha)
    assert src.exists() and repo.batches("churn") == []
