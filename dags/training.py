"""Training pipeline DAGs: one ``<model>_training`` DAG per model config file.

Thin wiring only: the work is in ``mlops.data.landing`` / ``mlops.training.train`` (domain) and
``mlops_airflow`` (glue). Heavy libraries are imported inside tasks, never at parse time.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Metadata, Param, dag, task
from mlops.config import defaults
from mlops.config.model import ModelConfig, discover_model_configs, load_model_config, offered_backends
from mlops_airflow.assets import candidate_model_asset, validated_data_asset
from mlops_airflow.schedules import cron

DOC = """
### {name}: training pipeline

{description}

1. **validate**: every batch waiting in `landing/{name}/` is checked by a Great Expectations suite
   built from the model config (Data Docs: the task's *Data Docs* button). A failing or unreadable
   batch is moved byte-for-byte to `quarantine/{name}/` with its report, and the run fails here.
2. **version**: accepted batches go into the DVC data repository (one commit each, pushed to the
   DVC remote); the same bytes twice are a no-op. No new batch: the run stops here (skipped), unless
   *train_without_new_data* is set.
3. **train_&lt;backend&gt;**: `mlops train` on the {window} most recent batches at that DVC revision,
   on the backend chosen by the form or the config ({backends}). MLflow run + a new version of
   **`{name}`** with alias `@challenger`.
4. **judge**: absolute bounds, overfitting, and comparison with `@champion` on the same holdout
   (paired bootstrap). The decision is recorded on the version.
5. {release_doc} or **reject_model** (the run fails there: a rejected model, not a crash;
   `@champion` untouched).

Trigger by hand with the form, or `airflow dags trigger {name}_training`. Config: `{config}`.
"""


def build_training_dag(cfg: ModelConfig, config_path: str, platform_backends: list[str]) -> None:
    # Long by design: the DAG's tasks are defined inline, in graph order, so the file reads as the DAG
    # (each task body is a few lines of wiring into include/; the logic and its tests live there).
    backends = offered_backends(cfg, platform_backends)
    default_backend = cfg.training.backend if cfg.training.backend in backends else backends[0]
    validated, candidate = validated_data_asset(cfg.name), candidate_model_asset(cfg.name)

    @dag(
        dag_id=f"{cfg.name}_training",
        # No start_date and no immediate run: the first scheduled run is the next one in the future, so
        # unpausing the DAG (as `make demo` does) never fires a surprise run for the interval that passed.
        schedule=cron(cfg.schedule) if cfg.schedule else None,
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=[f"model:{cfg.name}", "stage:training"],
        doc_md=DOC.format(
            name=cfg.name,
            description=cfg.description,
            window=cfg.data.training_window,
            backends=", ".join(backends),
            config=config_path,
            release_doc="**release**: the version keeps `@challenger` and the *candidate_model* Asset "
            f"starts **{cfg.name}_deployment** (staging, smoke test, canary, then `@champion`)"
            if cfg.deployment.enabled
            else "**promote**: `@champion` moves, the former gets `@previous`",
        ),
        default_args={
            "owner": cfg.owner,
            "retries": 2,
            "retry_delay": timedelta(seconds=15),
            "retry_exponential_backoff": True,
        },
        params={
            "backend": Param(
                default_backend,
                enum=backends,
                title="Training backend",
                description="Where `mlops train` runs. Offered: the model's backends that MLOPS_TRAINING_BACKENDS enables.",
            ),
            "training_window": Param(
                cfg.data.training_window, type="integer", minimum=1, title="Training window (batches)"
            ),
            "hyperparameters": Param(
                {},
                type="object",
                title="Hyperparameter overrides",
                description=f"Merged over the config's params for {cfg.training.estimator}.",
            ),
            "force_promote": Param(
                False,
                type="boolean",
                title="Force promote",
                description="Promote even if the gate fails (recorded).",
            ),
            "train_without_new_data": Param(
                False, type="boolean", title="Train even when no new batch arrived"
            ),
            "alert": Param(
                None,
                type=["null", "object"],
                title="Alert (set by the retraining DAG)",
                description="The alert that started this run: name, fingerprint, drifted features, report.",
            ),
        },
    )
    def training_dag() -> None:
        @task
        def validate(ti=None) -> list[dict]:
            """Great Expectations on every waiting batch; bad ones to quarantine and the run fails."""
            from airflow.sdk import conf
            from airflow.sdk.exceptions import AirflowFailException
            from mlops.config.settings import get_settings
            from mlops.data.landing import validate_landing
            from mlops_airflow.links import DataDocsLink, publish_link
            from mlops_airflow.reports_app import report_url

            s = get_settings()
            check = validate_landing(cfg, s.data_root, s.reports_root)
            if check.docs:
                base = conf.get("api", "base_url", fallback=s.airflow_url)
                publish_link(ti, DataDocsLink, report_url(base, s.reports_root, check.docs[-1]))
            if check.waiting:  # still being written: judged by a later run, never quarantined by a race
                print(f"left in landing, still being written: {', '.join(check.waiting)}")
            if check.rejected:
                raise AirflowFailException(check.error_message())
            return check.good

        @task(outlets=[validated])
        def version(batches: list[dict], params=None, dag_run=None):
            """Accepted batches into the DVC repo; the training set (window) at the new revision."""
            from airflow.sdk.exceptions import AirflowSkipException
            from mlops.config.settings import get_settings
            from mlops.data.landing import data_repo, version_batches

            s = get_settings()
            repo = data_repo(s)
            repo.ensure()
            accepted = version_batches(cfg, repo, batches, s.data_root, run_id=dag_run.run_id)
            new = [a for a in accepted if not a.duplicate]
            if not new and not params["train_without_new_data"]:
                raise AirflowSkipException(
                    f"no new batch for {cfg.name} ({len(accepted)} duplicate(s)); nothing to train. "
                    "Set train_without_new_data to retrain anyway."
                )
            ts = repo.training_set(cfg.name, int(params["training_window"]))
            yield Metadata(validated, {"rev": ts.rev, "digest": ts.digest, "paths": list(ts.paths)})
            return {"training_set": ts.to_dict(), "new_batches": [a.to_dict() for a in new]}

        @task
        def prepare_training(versioned: dict, params=None, ti=None, dag_run=None) -> dict:
            """The entrypoint's command line and environment, for whichever backend runs it."""
            from airflow.sdk.exceptions import AirflowFailException
            from mlops.config.settings import get_settings
            from mlops.training.spec import run_tags, training_spec
            from mlops_airflow.hooks import MlflowHook

            tags = run_tags(
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                try_number=ti.try_number,
                force_promote=params["force_promote"],
                alert=params.get("alert"),
            )
            try:
                return training_spec(
                    cfg,
                    versioned["training_set"],
                    backend=params["backend"],
                    offered=backends,
                    run_tags=tags,
                    hyperparameters=params["hyperparameters"],
                    models_dir=str(get_settings().models_dir),
                    tracking_uri=MlflowHook().tracking_uri(),
                )
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from exc

        spec = prepare_training(version(validate()))

        @task.branch
        def choose_backend(spec: dict) -> str:
            return f"train_{spec['backend']}"

        @task
        def train_local(spec: dict) -> dict:
            """The training entrypoint as a child process of this task."""
            from mlops_airflow.compute import run_local_training
            from mlops_airflow.hooks import MlflowHook

            return run_local_training(spec["argv"], {**spec["env"], **MlflowHook().env()})

        # One task per offered backend (and only those: a task outside the branch would always run).
        train_tasks = {}
        if "local" in backends:
            train_tasks["local"] = train_local(spec)
        # Container backends: the providers' operators configured from the model config.
        if "docker" in backends:
            from mlops_airflow.backends import docker_training_operator

            train_tasks["docker"] = docker_training_operator(
                cfg,
                task_id="train_docker",
                spec_xcom=spec,
                mounts=[str(defaults.data_root()), str(defaults.models_dir())],
            )
        if "kubernetes" in backends:
            from mlops_airflow.backends import kubernetes_training_operator

            train_tasks["kubernetes"] = kubernetes_training_operator(
                cfg, task_id="train_kubernetes", spec_xcom=spec
            )

        @task(trigger_rule="none_failed_min_one_success")
        def collect_result(ti=None) -> dict:
            """The training result of whichever backend ran, with links to MLflow."""
            from mlops_airflow.backends import training_result
            from mlops_airflow.hooks import MlflowHook
            from mlops_airflow.links import (
                MlflowModelVersionLink,
                MlflowRunLink,
                mlflow_run_url,
                mlflow_version_url,
                publish_link,
            )

            results = [r for r in ti.xcom_pull(task_ids=[f"train_{b}" for b in backends]) if r]
            if not results:
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException("no training task produced a result")
            result = training_result(results[0])
            uri = MlflowHook().tracking_uri()
            publish_link(ti, MlflowRunLink, mlflow_run_url(uri, result["experiment_id"], result["run_id"]))
            publish_link(
                ti, MlflowModelVersionLink, mlflow_version_url(uri, cfg.name, result["model_version"])
            )
            return result

        @task(
            retries=0, doc_md="Decision task: the gate is judged once; infrastructure errors fail it loudly."
        )
        def judge(trained: dict, params=None) -> dict:
            """The metric gate; the decision is recorded on the model version either way.

            An alert-driven retrain is judged with the config's ``retraining.gate_overrides``.
            """
            from mlops.gate.judge import judge_candidate
            from mlops_airflow.hooks import MlflowHook

            overrides = cfg.retraining.gate_overrides if params.get("alert") else None
            if overrides:
                print(f"alert-driven retrain: gate overrides {overrides} (retraining.gate_overrides)")
            result = judge_candidate(
                cfg, MlflowHook().tracking_uri(), trained["model_version"], trained["run_id"], overrides
            )
            return {**result.to_dict(), "summary": str(result), "version": trained["model_version"]}

        accept = "release" if cfg.deployment.enabled else "promote"

        @task.branch
        def decide(verdict: dict, params=None) -> str:
            return accept if verdict["decision"] == "passed" or params["force_promote"] else "reject_model"

        @task(task_id=accept, outlets=[candidate])
        def accept_candidate(verdict: dict, params=None):
            """Passed: hand over to the deployment DAG (release), or make it @champion directly (promote)."""
            from mlops.gate.judge import promote_candidate, release_candidate
            from mlops_airflow.hooks import MlflowHook

            forced = verdict["decision"] != "passed"
            uri = MlflowHook().tracking_uri()
            if cfg.deployment.enabled:
                release_candidate(cfg, uri, verdict["version"], forced=forced)
                former = None
            else:
                former = promote_candidate(cfg, uri, verdict["version"], forced=forced)
            yield Metadata(candidate, {"model": cfg.name, "version": verdict["version"], "forced": forced})
            return {"version": verdict["version"], "previous": former, "forced": forced, "step": accept}

        @task(retries=0, doc_md="Decision task: a rejected model fails the run here, never retried.")
        def reject_model(verdict: dict) -> None:
            """The candidate loses @challenger; the run fails with the gate's reasons."""
            from airflow.sdk.exceptions import AirflowFailException
            from mlops.gate.judge import reject_candidate
            from mlops_airflow.hooks import MlflowHook

            reject_candidate(cfg, MlflowHook().tracking_uri(), verdict["version"])
            raise AirflowFailException(
                f"MODEL REJECTED: version {verdict['version']} of {cfg.name}. {verdict['summary']}"
            )

        choice = choose_backend(spec)
        result = collect_result()
        for name in backends:
            choice >> train_tasks[name] >> result
        verdict = judge(result)
        decide(verdict) >> [accept_candidate(verdict), reject_model(verdict)]

    training_dag()


# A broken config raises ModelConfigError here: an import error naming the file and the field.
_platform_backends = defaults.training_backends()
for _path in discover_model_configs(defaults.models_dir()).values():
    build_training_dag(load_model_config(_path), str(_path), _platform_backends)
