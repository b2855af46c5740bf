"""Deployment and rollback DAGs: ``<model>_deployment`` and ``<model>_rollback`` per model config.

Thin wiring only: the work is in ``mlops.deploy`` (domain: targets, rollout policy, smoke test, records)
and ``mlops_airflow.rollout`` (the deferrable rollout operator).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from mlops.config import defaults
from mlops.config.model import ModelConfig, discover_model_configs, load_model_config
from mlops_airflow.assets import candidate_model_asset, champion_model_asset
from mlops_airflow.rollout import RolloutOperator

DOC = """
### {name}: deployment to production

Runs when the training pipeline hands over a candidate (the *{name}_candidate_model* Asset), or by
hand with the form. Target **{target}**, strategy **{strategy}** by default.

1. **resolve_candidate**: the form's version, else the Asset event's, else `@challenger`; it must
   have passed the offline gate (or be forced). Already `@champion`: nothing to do (skipped).
2. {build_doc}**deploy_staging**: the candidate starts next to production, taking no user traffic.
3. **smoke_test**: ready, version, response schema on a holdout sample, scores equal to the offline
   model's, single-row p95 latency bound. A failure removes the candidate.
{approval_doc}4. **rollout**: canary (traffic steps {steps} %, each step analysed: error rate, p95 latency,
   score distribution vs stable; too little traffic = no verdict) or blue-green (switch, analyse,
   blue kept warm). Failed analysis = automatic rollback: all traffic to stable, candidate removed,
   `@champion` unchanged. Success: `@champion` moves, the former becomes `@previous`.
5. **record**: one record on the model version (offline gate, smoke test, every window, approval,
   decision) as tags and `deploy/record.json`; the run fails unless the candidate was promoted.

One action back: trigger **{name}_rollback**. Config: `{config}`.
"""


def build_deployment_dag(cfg: ModelConfig, config_path: str) -> None:
    # Long by design: the DAG's tasks are defined inline, in graph order, so the file reads as the DAG
    # (each task body is a few lines of wiring into include/; the logic and its tests live there).
    dep = cfg.deployment
    candidate_asset = candidate_model_asset(cfg.name)
    kind = defaults.deploy_target(dep.target)
    build = dep.build_image if dep.build_image is not None else kind == "kubernetes"

    @dag(
        dag_id=f"{cfg.name}_deployment",
        schedule=[candidate_asset],
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=[f"model:{cfg.name}", "stage:deployment"],
        doc_md=DOC.format(
            name=cfg.name,
            target=kind,
            strategy=dep.strategy,
            steps=" → ".join(map(str, dep.steps)),
            approval_doc="   **approve**: a person approves production in the UI (Required actions).\n"
            if dep.approval
            else "",
            config=config_path,
            build_doc="**build_image** (serving image pushed, digest recorded on the version), then "
            if build
            else "",
        ),
        default_args={
            "owner": cfg.owner,
            "retries": 2,
            "retry_delay": timedelta(seconds=10),
            "retry_exponential_backoff": True,
        },
        params={
            "version": Param(
                None,
                type=["null", "string"],
                title="Model version",
                description="Empty: the version the training run handed over, else @challenger.",
            ),
            "strategy": Param(dep.strategy, enum=["canary", "blue_green"], title="Strategy"),
            "steps": Param(
                dep.steps,
                type="array",
                items={"type": "integer", "minimum": 1, "maximum": 100},
                title="Canary steps (%)",
                description="Rising traffic weights ending at 100.",
            ),
            "analysis": Param(
                {},
                type="object",
                title="Analysis overrides",
                description="Keys of the config's deployment.analysis to change for this run "
                "(window_s, min_requests, max_wait_s, max_error_rate, max_p95_ratio, max_score_shift...); recorded.",
            ),
            "allow_replay_only": Param(
                False,
                type="boolean",
                title="Allow promotion on replayed traffic alone",
                description="Off: an analysis window that no live request reached (only replayed logged "
                "requests) never passes; it waits for live traffic, then rolls back. On: replayed traffic "
                "may decide (added to this run's analysis overrides; recorded).",
            ),
            "force": Param(
                False,
                type="boolean",
                title="Deploy even if the offline gate failed",
                description="Recorded on the version.",
            ),
        },
    )
    def deployment_dag() -> None:
        @task(retries=0, doc_md="Decision task: which version, against which stable.")
        def resolve_candidate(params=None, triggering_asset_events=None, ti=None):
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
            from mlops.deploy import service
            from mlops_airflow.hooks import MlflowHook
            from mlops_airflow.links import MlflowModelVersionLink, mlflow_version_url, publish_link

            from_event = None
            for events in (triggering_asset_events or {}).values():
                for ev in events:
                    from_event = (ev.extra or {}).get("version") or from_event
            uri = MlflowHook().tracking_uri()
            try:
                cand = service.resolve_candidate(
                    cfg, uri, params["version"] or None, from_event, params["force"]
                )
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from exc
            if cand is None:
                raise AirflowSkipException(f"{cfg.name}: no candidate that is not already @champion")
            publish_link(ti, MlflowModelVersionLink, mlflow_version_url(uri, cfg.name, cand["version"]))
            try:
                return service.deployment_plan(
                    cfg,
                    cand,
                    strategy=params["strategy"],
                    steps=params["steps"],
                    analysis_overrides=params["analysis"],
                    allow_replay_only=bool(params.get("allow_replay_only")),
                )
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from exc

        @task
        def build_image(cand: dict) -> str:
            """The serving image of this version, pushed; deployments use its digest, never a tag."""
            from mlops.packaging import build_and_push, record_image
            from mlops.registry import mlflow_client
            from mlops_airflow.hooks import MlflowHook

            uri = MlflowHook().tracking_uri()
            ref = build_and_push(cfg.name, cand["version"], tracking_uri=uri)
            record_image(mlflow_client(uri), cfg.name, cand["version"], ref)
            print(f"pushed {ref.by_digest}")
            return ref.by_digest

        @task
        def deploy_staging(cand: dict, image: str | None = None) -> dict:
            from mlops.deploy import rollout, service
            from mlops_airflow.hooks import MlflowHook

            uri = MlflowHook().tracking_uri()
            target = service.make_target(cfg, uri)
            role = rollout.candidate_role(cand["strategy"])
            backend = target.deploy(role, cand["version"], image=image)
            info = {
                "target": target.kind,
                "role": role,
                "url": backend.url,
                "endpoint": target.endpoint(),
                "image": image,
            }
            service.tag(uri, cfg.name, cand["version"], "staging", info)
            return info

        @task(retries=0, doc_md="Decision task: a failed smoke test removes the candidate, never retried.")
        def smoke_test(cand: dict, staged: dict) -> dict:
            from airflow.sdk.exceptions import AirflowFailException
            from mlops.config.settings import Settings
            from mlops.deploy import service
            from mlops.deploy.smoke import smoke_test as run_smoke
            from mlops_airflow.hooks import MlflowHook

            uri = MlflowHook().tracking_uri()
            features, scores = service.holdout_sample(cfg, uri, cand["run_id"], dep.smoke.rows)
            headers = Settings().endpoint_headers()  # the endpoint's token, when it requires one
            result = run_smoke(staged["url"], cand["version"], features, scores, dep.smoke, headers=headers)
            service.tag(uri, cfg.name, cand["version"], "smoke", result.to_dict())
            for c in result.checks:
                print(f"smoke {c['name']:<14} {'ok ' if c['ok'] else 'FAIL'} {c['detail']}")
            if not result.passed:
                service.make_target(cfg, uri).remove(staged["role"])
                raise AirflowFailException(
                    f"SMOKE TEST FAILED: {cfg.name} v{cand['version']}: " + "; ".join(result.failures())
                )
            return result.to_dict()

        cand = resolve_candidate()
        staged = deploy_staging(cand, build_image(cand)) if build else deploy_staging(cand)
        smoke = smoke_test(cand, staged)
        roll = RolloutOperator(
            task_id="rollout",
            model=cfg.name,
            candidate="{{ ti.xcom_pull(task_ids='resolve_candidate') }}",
            strategy="{{ ti.xcom_pull(task_ids='resolve_candidate')['strategy'] }}",
            steps="{{ ti.xcom_pull(task_ids='resolve_candidate')['steps'] }}",
            retries=0,
            doc_md="Decision task: canary/blue-green analysis; a failed analysis rolls back, never retried.",
        )
        if dep.approval:
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Put {cfg.name} in production?",
                body=(
                    "Version {{ ti.xcom_pull(task_ids='resolve_candidate')['version'] }} passed the offline "
                    "gate and its smoke test. Approve to start the rollout; reject to stop here."
                ),
                response_timeout=timedelta(hours=dep.approval_timeout_h),
                defaults="Reject",
                retries=0,
                doc_md="Decision task: a human approves production.",
            )
            smoke >> approve >> roll
        else:
            smoke >> roll

        @task(
            trigger_rule="all_done",
            retries=0,
            outlets=[champion_model_asset(cfg.name)],
            doc_md="Decision task: writes the record, fails unless promoted (success = a new champion event).",
        )
        def record(ti=None, outlet_events=None) -> dict:
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
            from mlops.deploy import service
            from mlops_airflow.hooks import MlflowHook

            cand = ti.xcom_pull(task_ids="resolve_candidate")
            if not cand:
                raise AirflowSkipException("no candidate: nothing to record")
            uri = MlflowHook().tracking_uri()
            if dep.approval:
                answer = ti.xcom_pull(task_ids="approve")
                if answer:
                    service.tag(uri, cfg.name, cand["version"], "approval", {
                        "approved": answer.get("chosen_options") == ["Approve"],
                        "by": answer.get("responded_by_user"),
                    })  # fmt: skip
            rec = service.final_record(uri, cfg.name, cand["version"])
            ti.xcom_push(key="record", value=rec)  # kept when the task fails below
            print(f"{cfg.name} v{cand['version']}: {rec['decision']}")
            if rec["decision"] != "promoted":
                raise AirflowFailException(f"{cfg.name} v{cand['version']} not promoted: {rec['decision']}")
            outlet_events[champion_model_asset(cfg.name)].extra = service.champion_event(
                uri, cfg, cand["version"]
            )
            return rec

        roll >> record()

    deployment_dag()


def build_rollback_dag(cfg: ModelConfig, config_path: str) -> None:
    @dag(
        dag_id=f"{cfg.name}_rollback",
        schedule=None,
        catchup=False,
        max_active_runs=1,
        tags=[f"model:{cfg.name}", "stage:deployment"],
        doc_md=(
            f"### {cfg.name}: roll production back to `@previous`\n\nOne action: the `@previous` version "
            "takes all traffic (at once if it is still warm after a blue-green switch), `@champion` moves "
            f"to it, and the version rolled back from is tagged. Config: `{config_path}`."
        ),
        default_args={"owner": cfg.owner, "retries": 0},
    )
    def rollback_dag() -> None:
        @task(
            outlets=[champion_model_asset(cfg.name)],
            doc_md="Decision task: an operator asked for it; never retried.",
        )
        def rollback(outlet_events=None) -> dict:
            from mlops.deploy import service
            from mlops_airflow.hooks import MlflowHook

            uri = MlflowHook().tracking_uri()
            done = service.rollback(cfg, uri, service.make_target(cfg, uri))
            outlet_events[champion_model_asset(cfg.name)].extra = service.champion_event(uri, cfg, done["to"])
            return done

        rollback()

    rollback_dag()


for _path in discover_model_configs(defaults.models_dir()).values():
    _cfg = load_model_config(_path)
    if _cfg.deployment.enabled:
        build_deployment_dag(_cfg, str(_path))
        build_rollback_dag(_cfg, str(_path))
