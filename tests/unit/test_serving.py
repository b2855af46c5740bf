"""The model server in-process (real ASGI app, real MLflow model, no mocks): payloads, errors, metrics, logs."""

from __future__ import annotations

import asyncio
import json
import warnings
from dataclasses import replace

import httpx
import numpy as np
import pytest
from mlops.serving.app import ServingApp, create_app
from mlops.serving.metrics import observe_many
from mlops.serving.predlog import PredictionLog
from mlops.serving.settings import ServingSettings
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import save_churn_model

with warnings.catch_warnings():  # starlette asks for httpx2; the locked httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROWS = 12


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    """A small real churn pipeline saved as an MLflow model (signature + input example), and rows to score."""
    from mlops.demo.datagen import generate_churn

    path = tmp_path_factory.mktemp("model") / "churn"
    pipe, cfg = save_churn_model(path, seed=3)
    rows = generate_churn(ROWS, seed=11)[cfg.features.all]
    return {"path": str(path), "pipe": pipe, "rows": rows, "cfg": cfg}


@pytest.fixture(scope="module")
def app(churn, tmp_path_factory):
    settings = ServingSettings(
        model_uri=churn["path"],
        model_name="churn",
        model_version="4",
        variant="canary",
        predictions_dir=tmp_path_factory.mktemp("predictions"),
        max_body_bytes=20_000,
    )
    app = create_app(settings)
    app.startup()
    assert app.wait_ready(120), app.load_error
    yield app
    app.shutdown()


@pytest.fixture()
def client(app):
    return TestClient(app)  # no lifespan: the module's app is started once


def _records(rows):
    return json.loads(rows.to_json(orient="records"))


def _split(rows):
    split = json.loads(rows.to_json(orient="split"))
    return {"columns": split["columns"], "data": split["data"]}


def _payloads(rows):
    records = _records(rows)
    columns = {c: [r[c] for r in records] for c in rows.columns}
    return {
        "dataframe_split": {"dataframe_split": _split(rows)},
        "dataframe_split+index": {"dataframe_split": {**_split(rows), "index": list(range(len(rows)))}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "instances (columns)": {"instances": columns},
        "inputs (columns)": {"inputs": columns},
        "inputs (records)": {"inputs": records},
        "dataframe_split+params": {"dataframe_split": _split(rows), "params": {}},
    }


def _mlflow_answer(churn, payload) -> dict:
    """What MLflow 3's own scoring server answers for the same body (its request handler, in-process)."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(churn["path"])
    res = scoring_server.invocations(
        json.dumps(payload), "application/json", model, model.metadata.get_input_schema()
    )
    assert res.status == 200, res.response
    return json.loads(res.response)


def test_every_payload_shape_gives_the_models_own_predictions(client, churn):
    expected = churn["pipe"].predict(churn["rows"]).tolist()
    assert len(set(expected)) == 2 or len(expected) == ROWS
    for name, payload in _payloads(churn["rows"]).items():
        r = client.post("/invocations", json=payload)
        assert r.status_code == 200, (name, r.text)
        assert r.json() == {"predictions": expected}, name


def test_answers_like_mlflows_scoring_server(client, churn):
    for name in ("dataframe_split", "dataframe_records", "inputs (columns)"):
        payload = _payloads(churn["rows"])[name]
        assert client.post("/invocations", json=payload).json() == _mlflow_answer(churn, payload), name


def test_predict_returns_class_and_positive_score(client, churn):
    pipe, rows = churn["pipe"], churn["rows"]
    r = client.post("/predict", json={"instances": _records(rows)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "4" and body["variant"] == "canary"
    assert [p["class"] for p in body["predictions"]] == pipe.predict(rows).tolist()
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], pipe.predict_proba(rows)[:, 1])


def test_whole_floats_for_int_columns_and_ints_for_float_columns(client, churn):
    records = _records(churn["rows"].head(3))
    expected = churn["pipe"].predict(churn["rows"].head(3)).tolist()
    for r in records:
        r["age"] = float(r["age"])  # long column, whole float
        r["monthly_charges"] = int(round(r["monthly_charges"]))  # double column, int
    rows = churn["rows"].head(3).assign(monthly_charges=[r["monthly_charges"] for r in records])
    expected = churn["pipe"].predict(rows).tolist()
    r = client.post("/invocations", json={"dataframe_records": records})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("age"), "age"),
        (lambda r: r.update(age="forty"), "age"),
        (lambda r: r.update(age=41.5), "age"),
        (lambda r: r.update(age=True), "age"),
        (lambda r: r.update(age=2**70), "age"),
        (lambda r: r.update(contract_type=3), "contract_type"),
        (lambda r: r.update(contract_type=None), "contract_type"),
        (lambda r: r.update(monthly_charges="12.5"), "monthly_charges"),
    ],
)
def test_schema_errors_are_422_naming_the_field(client, churn, change, field):
    records = _records(churn["rows"].head(3))
    change(records[1])
    for route, payload in (
        ("/invocations", {"dataframe_records": records}),
        ("/predict", {"instances": records}),
    ):
        r = client.post(route, json=payload)
        assert r.status_code == 422, (route, r.text)
        body = r.json()
        assert body["field"] == field and field in body["message"] and body["row"] == 1


def test_missing_column_in_split_is_422(client, churn):
    split = _split(churn["rows"].drop(columns=["region"]))
    r = client.post("/invocations", json={"dataframe_split": split})
    assert r.status_code == 422 and r.json()["field"] == "region"


def test_oversized_body_is_413(client, churn):
    big = {"dataframe_records": _records(churn["rows"]) * 20}
    r = client.post("/invocations", json=big)
    assert r.status_code == 413, r.text
    # also when the client streams it with no Content-Length
    body = json.dumps(big).encode()
    r = client.post(
        "/invocations",
        content=(body[i : i + 4096] for i in range(0, len(body), 4096)),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"rows": []}',
        b'{"instances": [], "inputs": []}',
        b'{"dataframe_split": {"columns": ["age"]}}',
        b'{"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}',
        b'{"dataframe_records": {"age": 3}}',
        b'{"instances": [1, 2]}',
        b'{"instances": 7}',
        b'{"inputs": {"age": [1, 2], "region": [1]}}',
        b"\xff\xfe",
    ],
)
def test_malformed_bodies_are_400_or_422_never_500(client, body):
    r = client.post("/invocations", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert "message" in r.json()


def test_content_type_and_method_and_route(client, churn):
    payload = json.dumps({"dataframe_split": _split(churn["rows"])})
    assert (
        client.post("/invocations", content=payload, headers={"content-type": "text/csv"}).status_code == 415
    )
    r = client.post(
        "/invocations", content=payload, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200
    assert client.get("/invocations").status_code == 405
    assert client.get("/nope").status_code == 404
    assert client.post("/invocations", json={"instances": []}).json() == {"predictions": []}


def test_health_ready_version(client, monkeypatch, churn):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ping").status_code == 200
    assert client.get("/ready").json() == {"ready": True, "model_version": "4"}
    monkeypatch.setenv("MLOPS_IMAGE_DIGEST", "sha256:" + "a" * 64)
    v = client.get("/version").json()
    assert v["model"] == "churn" and v["model_version"] == "4" and v["variant"] == "canary"
    assert v["model_uri"] == churn["path"] and v["image_digest"] == "sha256:" + "a" * 64


def test_not_ready_is_503_with_the_reason(tmp_path):
    app = create_app(ServingSettings(model_uri=str(tmp_path / "missing"), sample_rate=0))
    app.startup()
    try:
        assert not app.wait_ready(30)
        c = TestClient(app)
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and "MLmodel" in r.json()["reason"]
        assert c.post("/invocations", json={"instances": []}).status_code == 503
    finally:
        app.shutdown()


def _samples(client) -> dict[tuple, float]:
    text = client.get("/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples, name, **labels):
    want = {**labels}
    return sum(v for (n, lab), v in samples.items() if n == name and want.items() <= dict(lab).items())


def test_metrics_have_labels_and_move(client, churn):
    base = {"variant": "canary", "model_version": "4"}
    before = _samples(client)
    rows = churn["rows"]
    assert client.post("/invocations", json={"dataframe_split": _split(rows)}).status_code == 200
    assert client.post("/invocations", json={"instances": [{"age": 1}]}).status_code == 422
    after = _samples(client)
    ok = {"route": "/invocations", "status": "200", **base}
    assert (
        _get(after, "mlops_http_requests_total", **ok) - _get(before, "mlops_http_requests_total", **ok) == 1
    )
    bad = {"route": "/invocations", "status": "422", **base}
    assert (
        _get(after, "mlops_http_requests_total", **bad) - _get(before, "mlops_http_requests_total", **bad)
        == 1
    )
    name = "mlops_http_request_duration_seconds_count"
    assert _get(after, name, **ok) - _get(before, name, **ok) == 1
    assert _get(after, "mlops_http_request_duration_seconds_bucket", le="+Inf", **ok) >= 1
    assert (
        _get(after, "mlops_prediction_score_count", **base)
        - _get(before, "mlops_prediction_score_count", **base)
        == ROWS
    )
    preds = churn["pipe"].predict(rows)
    for cls in set(preds.tolist()):
        moved = _get(after, "mlops_predictions_total", **{"class": str(cls)}, **base) - _get(
            before, "mlops_predictions_total", **{"class": str(cls)}, **base
        )
        assert moved == int((preds == cls).sum())
    for feature in churn["cfg"].features.numeric:
        key = {"feature": feature, **base}
        assert (
            _get(after, "mlops_feature_value_count", **key) - _get(before, "mlops_feature_value_count", **key)
            == ROWS
        )
    moved = 0
    for value in set(rows["contract_type"]):
        key = {"feature": "contract_type", "value": value, **base}
        moved += _get(after, "mlops_feature_category_total", **key) - _get(
            before, "mlops_feature_category_total", **key
        )
    assert moved == ROWS
    assert ("mlops_http_requests_in_flight", tuple(sorted(base.items()))) in after
    assert _get(after, "mlops_model_info", model="churn", **base) == 1


def test_observe_many_equals_observing_one_by_one():
    from prometheus_client import CollectorRegistry, Histogram

    r = CollectorRegistry()
    a = Histogram("a", "a", buckets=(0.0, 1.0, 2.5, 10.0), registry=r)
    b = Histogram("b", "b", buckets=(0.0, 1.0, 2.5, 10.0), registry=r)
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.5, 3.0, 11.0, float("nan"), 1.0])
    observe_many(a, values)
    for v in values[~np.isnan(values)]:
        b.observe(float(v))
    fam_a, fam_b = list(r.collect())
    got = {s.name[1:] + str(s.labels): s.value for s in fam_a.samples if "created" not in s.name}
    want = {s.name[1:] + str(s.labels): s.value for s in fam_b.samples if "created" not in s.name}
    assert got == want


def test_bulk_histogram_exposes_exactly_what_a_histogram_does():
    import re

    from mlops.serving.metrics import FEATURE_BUCKETS, BulkHistogram
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    values = np.array([-1.0, 0.0, 0.05, 0.1, 1.0, 3.0, 7e4, 2e6, float("inf"), float("nan"), 1.0])
    texts = []
    for kind in ("histogram", "bulk"):
        r = CollectorRegistry(auto_describe=True)
        if kind == "histogram":
            family = Histogram("h", "doc.", ["feature"], buckets=FEATURE_BUCKETS, registry=r)
        else:
            family = BulkHistogram("h", "doc.", ["feature"], buckets=FEATURE_BUCKETS, registry=r)
        family.labels("a")  # a label set with no observation yet
        for _ in range(2):
            observe_many(family.labels("b"), values)
        texts.append(re.sub(r"(_created\{.*\}) \S+", r"\1 T", generate_latest(r).decode()))
    assert texts[0] == texts[1]
    assert 'h_bucket{feature="b",le="0.1"} 8.0' in texts[1]


def test_category_labels_are_only_values_training_saw(client, churn):
    # a probe grew /metrics from 0.3 to 2.3 MB with five 200 KB category strings: label values come from
    # request bodies, so only the model's training categories (and short ones) become labels
    known = sorted(map(str, churn["rows"]["contract_type"].unique()))
    rows = _records(churn["rows"].head(3))
    huge = [{**rows[0], "contract_type": "x" * 200_000}]
    unknown = [{**rows[1], "contract_type": f"never-seen-{i}"} for i in range(30)]
    assert client.post("/invocations", json={"dataframe_records": huge}, headers={}).status_code in (200, 413)
    assert client.post("/invocations", json={"dataframe_records": unknown}).status_code == 200
    text = client.get("/metrics").text
    values = {
        s.labels["value"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if fam.name == "mlops_feature_category" and s.labels["feature"] == "contract_type"
    }
    assert "__other__" in values and values <= {*known, "__other__"}, values
    assert "never-seen" not in text and "x" * 100 not in text


def test_without_training_categories_long_values_still_count_as_other():
    from mlops.serving.metrics import OTHER, Metrics
    from mlops.serving.payloads import Column

    m = Metrics("stable", "1")  # a model logged before training recorded its categories
    col = Column("plan", "string", object, True, "string")
    m._observe_categories(col, ["basic", "y" * 65, "z" * 200_000, "basic"])
    text = m.render()[0].decode()
    assert (
        'value="basic"' in text and f'value="{OTHER}"' in text and "yyyy" not in text and "zzzz" not in text
    )
    m.unregister()


def test_metrics_can_be_replaced_in_the_apps_registry():
    from mlops.serving.metrics import Metrics
    from prometheus_client import CollectorRegistry

    r = CollectorRegistry(auto_describe=True)
    old = Metrics("stable", "unknown", registry=r)
    old.unregister()
    new = Metrics("stable", "7", registry=r)
    new.score.observe(0.5)
    text = new.render()[0].decode()
    assert 'mlops_prediction_score_count{model_version="7",variant="stable"} 1.0' in text
    assert "unknown" not in text


def test_prediction_log_readers_read_what_the_writer_writes(tmp_path):
    import time

    from mlops.serving.predlog import count_logged, logged_frame, recent_logged_rows

    plog = PredictionLog(tmp_path, model="m", model_version="2", variant="stable")
    now = time.time()
    plog.submit((now, "r1", "/predict", {"x": [1.5, None], "c": ["a", "b"]}, [0, 1], [0.25, 0.75]))
    plog.submit((now, None, "/invocations", {"x": [3.0], "c": ["c"]}, [1], None))
    plog.close()
    assert count_logged(tmp_path, now - 1, "2") == 3 and count_logged(tmp_path, now - 1, "1") == 0
    frame = logged_frame(tmp_path, now - 1, "2")
    assert frame["c"].tolist() == ["a", "b", "c"]
    assert frame["score"].tolist()[:2] == [0.25, 0.75] and np.isnan(frame["score"].tolist()[2])
    assert recent_logged_rows(tmp_path, 2) == [{"x": 3.0, "c": "c"}, {"x": None, "c": "b"}]


def test_concurrent_requests_are_batched_and_each_gets_its_rows(app, churn):
    rows = churn["rows"]
    expected = churn["pipe"].predict(rows).tolist()

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(
                *(
                    c.post("/invocations", json={"dataframe_split": _split(rows.iloc[i : i + 1])})
                    for i in range(ROWS)
                )
            )
        return [r.json()["predictions"] for r in rs]

    assert asyncio.run(go()) == [[p] for p in expected]


def test_prediction_log_written_off_path_and_flushed_on_shutdown(churn, tmp_path):
    folder = tmp_path / "preds"
    app: ServingApp = create_app(
        ServingSettings(model_uri=churn["path"], model_version="9", variant="staging", predictions_dir=folder)
    )
    with TestClient(app) as c:  # lifespan: startup loads, shutdown flushes the log
        assert app.wait_ready(120)
        r = c.post("/predict", json={"instances": _records(churn["rows"])}, headers={"x-request-id": "req-1"})
        assert r.status_code == 200
        assert (
            c.post("/invocations", json={"dataframe_split": _split(churn["rows"].head(2))}).status_code == 200
        )
    files = list(folder.glob("predictions-*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert len(lines) == ROWS + 2
    first = lines[0]
    assert set(first) == {
        "ts",
        "request_id",
        "route",
        "model",
        "model_version",
        "variant",
        "inputs",
        "prediction",
        "score",
    }
    assert first["request_id"] == "req-1" and first["route"] == "/predict"
    assert first["model_version"] == "9" and first["variant"] == "staging" and first["ts"].endswith("Z")
    assert first["inputs"] == _records(churn["rows"].head(1))[0]
    assert first["prediction"] == churn["pipe"].predict(churn["rows"].head(1)).tolist()[0]
    assert abs(first["score"] - churn["pipe"].predict_proba(churn["rows"].head(1))[0, 1]) < 1e-9
    assert lines[-1]["route"] == "/invocations"


def test_sample_rate_zero_logs_nothing(churn, tmp_path):
    folder = tmp_path / "none"
    app = create_app(ServingSettings(model_uri=churn["path"], predictions_dir=folder, sample_rate=0.0))
    with TestClient(app) as c:
        assert app.wait_ready(120)
        assert c.post("/invocations", json={"dataframe_split": _split(churn["rows"])}).status_code == 200
    assert not folder.exists()


def test_prediction_log_bounded_queue_drops_and_counts(tmp_path):
    plog = PredictionLog(
        tmp_path, model="m", model_version="1", variant="stable", queue_size=2, rotate_bytes=300
    )
    record = (1.0e9, "r", "/predict", {"x": [1, 2]}, [0, 1], [0.1, 0.9])
    accepted = sum(plog.submit(record) for _ in range(500))
    plog.close()
    assert accepted + plog.dropped == 500 and plog.dropped > 0
    files = sorted(tmp_path.glob("predictions-20010909T01-*.jsonl"))
    assert len(files) > 1  # rotated by size
    assert sum(len(f.read_text().splitlines()) for f in files) == plog.written == 2 * accepted


def test_settings_validation_and_env(monkeypatch):
    with pytest.raises(ValueError, match="sample_rate"):
        ServingSettings(model_uri="x", sample_rate=1.5)
    with pytest.raises(ValueError, match="variant"):
        ServingSettings(model_uri="x", variant="bad variant")
    monkeypatch.setenv("MLOPS_SERVE_VARIANT", "canary")
    monkeypatch.setenv("MLOPS_SERVE_MODEL_VERSION", "12")
    s = ServingSettings.from_env("models:/churn@champion", port=9)
    assert (s.variant, s.model_version, s.port) == ("canary", "12", 9)
    assert create_app(model_uri="models:/churn/3").model_name == "churn"


def test_cli_serve_arguments():
    from mlops.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--model-uri", "models:/churn@champion", "--workers", "2", "--variant", "canary"]
    )
    assert (args.model_uri, args.workers, args.variant, args.port, args.host) == (
        "models:/churn@champion",
        2,
        "canary",
        8000,
        "127.0.0.1",
    )
    assert args.sample_rate == 1.0 and args.max_body_bytes == 1 << 20


def test_a_stage_name_is_refused_aliases_only():
    """Registry stages are deprecated in MLflow: the platform resolves versions and @aliases only."""
    from mlops.serving.model import resolve_model

    with pytest.raises(ValueError, match=r"'Production' is neither a version number nor an @alias"):
        resolve_model("models:/churn/Production", tracking_uri="http://127.0.0.1:9")


def test_api_token_row_limit_and_timeout(churn, tmp_path):
    settings = ServingSettings(
        model_uri=churn["path"],
        model_name="churn",
        model_version="4",
        predictions_dir=tmp_path / "predictions",
        api_token="unit-test-token-0123456789",
        protected=frozenset({"/invocations", "/predict", "/metrics"}),
        max_rows=5,
    )
    app = create_app(settings)
    app.startup()
    try:
        assert app.wait_ready(120), app.load_error
        client = TestClient(app)
        body = {"dataframe_split": _split(churn["rows"].head(3))}
        denied = client.post("/invocations", json=body)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in denied.json()["message"]
        wrong = client.post(
            "/predict", json=body, headers={"Authorization": "Bearer unit-test-token-0123456788"}
        )
        assert wrong.status_code == 401
        auth = {"Authorization": "Bearer unit-test-token-0123456789"}
        assert client.post("/invocations", json=body, headers=auth).status_code == 200
        assert (
            client.get("/metrics").status_code == 401
            and client.get("/metrics", headers=auth).status_code == 200
        )
        assert client.get("/ready").status_code == 200 and client.get("/health").status_code == 200  # probes
        many = client.post(
            "/invocations", json={"dataframe_split": _split(churn["rows"].head(6))}, headers=auth
        )
        assert many.status_code == 413 and "6 rows in one request; at most 5" in many.json()["message"]
        doc = client.get("/openapi.json").json()
        assert (
            doc["openapi"].startswith("3.1")
            and doc["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
        )
        assert doc["paths"]["/invocations"]["post"]["security"] == [{"apiToken": []}]
        record = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "oneOf"
        ][1]
        assert set(record["properties"]["dataframe_records"]["items"]["properties"]) == set(
            churn["cfg"].features.all
        )
    finally:
        app.shutdown()
    slow = create_app(replace(settings, api_token=None, request_timeout_s=1e-6))
    slow.startup()
    try:
        assert slow.wait_ready(120), slow.load_error
        r = TestClient(slow).post("/invocations", json={"dataframe_split": _split(churn["rows"].head(3))})
        assert r.status_code == 504 and "longer than" in r.json()["message"]
    finally:
        slow.shutdown()


def test_settings_refuse_a_short_token_and_nonsense_limits():
    for bad in ({"api_token": "short"}, {"max_rows": 0}, {"request_timeout_s": 0}):
        with pytest.raises(ValueError):
            ServingSettings(model_uri="x", **bad)
