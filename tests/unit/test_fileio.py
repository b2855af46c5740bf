"""The one atomic-write and file-lock helper (mlops.fileio) every module shares."""

from __future__ import annotations

import json
import multiprocessing
import stat

from mlops.fileio import atomic_write_json, atomic_write_text, locked


def test_atomic_write_replaces_in_one_step_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "routes.json"
    atomic_write_json(target, {"a": 1}, indent=1)
    atomic_write_text(target, json.dumps({"a": 2}))
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.json"]


def test_a_secret_is_never_readable_by_others(tmp_path):
    target = atomic_write_text(tmp_path / "passwords.json", "{}", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def _increment(path, lock, times):
    for _ in range(times):
        with locked(lock):
            n = int(path.read_text())
            atomic_write_text(path, str(n + 1))


def test_locked_serialises_read_modify_write_across_processes(tmp_path):
    counter, lock = tmp_path / "n", tmp_path / "n.lock"
    counter.write_text("0")
    procs = [multiprocessing.Process(target=_increment, args=(counter, lock, 200)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert int(counter.read_text()) == 800  # no lost update
