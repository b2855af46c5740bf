"""Prometheus, the Pushgateway and Alertmanager of the local stack (Debian packages, optional).

``make monitoring`` (``.ci/setup-monitoring.sh``) installs the three programs; when they are
installed, ``mlops stack up`` renders their configs from the templates in ``mlops/stack/templates/`` into
``$MLOPS_HOME/monitoring/`` (:func:`render`) and starts them next to Airflow and MLflow
(:func:`services`), each on 127.0.0.1:

* Prometheus (``MLOPS_PROMETHEUS_URL``, 9090): the rules of ``mlops/alerting/rules/`` (package data), the
  Pushgateway, the serving router and every model backend (file discovery: the local deployment
  target writes ``$MLOPS_HOME/serving/<model>.prometheus-targets.json``);
* the Pushgateway (``MLOPS_PUSHGATEWAY_URL``, 9091) the drift monitor pushes its metrics to;
* Alertmanager (``MLOPS_ALERTMANAGER_URL``, 9093): alerts grouped by alert, model and version, sent
  to Airflow's ``/mlops/alerts/webhook`` with ``MLOPS_ALERT_WEBHOOK_TOKEN`` as Bearer token.

When they are not installed, nothing here runs and alerts come from the local alert source.
No Airflow here.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mlops.config import resources
from mlops.config.settings import Settings
from mlops.deploy.local.scrape import targets_glob
from mlops.fileio import atomic_write_text

RULES_DIR = resources.alert_rules_dir()
RULES_FILE = resources.alert_rules_file()

PROMETHEUS, ALERTMANAGER, PUSHGATEWAY = "prometheus", "alertmanager", "pushgateway"
#: Service name -> Debian binary.
BINARIES = {
    PROMETHEUS: "prometheus",
    PUSHGATEWAY: "prometheus-pushgateway",
    ALERTMANAGER: "prometheus-alertmanager",
}
TOOLS = ("promtool", "amtool")
DEFAULT_PUSHGATEWAY_PORT = 9091
#: Where the local deployment target writes each model's Prometheus targets (file_sd format).
WEBHOOK_PATH = "/mlops/alerts/webhook"
_EXTRA_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")


@dataclass(frozen=True)
class MonitoringService:
    """Shaped like :class:`mlops.stack.local.Service` (the stack starts, checks and stops it the same way)."""

    name: str
    argv: list[str]
    port: int | None
    health: Callable[[], tuple[bool, str]]
    url: str
    env_var: str  # the setting that moves it to another port


def which(name: str) -> str | None:
    """Path of a program: on PATH, else in /usr/bin, /usr/sbin or /usr/local/bin (Debian's places)."""
    found = shutil.which(name)
    if found:
        return found
    for d in _EXTRA_DIRS:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def installed() -> bool:
    """All three servers are installed (``make monitoring``)."""
    return all(which(b) is not None for b in BINARIES.values())


def missing() -> list[str]:
    """Binaries (servers and the promtool / amtool checkers) not found."""
    return [b for b in (*BINARIES.values(), *TOOLS) if which(b) is None]


# --------------------------------------------------------------------------- addresses


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"http://{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def pushgateway_url(s: Settings) -> str:
    """The Pushgateway the local stack runs (``MLOPS_PUSHGATEWAY_URL`` when set)."""
    return (s.pushgateway_url or f"http://127.0.0.1:{DEFAULT_PUSHGATEWAY_PORT}").rstrip("/")


def addresses(s: Settings) -> dict[str, tuple[str, int]]:
    """Host and port each monitoring server listens on."""
    return {
        PROMETHEUS: _host_port(s.prometheus_url, 9090),
        PUSHGATEWAY: _host_port(pushgateway_url(s), DEFAULT_PUSHGATEWAY_PORT),
        ALERTMANAGER: _host_port(s.alertmanager_url, 9093),
    }


def alert_source(s: Settings) -> str:
    """The alert source Airflow uses: ``MLOPS_ALERT_SOURCE``, else alertmanager when installed, else local."""
    if s.alert_source:
        return s.alert_source
    return "alertmanager" if installed() else "local"


def effective_pushgateway_url(s: Settings) -> str | None:
    """Where drift metrics are pushed: ``MLOPS_PUSHGATEWAY_URL``, else the local stack's when installed."""
    if s.pushgateway_url:
        return s.pushgateway_url
    return pushgateway_url(s) if installed() else None


# --------------------------------------------------------------------------- configs


def monitoring_dir(s: Settings) -> Path:
    """State folder of the monitoring servers: ``<home>/monitoring``."""
    return s.home / "monitoring"


@dataclass(frozen=True)
class Rendered:
    """The files :func:`render` writes for the monitoring servers."""

    prometheus_yml: Path
    alertmanager_yml: Path
    token_file: Path
    data_dir: Path


def _fill(template: Path, values: dict[str, str]) -> str:
    """The template with every ``${name}`` replaced (an unknown name is an error; a bare ``$x`` stays)."""

    def value(m: re.Match) -> str:
        if m[1] not in values:
            raise KeyError(f"{template}: no value for ${{{m[1]}}}")
        return values[m[1]]

    return re.sub(r"\$\{([a-z_]+)\}", value, template.read_text())


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_text(path, text, mode=mode)


def render(s: Settings) -> Rendered:
    """Write prometheus.yml, alertmanager.yml and the webhook token file under ``$MLOPS_HOME/monitoring/``."""
    out = monitoring_dir(s)
    data = out / "data"
    for d in (out, data / "prometheus", data / "alertmanager", data / "pushgateway", s.home / "serving"):
        d.mkdir(parents=True, exist_ok=True)
    addr = {k: f"{h}:{p}" for k, (h, p) in addresses(s).items()}
    token = out / "webhook-token"
    if not s.alert_webhook_token.get_secret_value():
        raise ValueError("MLOPS_ALERT_WEBHOOK_TOKEN is empty: `mlops stack up` generates it (config.secrets)")
    _write(token, s.alert_webhook_token.get_secret_value(), 0o600)
    prom = out / "prometheus.yml"
    _write(
        prom,
        _fill(
            resources.stack_template("prometheus.yml"),
            {
                "rules_glob": str(RULES_DIR / "*.rules.yml"),
                "alertmanager_address": addr[ALERTMANAGER],
                "pushgateway_address": addr[PUSHGATEWAY],
                "prometheus_address": addr[PROMETHEUS],
                "router_address": f"{s.host}:{s.serving_port}",
                "serving_model": s.serving_model,
                "targets_glob": targets_glob(s.home),
            },
        ),
    )
    am = out / "alertmanager.yml"
    _write(
        am,
        _fill(
            resources.stack_template("alertmanager.yml"),
            {"webhook_url": f"{s.airflow_url}{WEBHOOK_PATH}", "token_file": str(token)},
        ),
    )
    return Rendered(prom, am, token, data)


# --------------------------------------------------------------------------- services


def _ready(url: str) -> tuple[bool, str]:
    try:
        r = httpx.get(url, timeout=3.0, trust_env=False)
    except httpx.HTTPError as exc:
        return False, f"not answering ({type(exc).__name__})"
    return r.status_code == 200, f"HTTP {r.status_code}"


def services(s: Settings) -> list[MonitoringService]:
    """The three servers as stack services (argv uses bare names for what is not installed)."""
    addr = addresses(s)
    out = monitoring_dir(s)
    data = out / "data"

    def binary(name: str) -> str:
        return which(BINARIES[name]) or BINARIES[name]

    def listen(name: str) -> str:
        host, port = addr[name]
        return f"--web.listen-address={host}:{port}"

    def url(name: str) -> str:
        host, port = addr[name]
        return f"http://{host}:{port}"

    return [
        MonitoringService(
            PUSHGATEWAY,
            [
                binary(PUSHGATEWAY),
                listen(PUSHGATEWAY),
                f"--persistence.file={data / 'pushgateway' / 'metrics.store'}",
                "--persistence.interval=30s",
            ],
            addr[PUSHGATEWAY][1],
            lambda: _ready(f"{url(PUSHGATEWAY)}/-/ready"),
            url(PUSHGATEWAY),
            "MLOPS_PUSHGATEWAY_URL",
        ),
        MonitoringService(
            ALERTMANAGER,
            [
                binary(ALERTMANAGER),
                f"--config.file={out / 'alertmanager.yml'}",
                f"--storage.path={data / 'alertmanager'}",
                listen(ALERTMANAGER),
                "--cluster.listen-address=",
                f"--web.external-url={url(ALERTMANAGER)}",
            ],
            addr[ALERTMANAGER][1],
            lambda: _ready(f"{url(ALERTMANAGER)}/-/ready"),
            url(ALERTMANAGER),
            "MLOPS_ALERTMANAGER_URL",
        ),
        MonitoringService(
            PROMETHEUS,
            [
                binary(PROMETHEUS),
                f"--config.file={out / 'prometheus.yml'}",
                f"--storage.tsdb.path={data / 'prometheus'}",
                "--storage.tsdb.retention.time=15d",
                listen(PROMETHEUS),
                "--web.enable-lifecycle",
                "--rules.alert.resend-delay=5s",  # an Alertmanager restart gets the firing alerts back soon
                f"--web.external-url={url(PROMETHEUS)}",
            ],
            addr[PROMETHEUS][1],
            lambda: _ready(f"{url(PROMETHEUS)}/-/ready"),
            url(PROMETHEUS),
            "MLOPS_PROMETHEUS_URL",
        ),
    ]


def reload_prometheus(s: Settings, timeout: float = 5.0) -> bool:
    """Ask the running Prometheus to re-read its config and rules (``--web.enable-lifecycle``)."""
    try:
        r = httpx.post(f"{s.prometheus_url.rstrip('/')}/-/reload", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200
