"""Data versioning with DVC: accepted batches live in a git + DVC repository.

Layout (``<data_root>/repo`` by default)::

    repo/                       git repository, DVC initialised, default remote = MLOPS_DVC_REMOTE
      <model>/batches/00001-<sha16>-<original name>        the batch (DVC-tracked, git-ignored)
      <model>/batches/00001-<sha16>-<original name>.dvc    its pointer, with sha256 and origin in meta

Each accepted batch becomes one git commit (its revision) and is pushed to the DVC remote (a local
folder by default, any DVC remote URL by configuration). A batch is identified by the SHA-256 of its
bytes: landing the same bytes twice is a no-op. A training set is the ``window`` most recent batches
of a model at one revision; its revision and a digest of the member hashes are recorded as lineage.
Mutations hold a file lock, so runs of several models never interleave their git commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mlops.data.io import file_sha256
from mlops.fileio import locked

log = logging.getLogger(__name__)

_BATCH = re.compile(r"^(?P<seq>\d{5})-(?P<sha>[0-9a-f]{16})-(?P<name>.+)$")


def _batch_seq(path: Path) -> int:
    """The acceptance sequence number in an accepted batch's file name (``00042-<sha>-<name>``)."""
    m = _BATCH.match(path.name)
    assert m is not None, f"{path.name} is listed as an accepted batch but is not named like one"
    return int(m["seq"])


class VersioningError(RuntimeError):
    """git or DVC refused an operation; the message carries their output."""


class BatchChangedError(VersioningError):
    """A landing batch's bytes are not the ones that were validated: it is versioned only after a new check."""


@dataclass(frozen=True)
class AcceptedBatch:
    """One batch accepted into the data repository (or recognised as bytes accepted before)."""

    model: str
    path: str  # relative to the repo root
    sha256: str
    original_name: str
    rev: str  # git commit that added it
    duplicate: bool  # True: these bytes were accepted before; nothing new was versioned

    def to_dict(self) -> dict:
        """JSON-serialisable form (all fields)."""
        return asdict(self)


@dataclass(frozen=True)
class TrainingSet:
    """The accepted batches one training run reads, pinned to a commit of the data repository."""

    model: str
    repo: str
    rev: str
    paths: tuple[str, ...]  # relative to the repo root, oldest first
    digest: str  # sha256 over the member batches' sha256, in order

    def to_dict(self) -> dict:
        """JSON-serialisable form (all fields, ``paths`` as a list)."""
        return {**asdict(self), "paths": list(self.paths)}


class DataRepo:
    """A git + DVC repository of accepted batches, one folder per model, with a DVC remote for their bytes."""

    def __init__(self, root: str | Path, remote: str | None = None):
        self.root = Path(root)
        self.remote = remote or str(self.root.parent / "dvc-remote")

    # ------------------------------------------------------------------ plumbing
    def _git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "mlops",
            "GIT_AUTHOR_EMAIL": "mlops@localhost",
            "GIT_COMMITTER_NAME": "mlops",
            "GIT_COMMITTER_EMAIL": "mlops@localhost",
        }
        res = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise VersioningError(f"git {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout.strip()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root.parent / f".{self.root.name}.lock"):
            yield

    def ensure(self) -> None:
        """Create the repository (git + DVC + default remote) when missing. Idempotent."""
        with self._locked():
            self._ensure_unlocked()

    def _ensure_unlocked(self) -> None:
        if (self.root / ".dvc").is_dir() and (self.root / ".git").exists():
            return
        from dvc.repo import Repo

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / ".git").exists():
            self._git("init", "-q", "-b", "main")
        Repo.init(str(self.root))
        if "://" not in self.remote:
            Path(self.remote).mkdir(parents=True, exist_ok=True)
        with Repo(str(self.root)) as repo, repo.config.edit() as conf:
            conf["remote"]["storage"] = {"url": self.remote}
            conf["core"]["remote"] = "storage"
            conf["core"]["autostage"] = True
        self._git("add", "-A")
        self._git("commit", "-q", "-m", "Initialise data repository (DVC)")
        log.info("initialised data repository %s (remote %s)", self.root, self.remote)

    def head(self) -> str:
        """The commit the repository is at."""
        return self._git("rev-parse", "HEAD")

    # ------------------------------------------------------------------ batches
    def _batches_dir(self, model: str) -> Path:
        return self.root / model / "batches"

    def batches(self, model: str) -> list[Path]:
        """Accepted batches of ``model`` in acceptance order (workspace paths; listed by their ``.dvc``)."""
        folder = self._batches_dir(model)
        if not folder.is_dir():
            return []
        pointers = sorted(p for p in folder.glob("*.dvc") if _BATCH.match(p.name))
        return [p.with_suffix("") for p in pointers]

    def find(self, model: str, sha256: str) -> Path | None:
        """The accepted batch of ``model`` with exactly these bytes (by sha256), or None."""
        for p in self.batches(model):
            m = _BATCH.match(p.name)
            if m and m["sha"] == sha256[:16] and self._meta(p).get("sha256") == sha256:
                return p
        return None

    def accepted(self, model: str, sha256: str) -> AcceptedBatch | None:
        """The accepted batch with these bytes, or None."""
        found = self.find(model, sha256)
        if found is None:
            return None
        rel = str(found.relative_to(self.root))
        rev = self._git("log", "-n", "1", "--format=%H", "--", rel + ".dvc")
        return AcceptedBatch(
            model, rel, sha256, self._meta(found).get("original_name", found.name), rev, False
        )

    def _meta(self, batch: Path) -> dict:
        try:
            doc = yaml.safe_load(batch.with_name(batch.name + ".dvc").read_text())
        except OSError:
            return {}
        return (doc or {}).get("meta") or {}

    def _recover(self, model: str) -> None:
        """Drop what an interrupted ``accept`` left uncommitted (the landing file is still in place)."""
        if not self._git("status", "--porcelain", "--untracked-files=all", "--", model):
            return
        self._git("reset", "-q", "--", model)  # unstage what `dvc add` (autostage) staged
        for _ in range(2):  # restoring .gitignore can reveal the data file it was hiding
            status = self._git("status", "--porcelain", "--untracked-files=all", "--", model)
            if not status:
                return
            for line in status.splitlines():
                code, rel = line[:2], line[3:]
                if code == "??":
                    (self.root / rel).unlink(missing_ok=True)
                else:
                    self._git("checkout", "--", rel)
            log.warning("removed leftovers of an interrupted acceptance under %s/%s", self.root, model)

    def accept(
        self, model: str, src: str | Path, sha256: str | None = None, run_id: str | None = None
    ) -> AcceptedBatch:
        """Version ``src`` under ``model``: copy it into the repo, ``dvc add``, commit, ``dvc push``, and
        only then remove it from landing (so a crash at any point loses nothing).

        Bytes accepted before: nothing is versioned (``duplicate=True``) and ``src`` is left for the
        caller to archive, unless they were accepted under the same ``run_id`` (a retry of the same run:
        then the acceptance counts as this run's and the landing copy is removed).
        """
        from dvc.repo import Repo

        src = Path(src)
        sha = sha256 or file_sha256(src)
        with self._locked():
            self._ensure_unlocked()
            self._recover(model)
            existing = self.find(model, sha)
            if existing is not None:
                earlier = self.accepted(model, sha)
                assert earlier is not None
                same_run = run_id is not None and self._meta(existing).get("run_id") == run_id
                if same_run:
                    src.unlink(missing_ok=True)  # its bytes are committed and pushed already
                    log.info("%s was accepted by an earlier try of this run as %s", src.name, earlier.path)
                    return earlier
                log.info("batch %s duplicates %s (sha256 %s): nothing new", src.name, earlier.path, sha[:16])
                return AcceptedBatch(model, earlier.path, sha, src.name, earlier.rev, duplicate=True)
            folder = self._batches_dir(model)
            folder.mkdir(parents=True, exist_ok=True)
            seqs = [_batch_seq(p) for p in self.batches(model)]
            dest = folder / f"{max(seqs, default=0) + 1:05d}-{sha[:16]}-{src.name}"
            shutil.copy2(src, dest)
            if sha256 is not None and file_sha256(dest) != sha256:  # written to after it was validated
                dest.unlink()
                raise BatchChangedError(
                    f"{src.name} changed after it was validated (sha256 no longer {sha256[:16]}): not "
                    "versioned, left in landing; the next run validates it again"
                )
            try:
                with Repo(str(self.root)) as repo:
                    repo.add([str(dest)])
                dvc_file = dest.with_name(dest.name + ".dvc")
                doc = yaml.safe_load(dvc_file.read_text())
                doc["meta"] = {
                    "sha256": sha,
                    "original_name": src.name,
                    "accepted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    **({"run_id": run_id} if run_id else {}),
                }
                dvc_file.write_text(yaml.safe_dump(doc, sort_keys=False))
                self._git("add", "-A", model)
                self._git("commit", "-q", "-m", f"{model}: accept batch {src.name} (sha256 {sha[:16]})")
                rev = self.head()
                with Repo(str(self.root)) as repo:
                    repo.push()
            except BaseException:
                # Killed or failed before the commit: undo the half-add (the landing file is intact).
                # After the commit: the batch is versioned; a retry finds it by hash (same run_id).
                if (
                    self._git(
                        "log", "-n", "1", "--format=%H", "--", str(dest.relative_to(self.root)) + ".dvc"
                    )
                    == ""
                ):
                    self._recover(model)
                raise
            src.unlink()
            rel = str(dest.relative_to(self.root))
            log.info("accepted %s as %s at revision %s", src.name, rel, rev[:12])
            return AcceptedBatch(model, rel, sha, src.name, rev, duplicate=False)

    def training_set(self, model: str, window: int) -> TrainingSet:
        """The ``window`` most recent accepted batches of ``model`` at the current revision."""
        if window < 1:
            raise ValueError(f"training window must be >= 1, got {window}")
        batches = self.batches(model)[-window:]
        if not batches:
            raise VersioningError(f"no accepted batches for model {model!r} in {self.root}")
        shas = [self._meta(b).get("sha256") or file_sha256(b) for b in batches]
        digest = hashlib.sha256("".join(shas).encode()).hexdigest()
        return TrainingSet(
            model=model,
            repo=str(self.root),
            rev=self.head(),
            paths=tuple(str(b.relative_to(self.root)) for b in batches),
            digest=digest,
        )


def fetch_training_set(repo_url: str, rev: str, paths: list[str], dest: str | Path) -> list[Path]:
    """Materialise ``paths`` of the data repo at ``rev`` into ``dest`` through DVC (remote or cache).

    This is how a container or pod without the data folder reads its versioned training set.
    """
    import dvc.api

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for rel in paths:
        target = dest / Path(rel).name
        with dvc.api.open(rel, repo=repo_url, rev=rev, mode="rb") as src, open(target, "wb") as fh:
            shutil.copyfileobj(src, fh, length=1 << 20)
        out.append(target)
    return out
