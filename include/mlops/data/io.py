"""Reading batches and assembling training sets (CSV or Parquet, chosen by extension)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config.model import ModelConfig

SUPPORTED_SUFFIXES = (".csv", ".parquet")


class BatchReadError(ValueError):
    """A batch file cannot be read as a table. The message names the file and the cause."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, streamed (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_batch(path: str | Path, columns: list[str] | None = None, arrow: bool = False) -> pd.DataFrame:
    """Read one CSV or Parquet file (by extension): the one table reader of the platform.

    ``columns``: read only these (a missing one is named in the error). ``arrow``: keep the columns
    Arrow-backed (no second copy in pandas blocks, roughly half the peak memory of a large batch; what
    the drift check reads with). Raises :class:`BatchReadError` naming the file on any problem.
    """
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise BatchReadError(f"{path.name}: unsupported file type {suffix!r} (use .csv or .parquet)")
    if not path.is_file():
        raise BatchReadError(f"data file not found: {path}")
    backend = {"dtype_backend": "pyarrow"} if arrow else {}
    try:
        if path.stat().st_size == 0:
            raise BatchReadError(f"{path.name}: file is empty (0 bytes)")
        if suffix == ".csv":
            if columns is not None:
                _require(path, pd.read_csv(path, nrows=0).columns.tolist(), columns)
            return pd.read_csv(
                path, usecols=columns, encoding="utf-8", encoding_errors="strict", low_memory=False, **backend
            )
        if columns is not None:
            import pyarrow.parquet as pq

            _require(path, pq.read_schema(path).names, columns)
        return pd.read_parquet(path, columns=columns, **backend)
    except BatchReadError:
        raise
    except UnicodeDecodeError as exc:
        raise BatchReadError(
            f"{path.name}: not valid UTF-8 text ({exc.reason}: {exc.object[exc.start : exc.end]!r})"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise BatchReadError(f"{path.name}: no columns to parse (empty or blank file)") from exc
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise BatchReadError(f"{path.name}: cannot be parsed: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own hierarchy for truncated/corrupt Parquet
        raise BatchReadError(f"{path.name}: cannot be read: {type(exc).__name__}: {exc}") from exc


def _require(path: Path, have: list[str], want: list[str]) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        raise BatchReadError(f"{path.name} lacks column(s) {missing}")


def load_training_frame(paths: Iterable[str | Path], cfg: ModelConfig) -> pd.DataFrame:
    """Concatenate batches into one training frame with exactly the config's columns."""
    import pandas as pd

    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("no batch files given for the training set")
    wanted = [cfg.id_column, *cfg.features.all, cfg.target]
    frames = []
    for p in files:
        df = read_batch(p)
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise BatchReadError(f"{p.name}: missing columns {missing}")
        frames.append(df[wanted])
    return pd.concat(frames, ignore_index=True)
