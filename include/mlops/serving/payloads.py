"""Request and response bodies of the scoring endpoints, and every 4xx the server answers.

``POST /invocations`` takes the payloads of ``mlflow models serve`` (:data:`MLFLOW_FORMATS`;
``params`` ignored) and answers ``{"predictions": [...]}``; ``POST /predict`` takes the same and
answers ``{"predictions": [{"class": ..., "score": ...}], "model_version": ..., "variant": ...}``.

Input rows are checked against the model's input columns (:class:`Column`, from its signature) before
the model sees them: a missing or wrongly typed field is a 422 naming the field, a malformed body a
400, a body over the size limit a 413, an unsupported content type a 415 (:class:`InputError`). Whole
floats are accepted for integer columns and integers for float columns; ``null`` is accepted for float
columns (the pipeline's imputer sees NaN). No pandas on this path: columns are plain lists.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

_INT64 = (-(2**63), 2**63 - 1)
_NONE = type(None)
_ERROR_CODES = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


@dataclass(frozen=True)
class Column:
    """One input column of the model: its name, kind (int | float | str | bool | any) and numpy dtype."""

    name: str
    kind: str  # int | float | str | bool | any
    dtype: Any
    required: bool
    type_name: str


def error_body(code: str, message: str) -> bytes:
    """An MLflow-style error body: ``{"error_code": ..., "message": ...}``."""
    return orjson.dumps({"error_code": code, "message": message})


class InputError(Exception):
    """A request the server refuses: status, MLflow-style error body, and the field when known."""

    def __init__(self, status: int, message: str, field: str | None = None, row: int | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.row = status, message, field, row

    def body(self) -> bytes:
        """The JSON error body (``field`` and ``row`` included when known)."""
        out: dict[str, Any] = {
            "error_code": _ERROR_CODES.get(self.status, "INVALID_PARAMETER_VALUE"),
            "message": self.message,
        }
        if self.field is not None:
            out["field"] = self.field
        if self.row is not None:
            out["row"] = self.row
        return orjson.dumps(out)


# ------------------------------------------------------------------------------------------ the body


async def read_body(
    scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], limit: int
) -> bytes:
    """The request body, refused before it is read when its headers say so (413, 415, 400)."""
    ctype = None
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                size = int(v)
            except ValueError:
                raise InputError(400, "invalid Content-Length") from None
            if size > limit:
                raise InputError(413, f"the body has {size} bytes, more than the limit {limit}")
        elif k == b"content-type":
            ctype = v.decode("latin-1")
    if ctype is not None:
        mime, _, params = ctype.partition(";")
        if mime.strip().lower() != "application/json":
            raise InputError(415, f"only application/json is supported, got {ctype!r}")
        charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.I)
        if charset and charset[1].lower() not in ("utf-8", "utf8"):
            raise InputError(415, "the scoring server only supports UTF-8")
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise InputError(400, "client disconnected")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"the body is larger than the limit {limit} bytes")
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """The parsed body; invalid JSON is a 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(400, f"the body is not valid JSON: {exc}") from None


def parse_payload(payload: Any, cols: list[Column]) -> tuple[dict[str, list], int]:
    """Columns (name -> checked values) and row count of an MLflow scoring payload."""
    if type(payload) is not dict:
        raise InputError(400, f"the body must be a JSON object with exactly one of {list(MLFLOW_FORMATS)}")
    keys = [k for k in MLFLOW_FORMATS if k in payload]
    if len(keys) != 1:
        raise InputError(
            400,
            f"the body must be a JSON object with exactly one of {list(MLFLOW_FORMATS)}; got {sorted(payload)}",
        )
    fmt = keys[0]
    value = payload[fmt]
    if fmt == "dataframe_split":
        raw = _columns_from_split(value, cols)
    elif fmt == "dataframe_records":
        if type(value) is not list:
            raise InputError(400, "dataframe_records must be a list of records")
        raw = _columns_from_rows(value, cols, fmt)
    elif type(value) is list:
        raw = _columns_from_rows(value, cols, fmt)
    elif type(value) is dict:
        raw = _columns_from_columnar(value, cols, fmt)
    else:
        raise InputError(400, f"{fmt} must be a list of rows or an object of columns")
    out = {c.name: coerce_column(c, raw[c.name]) for c in cols}
    n = len(out[cols[0].name]) if cols else 0
    return out, n


def scoring_response(
    preds: list, scores: list | None, *, simple: bool, model_version: str, variant: str
) -> bytes:
    """The answer of ``/predict`` (``simple``: class and score per row) or of ``/invocations``."""
    if simple:
        out: dict[str, Any] = {
            "predictions": [
                {"class": p, "score": s}
                for p, s in zip(preds, scores if scores is not None else [None] * len(preds), strict=True)
            ],
            "model_version": model_version,
            "variant": variant,
        }
    else:
        out = {"predictions": preds}
    return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)


# ----------------------------------------------------------------------------------- column checks


def _bad_type(col: Column, vals: list, row_offset: int = 0) -> InputError:
    for i, v in enumerate(vals):
        if not _value_ok(col, v):
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            what = "null" if v is None else f"{type(v).__name__} {shown}"
            return InputError(
                422,
                f"field {col.name!r} (row {i + row_offset}): expected {col.type_name}, got {what}",
                col.name,
                i + row_offset,
            )
    return InputError(422, f"field {col.name!r}: values do not match {col.type_name}", col.name)


def _value_ok(col: Column, v: Any) -> bool:
    t = type(v)
    if v is None:
        return col.kind == "float" or not col.required or col.kind == "any"
    if col.kind == "float":
        return t is float or t is int
    if col.kind == "int":
        return (t is int or (t is float and v.is_integer())) and _INT64[0] <= v <= _INT64[1]
    if col.kind == "str":
        return t is str
    if col.kind == "bool":
        return t is bool
    return t in (int, float, str, bool)


def coerce_column(col: Column, vals: list) -> list:
    """Check one column's JSON values against its type; whole floats become ints. Raises a 422."""
    types = set(map(type, vals))
    if col.kind == "float":
        if types <= {float, int, _NONE}:
            return vals
    elif col.kind == "int":
        if types <= {int} and (not vals or (min(vals) >= _INT64[0] and max(vals) <= _INT64[1])):
            return vals
        if types <= {int, float} and all(_value_ok(col, v) for v in vals):
            return [int(v) for v in vals]
        if not col.required and types <= {int, float, _NONE} and all(_value_ok(col, v) for v in vals):
            return [None if v is None else int(v) for v in vals]
    elif col.kind == "str":
        if types <= {str} or (not col.required and types <= {str, _NONE}):
            return vals
    elif col.kind == "bool":
        if types <= {bool} or (not col.required and types <= {bool, _NONE}):
            return vals
    elif types <= {int, float, str, bool, _NONE}:
        return vals
    raise _bad_type(col, vals)


# ---------------------------------------------------------------------------------- payload shapes


def _columns_from_rows(rows: list, cols: list[Column], what: str) -> dict[str, list]:
    if not rows:
        return {c.name: [] for c in cols}
    if all(type(r) is dict for r in rows):
        out = {}
        for c in cols:
            try:
                out[c.name] = [r[c.name] for r in rows]
            except KeyError:
                if c.required:
                    row = next(i for i, r in enumerate(rows) if c.name not in r)
                    raise InputError(422, f"missing field {c.name!r} (row {row})", c.name, row) from None
                out[c.name] = [r.get(c.name) for r in rows]
        return out
    if all(type(r) is list for r in rows):
        width = len(cols)
        for i, r in enumerate(rows):
            if len(r) != width:
                missing = cols[len(r)].name if len(r) < width else None
                raise InputError(
                    422,
                    f"row {i} has {len(r)} values, expected {width} in signature order "
                    f"({', '.join(c.name for c in cols)})",
                    missing,
                    i,
                )
        return {c.name: [r[j] for r in rows] for j, c in enumerate(cols)}
    raise InputError(400, f"{what} must be a list of objects (or of lists in signature order)")


def _columns_from_split(split: Any, cols: list[Column]) -> dict[str, list]:
    if type(split) is not dict or "data" not in split or set(split) - {"columns", "data", "index"}:
        raise InputError(
            400, "dataframe_split must be an object with 'data' and optionally 'columns' and 'index'"
        )
    data, names = split["data"], split.get("columns")
    if type(data) is not list or not all(type(r) is list for r in data):
        raise InputError(400, "dataframe_split.data must be a list of rows (lists)")
    if names is None:
        return _columns_from_rows(data, cols, "dataframe_split.data")
    if type(names) is not list or not all(type(n) is str for n in names):
        raise InputError(400, "dataframe_split.columns must be a list of column names")
    width = len(names)
    for i, r in enumerate(data):
        if len(r) != width:
            raise InputError(400, f"dataframe_split row {i} has {len(r)} values for {width} columns", row=i)
    index = {n: j for j, n in enumerate(names)}
    out = {}
    for c in cols:
        j = index.get(c.name)
        if j is None:
            if c.required:
                raise InputError(422, f"missing field {c.name!r}", c.name)
            out[c.name] = [None] * len(data)
        else:
            out[c.name] = [r[j] for r in data]
    return out


def _columns_from_columnar(obj: dict, cols: list[Column], what: str) -> dict[str, list]:
    lengths = {len(v) if type(v) is list else None for v in obj.values()}
    if lengths == {None}:  # one row given as scalars
        obj, n = {k: [v] for k, v in obj.items()}, 1
    elif len(lengths) == 1:
        n = lengths.pop() or 0
    else:
        raise InputError(400, f"{what}: every column must be a list of the same length")
    out = {}
    for c in cols:
        if c.name in obj:
            out[c.name] = obj[c.name]
        elif c.required:
            raise InputError(422, f"missing field {c.name!r}", c.name)
        else:
            out[c.name] = [None] * n
    return out
