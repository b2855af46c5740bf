"""DAG integrity and policy: what every DAG of the platform must hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
HEAVY = {"mlflow", "sklearn", "pandas", "numpy", "great_expectations", "dvc", "kubernetes"}
STAGES = {"training", "deployment", "monitoring", "retraining"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_training_dag_per_model_config(dagbag):
    from mlops.config.model import discover_model_configs
    from mlops.config.settings import get_settings

    models = discover_model_configs(get_settings().models_dir)
    assert models, "no model configs found"
    for name in models:
        assert f"{name}_training" in dagbag.dags


def test_every_dag_follows_policy(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        tags = set(dag.tags)
        assert any(t.startswith("model:") for t in tags), f"{dag_id}: needs a model:<name> tag"
        assert tags & {f"stage:{s}" for s in STAGES}, f"{dag_id}: needs a stage:<...> tag"
        assert dag.doc_md and len(dag.doc_md.strip()) > 50, f"{dag_id}: needs doc_md"
        # explicit schedule: the DAG file sets it (None for trigger-only DAGs is explicit too)
        assert "schedule" in _dag_kwargs(dag), f"{dag_id}: schedule must be set explicitly"
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id}: needs a real owner"
            if t.retries == 0:
                assert (t.doc_md or "").startswith("Decision task"), (
                    f"{dag_id}.{t.task_id}: infrastructure tasks need retries >= 1; only decision tasks may use 0"
                )


def _dag_kwargs(dag) -> set[str]:
    """Keyword names passed to the @dag decorator in the file that defines ``dag``."""
    tree = ast.parse(Path(dag.fileloc).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"dag", "DAG"}:
            names.update(k.arg for k in node.keywords if k.arg)
    return names


@pytest.mark.parametrize("path", sorted(DAGS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_heavy_imports_at_module_level(path):
    tree = ast.parse(path.read_text())
    top = set()
    for node in tree.body:  # module level only: imports inside functions are the point
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert not top & HEAVY, f"{path.name} imports {sorted(top & HEAVY)} at module level"


@pytest.mark.parametrize("path", sorted(DAGS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_parsing_a_dag_file_loads_no_heavy_library(path):
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(path)!r})\n"
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ruff_air3_clean():
    ruff = Path(sys.executable).parent / "ruff"
    res = subprocess.run(
        [str(ruff), "check", "--select", "AIR3", "--preview", "dags", "plugins"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_bans_heavy_module_level_imports_in_dags(tmp_path):
    bad = REPO / "dags" / "_tmp_policy_probe.py"
    bad.write_text("import pandas\n")
    try:
        ruff = Path(sys.executable).parent / "ruff"
        res = subprocess.run(
            [str(ruff), "check", "--select", "TID253", str(bad)], capture_output=True, text=True, cwd=REPO
        )
    finally:
        bad.unlink()
    assert res.returncode == 1 and "TID253" in res.stdout


def test_continuous_dags_keep_creating_runs(dagbag):
    """A continuous DAG must get a new logical date for every run, or the scheduler stops at the second.

    Without a start date, ContinuousTimetable gives the second run the first run's logical date; the
    scheduler then logs "run already exists" forever and the retraining DAG never waits for alerts
    again. Simulate five runs in a row with each DAG's timetable as the scheduler sees it (serialized).
    """
    import time

    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.simple import ContinuousTimetable

    scheduled = {
        d: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for d, dag in dagbag.dags.items()
    }
    continuous = {d: dag for d, dag in scheduled.items() if isinstance(dag.timetable, ContinuousTimetable)}
    assert any(d.endswith("_retraining") for d in continuous), "the retraining DAGs are continuous"
    for dag_id, dag in continuous.items():
        assert dag.start_date is not None, f"{dag_id}: a continuous DAG needs a start_date"
        restriction = TimeRestriction(dag.start_date, dag.end_date, catchup=False)
        last, seen = None, []
        for _ in range(5):
            info = dag.timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
            assert info is not None, f"{dag_id}: the timetable stopped scheduling"
            seen.append(info.logical_date)
            last = info.data_interval
            time.sleep(0.01)
        assert len(set(seen)) == len(seen), f"{dag_id}: repeated logical dates {seen}"


@pytest.mark.parametrize("hours_after_the_cron_point", [0.1, 1.3, 2.2])
def test_unpausing_a_scheduled_dag_never_fires_a_run_for_the_past(
    dagbag, monkeypatch, hours_after_the_cron_point
):
    """The first run of a time-scheduled DAG (as the scheduler sees it, serialized) is in the future.

    Airflow's default for a cron trigger without a start date runs the past cron point when it is
    less than a tenth of the period ago: a daily training DAG unpaused at 02:12 UTC ran for midnight.
    """
    from datetime import UTC, datetime, timedelta

    import airflow.timetables.trigger as trigger
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    midnight = datetime(2026, 12, 6, tzinfo=UTC)
    now = midnight + timedelta(hours=hours_after_the_cron_point)
    monkeypatch.setattr(trigger, "utcnow", lambda: now)
    checked = []
    for dag_id, dag in dagbag.dags.items():
        dag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        timetables = [
            dag.timetable,
            getattr(dag.timetable, "timetable", None),
        ]  # AssetOrTimeSchedule wraps one
        cron = next((t for t in timetables if isinstance(t, CronTriggerTimetable)), None)
        if cron is None:
            continue
        info = cron.next_dagrun_info(
            last_automated_data_interval=None, restriction=TimeRestriction(None, None, catchup=False)
        )
        assert info is not None and info.run_after > now, f"{dag_id}: first run {info.run_after} <= {now}"
        checked.append(dag_id)
    assert any(d.endswith("_training") for d in checked) and any(d.endswith("_monitoring") for d in checked)
