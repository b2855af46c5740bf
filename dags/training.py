"""Training pipeline DAGs: one ``<model>_training`` DAG per model config file.

Thin wiring only: the work is in ``mlops.pipeline`` / ``mlops.training`` (domain) and
``mlops_airflow`` (glue). Heavy libraries are imported inside tasks, never at parse time.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from mlops.modelconfig import ModelConfig, discover_model_configs, load_model_config, models_dir_from_env

DOC = """
### {name}: training pipeline

{description}

**What it does**: collects the batches waiting in `landing/{name}/`, trains `{estimator}` through the
`mlops train` entrypoint on the **{backend}** backend, logs the run to MLflow and registers a new
version of the registered model **`{name}`** (alias `@challenger`), then applies the metric gate
(absolute bounds from the model config). Pass: the version becomes `@champion` (the former one
`@previous`). Fail: the run fails at `gate` with the reasons; `@champion` is untouched.

**Trigger by hand**: *Trigger* in the UI (the form accepts hyperparameter overrides), or
`airflow dags trigger {name}_training`.

**Config**: `{config}`. Owner: {owner}.
"""


def build_training_dag(cfg: ModelConfig, config_path: str) -> None:
    backend = cfg.training.backend or "MLOPS_TRAINING_BACKEND (default local)"

    @dag(
        dag_id=f"{cfg.name}_training",
        schedule=cfg.schedule,
        # No start_date: the first scheduled run is the next one in the future, so unpausing the DAG
        # (as `make demo` does) never fires a surprise run for the interval that just passed.
        catchup=False,
        max_active_runs=1,
        tags=[f"model:{cfg.name}", "stage:training"],
        doc_md=DOC.format(
            name=cfg.name,
            description=cfg.description,
            estimator=cfg.training.estimator,
            backend=backend,
            config=config_path,
            owner=cfg.owner,
        ),
        default_args={
            "owner": cfg.owner,
            "retries": 2,
            "retry_delay": timedelta(seconds=20),
            "retry_exponential_backoff": True,
        },
        params={
            "hyperparameters": Param(
                {},
                type="object",
                title="Hyperparameter overrides",
                description=f'Merged over the config\'s params for {cfg.training.estimator}, e.g. {{"max_iter": 300}}.',
            ),
        },
    )
    def training_dag() -> None:
        @task
        def collect_batches() -> list[str]:
            """Batches waiting in the model's landing folder."""
            from mlops.pipeline import landing_dir, list_batches
            from mlops.settings import get_settings

            data_root = get_settings().data_root
            batches = list_batches(data_root, cfg.name)
            if not batches:
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(
                    f"no batch files (.csv/.parquet) in {landing_dir(data_root, cfg.name)}; "
                    f"land one, e.g. `mlops generate --model {cfg.name} --rows 5000 --out <that folder>/batch.csv`"
                )
            return [str(b) for b in batches]

        @task
        def train(batches: list[str], params: dict | None = None, ti=None, dag_run=None) -> dict:
            """Run the training entrypoint on the configured compute backend."""
            from mlops.settings import get_settings
            from mlops_airflow.compute import run_local_training
            from mlops_airflow.hooks import MlflowHook

            backend = cfg.training.backend or get_settings().training_backend
            if backend != "local":
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"training backend {backend!r} is not available yet; use 'local'")
            tags = {
                "airflow.dag_id": dag_run.dag_id,
                "airflow.run_id": dag_run.run_id,
                "airflow.try_number": str(ti.try_number),
            }
            return run_local_training(
                cfg.name,
                batches,
                env=MlflowHook().env(),
                tags=tags,
                params=(params or {}).get("hyperparameters") or None,
                models_dir=str(get_settings().models_dir),
            )

        @task(retries=0, doc_md="Decision task: a failed gate is a rejected model and never retries.")
        def gate(trained: dict) -> dict:
            """Metric gate on the new version; promote to @champion when it passes."""
            from airflow.sdk.exceptions import AirflowFailException
            from mlops.gate import GateFailed
            from mlops.pipeline import gate_and_promote
            from mlops_airflow.hooks import MlflowHook

            try:
                outcome = gate_and_promote(
                    cfg, MlflowHook().tracking_uri(), trained["model_version"], trained["run_id"]
                )
            except GateFailed as exc:
                raise AirflowFailException(
                    f"model version {trained['model_version']} rejected: {exc}"
                ) from exc
            return {
                "decision": outcome.result.decision,
                "reasons": outcome.result.reasons,
                "version": outcome.version,
                "promoted": outcome.promoted,
                "former_champion": outcome.former_champion,
            }

        gate(train(collect_batches()))

    training_dag()


# A broken config raises ModelConfigError here: an import error naming the file and the field.
for _path in discover_model_configs(models_dir_from_env()).values():
    build_training_dag(load_model_config(_path), str(_path))
