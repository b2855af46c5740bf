"""Steps of the training pipeline as plain functions: the DAG's tasks call these and nothing more.

validate_landing  -> quarantine bad batches (moved byte-for-byte, report beside them)
version_batches   -> accepted batches into the DVC repo (duplicates archived, never re-versioned)
training_set      -> the window of recent batches at one DVC revision
judge_candidate   -> the gate, with @champion scored on the candidate's own holdout
promote_candidate / reject_candidate
"""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.data import SUPPORTED_SUFFIXES, file_sha256
from mlops.gate import GatePolicy, GateResult, evaluate_gate
from mlops.modelconfig import ModelConfig
from mlops.registry import CHALLENGER, CHAMPION, alias_version, promote, record_gate, set_alias
from mlops.versioning import AcceptedBatch, DataRepo

if TYPE_CHECKING:
    from mlops.settings import Settings

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- folders


def landing_dir(data_root: str | Path, model: str) -> Path:
    return Path(data_root) / "landing" / model


def quarantine_dir(data_root: str | Path, model: str) -> Path:
    return Path(data_root) / "quarantine" / model


def duplicates_dir(data_root: str | Path, model: str) -> Path:
    return Path(data_root) / "duplicates" / model


def data_repo(settings: Settings) -> DataRepo:
    return DataRepo(Path(settings.data_root) / "repo", settings.dvc_remote)


def list_batches(data_root: str | Path, model: str) -> list[Path]:
    """Batch files waiting in ``<data_root>/landing/<model>/``, oldest name first (hidden files skipped)."""
    folder = landing_dir(data_root, model)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES
    )


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or a timestamped variant when that exists: nothing is ever overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return folder / f"{Path(name).stem}.{stamp}{Path(name).suffix}"


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class LandingCheck:
    good: list[dict[str, str]]  # {"path", "sha256"} of each landing batch that passed validation
    rejected: list[dict[str, Any]]  # validation report dicts, with "quarantined_to"
    docs: list[str]  # Data Docs index.html per validated batch

    def error_message(self) -> str:
        parts = [f"{len(self.rejected)} batch(es) refused and moved to quarantine:"]
        for r in self.rejected:
            parts.append(f"- {r['summary']} (kept intact at {r['quarantined_to']})")
        return "\n".join(parts)


def quarantine(path: Path, report: dict[str, Any], data_root: str | Path, model: str) -> Path:
    """Move ``path`` byte-for-byte into quarantine with its validation report beside it."""
    sha = file_sha256(path)
    target = _free_name(quarantine_dir(data_root, model), path.name)
    shutil.move(str(path), target)
    if file_sha256(target) != sha:  # cannot happen with a rename; checked because we promise it
        raise RuntimeError(f"quarantined copy of {path.name} differs from the original")
    report = {**report, "quarantined_to": str(target), "sha256": sha}
    target.with_name(target.name + ".validation.json").write_text(json.dumps(report, indent=2, default=str))
    log.warning("quarantined %s -> %s", path.name, target)
    return target


def validate_landing(cfg: ModelConfig, data_root: str | Path, reports_dir: str | Path) -> LandingCheck:
    """Validate every waiting batch with Great Expectations; quarantine the ones that fail."""
    from mlops.validation import validate_batch

    good, rejected, docs = [], [], []
    for path in list_batches(data_root, cfg.name):
        docs_dir = Path(reports_dir) / "data_docs" / cfg.name / path.stem
        try:
            report = validate_batch(path, cfg, docs_dir=docs_dir)
        except Exception as exc:  # a batch that crashes the validator must not block every other batch
            log.exception("validating %s crashed", path.name)
            d: dict[str, Any] = {
                "batch": path.name,
                "success": False,
                "summary": f"Batch {path.name} REJECTED: validation crashed ({type(exc).__name__}: {exc}).",
                "error": traceback.format_exc(),
            }
            d["quarantined_to"] = str(quarantine(path, d, data_root, cfg.name))
            rejected.append(d)
            continue
        if report.docs_path:
            docs.append(report.docs_path)
        if report.success:
            log.info(
                "%s: %d rows, %d expectations passed", path.name, report.row_count or 0, report.evaluated
            )
            good.append({"path": str(path), "sha256": file_sha256(path)})
        else:
            log.error("%s", report.summary())
            d = report.to_dict()  # includes the summary sentence
            d["quarantined_to"] = str(quarantine(path, d, data_root, cfg.name))
            rejected.append(d)
    return LandingCheck(good=good, rejected=rejected, docs=docs)


# ----------------------------------------------------------------------------- versioning


def version_batches(
    cfg: ModelConfig,
    repo: DataRepo,
    batches: list[dict[str, str]],
    data_root: str | Path,
    run_id: str | None = None,
) -> list[AcceptedBatch]:
    """Accept each validated batch (``{"path", "sha256"}``) into the DVC repo.

    A duplicate of an earlier batch is archived, not versioned again. Idempotent under retries: a
    batch that an earlier try of this run already accepted is found by its hash and counted as new.
    """
    out = []
    for b in batches:
        p, sha = Path(b["path"]), b["sha256"]
        if not p.exists():
            earlier = repo.accepted(cfg.name, sha)
            if earlier is None:
                raise FileNotFoundError(f"{p} vanished from landing and is not in the data repository")
            log.info("%s was accepted by an earlier try of this run as %s", p.name, earlier.path)
            out.append(earlier)
            continue
        accepted = repo.accept(cfg.name, p, sha, run_id=run_id)
        if accepted.duplicate:
            archived = _free_name(duplicates_dir(data_root, cfg.name), p.name)
            shutil.move(str(p), archived)
            log.info("%s duplicates %s; archived to %s", p.name, accepted.path, archived)
        out.append(accepted)
    return out


# ----------------------------------------------------------------------------- gate


def _split_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    holdout = {k: v for k, v in metrics.items() if not k.startswith("train_")}
    train = {k[len("train_") :]: v for k, v in metrics.items() if k.startswith("train_")}
    return holdout, train


def judge_candidate(cfg: ModelConfig, tracking_uri: str, version: str, run_id: str) -> GateResult:
    """Gate a registered version: absolute bounds, overfitting, and (when one exists) @champion
    scored on the candidate's own holdout with a paired bootstrap. The decision is recorded on the
    version (tags + ``gate/gate.json``) whatever it is."""
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from mlops.evaluation import classification_metrics, holdout_scores, paired_bootstrap
    from mlops.training import HOLDOUT_ARTIFACT, SCORE_COLUMN

    client = MlflowClient(tracking_uri)
    name = cfg.registered_model_name
    candidate, train = _split_metrics(client.get_run(run_id).data.metrics)
    policy = GatePolicy.from_config(cfg.gate)

    champion_version = alias_version(client, name, CHAMPION)
    champion_metrics, ci = None, None
    if champion_version is not None and champion_version != str(version):
        path = download_artifacts(run_id=run_id, artifact_path=HOLDOUT_ARTIFACT, tracking_uri=tracking_uri)
        holdout = pd.read_parquet(path)
        y = holdout[cfg.target].to_numpy()
        new = holdout[SCORE_COLUMN].to_numpy()
        old = holdout_scores(cfg, tracking_uri, f"models:/{name}/{champion_version}", holdout)
        champion_metrics = classification_metrics(y, old, cfg.training.decision_threshold)
        if cfg.gate.bootstrap_samples > 0:
            ci = paired_bootstrap(
                y, new, old, metric=cfg.gate.primary_metric, samples=cfg.gate.bootstrap_samples,
                confidence=cfg.gate.confidence, seed=cfg.training.seed, threshold=cfg.training.decision_threshold,
            )  # fmt: skip
    result = evaluate_gate(
        policy, candidate, train=train, champion=champion_metrics, champion_version=champion_version, ci=ci
    )
    for check in result.checks:
        log.info("gate %s: %s", "ok  " if check.passed else "FAIL", check.reason)
    record_gate(client, name, str(version), run_id, result)
    return result


def promote_candidate(cfg: ModelConfig, tracking_uri: str, version: str, forced: bool = False) -> str | None:
    """``version`` becomes @champion (the former one @previous). A forced promotion is tagged as such."""
    client = _forced(cfg, tracking_uri, version, forced)
    return promote(client, cfg.registered_model_name, str(version))


def release_candidate(cfg: ModelConfig, tracking_uri: str, version: str, forced: bool = False) -> None:
    """``version`` stays @challenger for the deployment DAG to take to production (recorded if forced)."""
    client = _forced(cfg, tracking_uri, version, forced)
    set_alias(client, cfg.registered_model_name, CHALLENGER, str(version))


def _forced(cfg: ModelConfig, tracking_uri: str, version: str, forced: bool):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    if forced:
        client.set_model_version_tag(cfg.registered_model_name, str(version), "gate.forced", "true")
        log.warning("version %s accepted by force_promote despite its gate decision", version)
    return client


def reject_candidate(cfg: ModelConfig, tracking_uri: str, version: str) -> None:
    """A rejected version loses @challenger; @champion is untouched."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    if alias_version(client, cfg.registered_model_name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(cfg.registered_model_name, CHALLENGER)
