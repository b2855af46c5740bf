"""Alerting without Prometheus (the embedded default): the rule file evaluated on a local metric store.

* :func:`load_rules` reads the alerting rules of a Prometheus rule file (:class:`Rule`);
* :class:`LocalMetricStore` stands in for the Pushgateway: groups of samples in one JSON file;
* :class:`LocalAlertSource` applies the rules of the form ``metric{matchers} <op> number`` to that
  store with Prometheus' semantics, ``for`` duration included; rules that need PromQL functions are
  listed as unsupported.

The store and the evaluation state are JSON files written atomically under a file lock
(:mod:`mlops.fileio`): the monitoring task writes while the retraining sensor reads.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops.alerting.alerts import Alert, fingerprint, utc_iso
from mlops.fileio import atomic_write_json, locked
from mlops.monitoring.metrics import Sample

_SIMPLE = re.compile(
    r"^\s*(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<matchers>[^}]*)\})?\s*"
    r"(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str | None) -> float:
    """Seconds of a Prometheus duration such as ``1m30s`` (empty: 0)."""
    if not text:
        return 0.0
    parts = _DURATION.findall(str(text))
    if "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return float(sum(int(n) * _UNIT_S[u] for n, u in parts))


@dataclass(frozen=True)
class Rule:
    """An alerting rule of a Prometheus rule file; ``simple`` when the local source can evaluate it."""

    name: str
    expr: str
    for_s: float
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def simple(self) -> bool:
        """Whether the local evaluator can judge this rule (``metric{matchers} <op> number``)."""
        return _SIMPLE.match(self.expr) is not None

    def matches(self, sample: Sample) -> bool:
        """Whether ``sample`` satisfies the rule's expression (a simple rule; otherwise never)."""
        m = _SIMPLE.match(self.expr)
        if m is None or sample.name != m["metric"]:
            return False
        for label, op, value in _MATCHER.findall(m["matchers"] or ""):
            actual = sample.labels.get(label, "")
            value = value.encode().decode("unicode_escape")
            ok = {"=": actual == value, "!=": actual != value,
                  "=~": re.fullmatch(value, actual) is not None, "!~": re.fullmatch(value, actual) is None}[op]  # fmt: skip
            if not ok:
                return False
        return _OPS[m["op"]](sample.value, float(m["value"]))


def load_rules(path: Path) -> list[Rule]:
    """The alerting rules of a Prometheus rule file (recording rules are ignored)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the rule file {path}: {exc}") from exc
    rules = []
    for group in doc.get("groups") or []:
        for r in group.get("rules") or []:
            if "alert" in r:
                rules.append(Rule(r["alert"], str(r["expr"]).strip(), parse_duration(r.get("for")),
                                  {k: str(v) for k, v in (r.get("labels") or {}).items()},
                                  {k: str(v) for k, v in (r.get("annotations") or {}).items()}))  # fmt: skip
    return rules


def _render(template: str, labels: dict[str, str], value: float) -> str:
    """Prometheus' ``{{ $labels.x }}`` and ``{{ $value }}`` in annotations (nothing more)."""
    text = re.sub(
        r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: labels.get(m[1], ""), template
    )
    return re.sub(r"\{\{\s*\$value\s*\}\}", f"{value:g}", text)


def _lock_file(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class LocalMetricStore:
    """A Pushgateway stand-in for the embedded default: groups of samples in one JSON file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def replace_group(self, job: str, grouping: dict[str, str], samples: list[Sample]) -> None:
        """Replace the group ``job`` + ``grouping`` with ``samples`` (what a Pushgateway PUT does)."""
        key = json.dumps({"job": job, **grouping}, sort_keys=True)
        with locked(_lock_file(self.path)):
            data = self._read()
            data[key] = [{**asdict(s), "labels": {**s.labels, "job": job, **grouping}} for s in samples]
            atomic_write_json(self.path, data, indent=1, sort_keys=True)

    def samples(self) -> list[Sample]:
        """Every sample of every group, with the group's labels."""
        return [Sample(**s) for group in self._read().values() for s in group]


def local_store(home: Path) -> LocalMetricStore:
    """The local metric store of the platform home ``home`` (``alerts/metrics.json``)."""
    return LocalMetricStore(Path(home) / "alerts" / "metrics.json")


class LocalAlertSource:
    """The embedded default's alert evaluation: the Prometheus rule file applied to the local store.

    Same semantics as Prometheus for the rules it can evaluate (``metric{matchers} <op> number``): an
    alert is pending while the condition holds and fires once it held for the rule's ``for``
    duration; when the condition stops holding the alert resolves (its next firing is a new one).
    Rules needing PromQL functions (rates, quantiles) are listed in :attr:`unsupported` and skipped.
    """

    kind = "local"

    def __init__(self, store: LocalMetricStore, rules_path: Path, state_path: Path):
        self.store, self.state_path = store, Path(state_path)
        rules = load_rules(rules_path)
        self.rules = [r for r in rules if r.simple]
        self.unsupported = [r.name for r in rules if not r.simple]

    def firing(self, now: float | None = None) -> list[Alert]:
        """The alerts firing at ``now`` (default: the current time); records which ones are pending."""
        now = time.time() if now is None else now
        with locked(_lock_file(self.state_path)):
            try:
                pending: dict[str, float] = json.loads(self.state_path.read_text())
            except (FileNotFoundError, ValueError):
                pending = {}
            active: dict[str, float] = {}
            out = []
            for rule in self.rules:
                for s in self.store.samples():
                    if not rule.matches(s):
                        continue
                    labels = {**s.labels, **rule.labels, "alertname": rule.name}
                    fp = fingerprint(labels)
                    since = active[fp] = pending.get(fp, now)
                    if now - since >= rule.for_s:
                        out.append(Alert(
                            rule.name, labels,
                            {k: _render(v, labels, s.value) for k, v in rule.annotations.items()},
                            fp, utc_iso(since + rule.for_s), self.kind,
                        ))  # fmt: skip
            atomic_write_json(self.state_path, active, indent=1, sort_keys=True)
        return out
