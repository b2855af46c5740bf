"""Reading the serving prediction log for drift checks."""

from __future__ import annotations

import json
import time

from mlops.serving.predlog import logged_frame


def test_logged_frame_keeps_only_the_version_and_window_and_survives_a_torn_line(tmp_path):
    def line(ts: str, version: str, x: float) -> str:
        rec = {
            "ts": ts,
            "model_version": version,
            "inputs": {"x": x, "c": "a"},
            "prediction": 1,
            "score": 0.5,
        }
        return json.dumps(rec)

    now = time.time()
    recent = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - 10))
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - 7200))
    (tmp_path / "predictions-a.jsonl").write_text(
        "\n".join([line(old, "3", 1.0), line(recent, "3", 2.0), line(recent, "4", 3.0), '{"ts": "20']) + "\n"
    )
    frame = logged_frame(tmp_path, now - 60, "3")
    assert frame["x"].tolist() == [2.0] and frame["score"].tolist() == [0.5]
    assert logged_frame(tmp_path, now - 60, "9").empty
    assert logged_frame(tmp_path / "missing", now - 60, "3").empty


def test_count_logged_counts_what_logged_frame_reads(tmp_path):
    from mlops.serving.predlog import count_logged

    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - 5))
    rows = [{"ts": stamp, "model_version": v, "inputs": {"x": 1.0}, "score": 0.1} for v in ("3", "3", "4")]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"torn')
    assert count_logged(tmp_path, now - 60, "3") == 2 == len(logged_frame(tmp_path, now - 60, "3"))
    assert count_logged(tmp_path, now, "3") == 0  # nothing since "now"
    assert count_logged(tmp_path / "missing", now - 60, "3") == 0
