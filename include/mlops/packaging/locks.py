"""The image locks (``infra/images/requirements-<target>.txt``, hash-checked) and their wheelhouse.

The locks live in the platform's source tree (:func:`source_root`: ``MLOPS_SOURCE_DIR``, else the
project). :func:`download_wheels` puts every distribution of a lock in the build context, each file
checked against the lock's hashes, so the build itself needs no network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlops.config import defaults
from mlops.data.io import file_sha256
from mlops.packaging.errors import ImageError, log_tail
from mlops.packaging.refs import check_target

__all__ = [
    "dist_of_file",
    "download_wheels",
    "images_dir",
    "lock_file",
    "normalize_dist",
    "parse_lock",
    "parse_lock_hashes",
    "source_root",
    "wheel_sets",
]


def source_root() -> Path:
    """The platform's source tree the images are built from (``MLOPS_SOURCE_DIR``, else the project)."""
    return defaults.source_dir()


def images_dir() -> Path:
    """``infra/images`` of the source tree: the image locks and the base image script."""
    return source_root() / "infra" / "images"


_REQ_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize_dist(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, str]:
    """``{normalised name: version}`` of a ``uv pip compile`` lock (``name==version`` lines)."""
    return {name: version for name, (version, _) in parse_lock_hashes(text).items()}


def parse_lock_hashes(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``{normalised name: (version, {sha256 hex, ...})}`` of a lock made with ``--generate-hashes``."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        m = _REQ_LINE.match(stripped)
        if m:
            current = normalize_dist(m.group(1))
            pins[current] = (m.group(2), set())
        elif stripped and not stripped.startswith(("--hash=", "#")):
            current = None  # another option line: hashes that follow are not this pin's
        if current:
            pins[current][1].update(re.findall(r"--hash=sha256:([0-9a-f]{64})", stripped))
    return {k: (v, frozenset(h)) for k, (v, h) in pins.items()}


def _pick_from_cache(cache: Path, pins: dict[str, tuple[str, frozenset[str]]]) -> dict[str, Path]:
    """One file per pin whose sha256 is one of the lock's hashes for it (a wheel before an sdist)."""
    picked: dict[str, Path] = {}
    for f in sorted(cache.iterdir(), key=lambda p: (p.suffix != ".whl", p.name)):
        dist = dist_of_file(f.name)
        if not dist or dist[0] in picked or dist[0] not in pins or pins[dist[0]][0] != dist[1]:
            continue
        if file_sha256(f) in pins[dist[0]][1]:
            picked[dist[0]] = f
    return picked


def dist_of_file(filename: str) -> tuple[str, str] | None:
    """(normalised name, version) of a wheel or sdist file name, None for anything else."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (normalize_dist(parts[0]), parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            name, sep, version = filename[: -len(ext)].rpartition("-")
            return (normalize_dist(name), version) if sep else None
    return None


def lock_file(target: str) -> Path:
    """The lock of ``target``'s image (``requirements-serving.txt``, ``requirements-training.txt``)."""
    return images_dir() / f"requirements-{target}.txt"


def wheel_sets(target: str) -> dict[str, frozenset[str]]:
    """Which pins go in which wheelhouse folder: ``serving`` (the serving lock; the shared dependency
    layer of both images) and, for training, ``training`` (the rest of the training lock)."""
    check_target(target)
    serving = frozenset(parse_lock(lock_file("serving").read_text()))
    if target == "serving":
        return {"serving": serving}
    return {
        "serving": serving,
        "training": frozenset(parse_lock(lock_file("training").read_text())) - serving,
    }


def download_wheels(target: str, dest: Path, cache: Path | None = None, timeout: float = 900) -> list[Path]:
    """The distributions of ``target``'s lock in ``dest/<set>/`` (see :func:`wheel_sets`), each file
    checked against the lock's hashes.

    Downloaded once into ``cache`` (default ``$MLOPS_HOME/image-wheels``) by ``pip download
    --require-hashes``; later builds find them there (sha256 checked again, no pip, no network) and
    hard-link (or copy) them into ``dest``. An sdist-only package stays an sdist (the builder builds it).
    """
    lock = lock_file(target)
    pins = parse_lock_hashes(lock.read_text())
    if not all(hashes for _, hashes in pins.values()):
        raise ImageError(f"{lock} has pins without --hash lines: regenerate it with --generate-hashes")
    if cache is None:
        from mlops.config.settings import get_settings

        cache = get_settings().home / "image-wheels"
    cache.mkdir(parents=True, exist_ok=True)
    picked = _pick_from_cache(cache, pins)
    if set(picked) != set(pins):  # something missing: pip fetches it (and checks every hash again)
        import importlib.util

        if importlib.util.find_spec("pip") is None:
            raise ImageError(
                f"{len(set(pins) - set(picked))} files of {lock.name} are not in {cache} and this Python "
                f"({sys.executable}) has no pip to download them; install pip, or build with wheels=False "
                "(PIP_OFFLINE=0: the build fetches them from PyPI)"
            )
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-deps", "--require-hashes", "-r", str(lock), "-d", str(cache)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ImageError(
                f"downloading the wheels of {lock.name} failed (pip exit {proc.returncode}): "
                f"{log_tail(proc.stderr or proc.stdout, 15)}"
            )
        picked = _pick_from_cache(cache, pins)
    missing = sorted(set(pins) - set(picked))
    if missing:
        raise ImageError(f"no file matching the hashes of {lock.name} for {missing} in {cache}")
    out = []
    for folder, names in wheel_sets(target).items():
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for dist in sorted(names):
            f = picked[dist]
            target_path = dest / folder / f.name
            try:
                os.link(f, target_path)
            except OSError:
                shutil.copy2(f, target_path)
            out.append(target_path)
    return out
