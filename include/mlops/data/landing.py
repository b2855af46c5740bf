"""Landing, validation and versioning of new batches: the data steps of the training pipeline.

validate_landing  -> quarantine bad batches (moved byte-for-byte, report beside them)
version_batches   -> accepted batches into the DVC repo (duplicates archived, never re-versioned)

A batch still being written is left alone, never judged: names that are hidden or end in ``.part`` /
``.tmp`` (the usual "write, then rename" of uploaders) are not batches; a file modified in the last
``SETTLE_S`` seconds is watched for ``PROBE_S`` seconds and skipped if it grows; and a file that changes
while it is being validated is neither accepted nor quarantined. All three leave it in landing for the
next run (``LandingCheck.waiting``). A writer that may pause longer than the probe should write under a
temporary name and rename when done (an atomic rename on the same filesystem).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config.model import ModelConfig
from mlops.data.io import SUPPORTED_SUFFIXES, file_sha256
from mlops.data.versioning import AcceptedBatch, DataRepo

if TYPE_CHECKING:
    from mlops.config.settings import Settings

log = logging.getLogger(__name__)


def landing_dir(data_root: str | Path, model: str) -> Path:
    """Folder where new batches of ``model`` land: ``<data_root>/landing/<model>``."""
    return Path(data_root) / "landing" / model


def quarantine_dir(data_root: str | Path, model: str) -> Path:
    """Folder of the refused batches of ``model`` and their reports: ``<data_root>/quarantine/<model>``."""
    return Path(data_root) / "quarantine" / model


def duplicates_dir(data_root: str | Path, model: str) -> Path:
    """Folder of landed batches whose bytes were accepted before: ``<data_root>/duplicates/<model>``."""
    return Path(data_root) / "duplicates" / model


def data_repo(settings: Settings) -> DataRepo:
    """The git + DVC repository of accepted batches, ``<data_root>/repo``."""
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


#: A batch modified less than SETTLE_S seconds ago may still be arriving: it is watched for PROBE_S seconds.
SETTLE_S = 10.0
PROBE_S = 2.0


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def settled_batches(
    data_root: str | Path,
    model: str,
    *,
    settle_s: float = SETTLE_S,
    probe_s: float = PROBE_S,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Path], list[Path]]:
    """The waiting batches split into (complete, still being written).

    Only files modified in the last ``settle_s`` seconds are probed (one sleep of ``probe_s`` for all of
    them); a file whose size or modification time changed meanwhile is still being written.
    """
    batches = list_batches(data_root, model)
    fresh = {p: _signature(p) for p in batches if now() - p.stat().st_mtime < settle_s}
    if not fresh:
        return batches, []
    sleep(probe_s)
    moving = [p for p, sig in fresh.items() if not p.exists() or _signature(p) != sig]
    for p in moving:
        log.warning("%s is still being written: left in landing for the next run", p.name)
    return [p for p in batches if p not in moving and p.exists()], moving


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or a timestamped variant when that exists: nothing is ever overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return folder / f"{Path(name).stem}.{stamp}{Path(name).suffix}"


@dataclass(frozen=True)
class LandingCheck:
    """Outcome of validating the batches waiting in landing: the good, the refused, their Data Docs."""

    good: list[dict[str, str]]  # {"path", "sha256"} of each landing batch that passed validation
    rejected: list[dict[str, Any]]  # validation report dicts, with "quarantined_to"
    docs: list[str]  # Data Docs index.html per validated batch
    waiting: list[str] = field(default_factory=list)  # batches still being written: left in landing

    def error_message(self) -> str:
        """The task's failure message: one line per refused batch and where it is kept."""
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


def validate_landing(
    cfg: ModelConfig,
    data_root: str | Path,
    reports_dir: str | Path,
    *,
    settle_s: float = SETTLE_S,
    probe_s: float = PROBE_S,
) -> LandingCheck:
    """Validate every complete waiting batch with Great Expectations; quarantine the ones that fail."""
    from mlops.data.validation import validate_batch

    good, rejected, docs = [], [], []
    complete, moving = settled_batches(data_root, cfg.name, settle_s=settle_s, probe_s=probe_s)
    waiting = [p.name for p in moving]
    for path in complete:
        docs_dir = Path(reports_dir) / "data_docs" / cfg.name / path.stem
        before = _signature(path)
        crash: dict[str, Any] | None = None
        try:
            report = validate_batch(path, cfg, docs_dir=docs_dir)
        except Exception as exc:  # a batch that crashes the validator must not block every other batch
            log.exception("validating %s crashed", path.name)
            crash = {
                "batch": path.name,
                "success": False,
                "summary": f"Batch {path.name} REJECTED: validation crashed ({type(exc).__name__}: {exc}).",
                "error": traceback.format_exc(),
            }
        if not path.exists() or _signature(path) != before:  # written to while we read it: judge it later
            log.warning("%s changed while it was validated: left in landing for the next run", path.name)
            waiting.append(path.name)
            continue
        if crash is not None:
            crash["quarantined_to"] = str(quarantine(path, crash, data_root, cfg.name))
            rejected.append(crash)
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
    return LandingCheck(good=good, rejected=rejected, docs=docs, waiting=waiting)


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
