"""The model server's OpenAPI 3.1 description (``GET /openapi.json``): every route and payload shape.

Built from the served model's input columns, so a client generator or a schema-driven fuzzer sees the
real field names and types. The scoring bodies are MLflow's four formats (see
:mod:`mlops.serving.payloads`); every refusal is the same error object.
"""

from __future__ import annotations

from typing import Any

from mlops.serving.payloads import MLFLOW_FORMATS, Column
from mlops.serving.settings import ServingSettings

_KIND_SCHEMA: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "any": {},
}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _value(c: Column) -> dict[str, Any]:
    schema = dict(_KIND_SCHEMA.get(c.kind, {}))
    if schema and not c.required:
        schema["type"] = [schema["type"], "null"]
    return schema


def _record(columns: list[Column] | None) -> dict[str, Any]:
    if not columns:
        return {"type": "object", "description": "one row: input column -> value"}
    return {
        "type": "object",
        "properties": {c.name: _value(c) for c in columns},
        "required": [c.name for c in columns if c.required],
    }


def _columnar(columns: list[Column] | None) -> dict[str, Any]:
    if not columns:
        return {"type": "object", "additionalProperties": {"type": "array"}}
    return {
        "type": "object",
        "properties": {c.name: {"type": "array", "items": _value(c)} for c in columns},
        "required": [c.name for c in columns if c.required],
    }


def _errors(*statuses: int) -> dict[str, Any]:
    what = {
        400: "not JSON, or not one of the accepted shapes",
        401: "missing or wrong API token",
        413: "body or row count over the server's limit",
        415: "not application/json (UTF-8)",
        422: "a field is missing or has a value of the wrong type",
        503: "the model is still loading",
        504: "scoring took longer than the request timeout",
    }
    return {
        str(s): {"description": what[s], "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }


def openapi_document(
    columns: list[Column] | None, settings: ServingSettings, model_name: str | None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this server (columns: the model's inputs; None while loading)."""
    record, columnar = _record(columns), _columnar(columns)
    rows = {"type": "array", "items": record, "maxItems": settings.max_rows}
    body_shapes = {
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array"}, "maxItems": settings.max_rows},
                "index": {"type": "array"},
            },
            "required": ["columns", "data"],
        },
        "dataframe_records": rows,
        "instances": {"oneOf": [rows, columnar]},
        "inputs": {"oneOf": [rows, columnar]},
    }
    assert set(body_shapes) == set(MLFLOW_FORMATS)
    request = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {name: shape, "params": {"type": "object"}},
                            "required": [name],
                            "additionalProperties": False,
                        }
                        for name, shape in body_shapes.items()
                    ]
                }
            }
        },
    }
    scoring_errors = (400, 413, 415, 422, 503, 504)
    security: list[dict[str, list[str]]] = [{"apiToken": []}] if settings.api_token is not None else []

    def scoring(summary: str, ok: dict[str, Any], path: str) -> dict[str, Any]:
        op: dict[str, Any] = {
            "summary": summary,
            "requestBody": request,
            "responses": {
                "200": {
                    "description": "one prediction per row",
                    "content": {"application/json": {"schema": ok}},
                },
                **_errors(*scoring_errors, *((401,) if security and path in settings.protected else ())),
            },
        }
        if security and path in settings.protected:
            op["security"] = security
        return {"post": op}

    def simple(summary: str, schema: dict[str, Any], path: str, *extra: int, media: str = "application/json"):
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "ok", "content": {media: {"schema": schema}}},
                **_errors(*extra),
            },
        }
        if security and path in settings.protected:
            op["security"] = security
            op["responses"].update(_errors(401))
        return {"get": op}

    health = {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}
    paths = {
        "/invocations": scoring(
            "Score rows (MLflow's scoring protocol)",
            {"type": "object", "properties": {"predictions": {"type": "array"}}, "required": ["predictions"]},
            "/invocations",
        ),
        "/predict": scoring(
            "Score rows: class and positive-class probability per row",
            {
                "type": "object",
                "properties": {
                    "predictions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"class": {}, "score": {"type": ["number", "null"]}},
                            "required": ["class", "score"],
                        },
                    },
                    "model_version": {"type": ["string", "null"]},
                    "variant": {"type": "string"},
                },
                "required": ["predictions", "model_version", "variant"],
            },
            "/predict",
        ),
        "/health": simple("Liveness", health, "/health"),
        "/ping": simple("Liveness (MLflow's name)", health, "/ping"),
        "/ready": simple("Readiness: the model is loaded in every worker", {"type": "object"}, "/ready", 503),
        "/version": simple(
            "Model name, version, URI, run, variant, image digest", {"type": "object"}, "/version"
        ),
        "/metrics": simple("Prometheus metrics", {"type": "string"}, "/metrics", media="text/plain"),
        "/openapi.json": simple("This document", {"type": "object"}, "/openapi.json"),
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"mlops model server: {model_name or 'model'}", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error_code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                        "row": {"type": "integer"},
                    },
                    "required": ["error_code", "message"],
                }
            }
        },
    }
    if security:
        doc["components"]["securitySchemes"] = {"apiToken": {"type": "http", "scheme": "bearer"}}
    return doc
