"""The local stack of the embedded default: Airflow 3 and an MLflow server on 127.0.0.1.

Prometheus, the Pushgateway and Alertmanager (:mod:`mlops.stack.observability`) are optional parts: they
start with the rest when their Debian packages are installed (``make monitoring``).

``mlops stack up`` starts each part as its own process group, records its PID (with the process
start time, so a recycled PID is never mistaken for ours) under ``$MLOPS_HOME/run/``, and waits for
each part to be healthy. ``down`` stops exactly those process groups; ``status`` reports each part.
State and logs all live under ``$MLOPS_HOME`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypedDict

import httpx

from mlops.config import defaults
from mlops.config.secrets import ensure_secrets, exposure_problems, scrubbed_env, secrets_path
from mlops.config.settings import Settings
from mlops.deploy.local import procs
from mlops.fileio import atomic_write_json
from mlops.stack import observability


class StackError(RuntimeError):
    """The stack cannot be brought to the requested state; the message says why and what to do."""


@dataclass(frozen=True)
class Service:
    """One process of the local stack: its command line, its port (if any) and its health check."""

    name: str
    argv: list[str]
    port: int | None
    health: Callable[[], tuple[bool, str]]


class StackService(Protocol):
    """What the stack starts, checks and stops the same way: a :class:`Service` or a monitoring server."""

    @property
    def name(self) -> str:
        """Its name: the PID file and the log are named after it."""
        ...

    @property
    def argv(self) -> list[str]:
        """The command line that starts it."""
        ...

    @property
    def port(self) -> int | None:
        """The port it listens on (checked free before it starts), None if none."""
        ...

    @property
    def health(self) -> Callable[[], tuple[bool, str]]:
        """Its health check: (healthy, detail)."""
        ...


# --------------------------------------------------------------------------- environment


def airflow_home(s: Settings) -> Path:
    """AIRFLOW_HOME of the local stack: ``<home>/airflow``."""
    return s.home / "airflow"


def airflow_env(s: Settings) -> dict[str, str]:
    """Environment every Airflow component (and `airflow` CLI call) of the local stack runs with."""
    home = airflow_home(s)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(defaults.project_dir() / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(defaults.project_dir() / "plugins"),
        "MLOPS_PROJECT_DIR": str(defaults.project_dir()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.admin_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": s.jwt_secret.get_secret_value(),
        "AIRFLOW__API__SECRET_KEY": s.jwt_secret.get_secret_value(),
        "AIRFLOW__CORE__FERNET_KEY": s.fernet_key.get_secret_value(),
        "AIRFLOW__API__BASE_URL": s.airflow_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.airflow_url}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {"conn_type": "http", "host": s.host, "port": s.mlflow_port}
        ),
        "MLOPS_MLFLOW_UI_URL": f"http://{s.host}:{s.mlflow_port}",
        **s.as_env(),  # every MLOPS_* setting, .env included, paths resolved: DAG parsing reads os.environ
        **_alerting_env(s),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        **QUIET_MLFLOW_ENV,
        # MLflow's job runner (GenAI scoring, trace rollups: unused here) is 7 huey processes, ~1.8 GB
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return env


#: Task logs read cleanly: a task's stderr is logged at ERROR level, so MLflow must neither draw
#: download progress bars there nor install its own stderr handler (its INFO lines, such as
#: "Experiment ... does not exist. Creating", then reach Airflow's logging at INFO).
QUIET_MLFLOW_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_CONFIGURE_LOGGING": "false"}


def _alerting_env(s: Settings) -> dict[str, str]:
    """Where alerts come from and drift metrics go: Alertmanager + Pushgateway when installed, else local."""
    env = {"MLOPS_ALERT_SOURCE": observability.alert_source(s)}
    pushgateway = observability.effective_pushgateway_url(s)
    if pushgateway:
        env["MLOPS_PUSHGATEWAY_URL"] = pushgateway
    return env


def write_env_file(s: Settings) -> Path:
    """Write ``$MLOPS_HOME/airflow.env`` so users can ``source`` it and run the ``airflow`` CLI by hand."""
    path = s.home / "airflow.env"
    lines = [f"export {k}='{v}'" for k, v in sorted(airflow_env(s).items())]
    path.write_text(
        "# Generated by `mlops stack up`: `source` it to use the airflow CLI on the local stack.\n"
        + "\n".join(lines)
        + "\n"
    )
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- health checks


def _get(url: str, timeout: float = 3.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout, trust_env=False)


def _http_ok(url: str) -> tuple[bool, str]:
    try:
        r = _get(url)
    except httpx.HTTPError as exc:
        return False, f"not answering ({type(exc).__name__})"
    return (r.status_code == 200, f"HTTP {r.status_code}")


def _airflow_component(s: Settings, key: str) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        try:
            r = _get(f"{s.airflow_url}/api/v2/monitor/health")
            data = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            return False, f"api-server not answering ({type(exc).__name__})"
        status = (data.get(key) or {}).get("status")
        return status == "healthy", f"{status or 'unknown'}"

    return check


#: The Airflow components: the only services that get Airflow's configuration and keys.
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def service_env(s: Settings, name: str) -> dict[str, str]:
    """The environment of one service: only the secrets it needs.

    Airflow's components get Airflow's configuration (JWT secret, Fernet key), the api-server the
    webhook token its receiver checks, and the scheduler (whose tasks smoke-test and analyse model
    servers) the endpoint's API token when one is set; MLflow and the monitoring servers get none of
    them, nor any Airflow variable. No service gets the admin password (Airflow reads its 0600 file).
    """
    if name in AIRFLOW_SERVICES:
        env = {**scrubbed_env(os.environ, airflow=True), **airflow_env(s)}
        if name == "api-server":
            env["MLOPS_ALERT_WEBHOOK_TOKEN"] = s.alert_webhook_token.get_secret_value()
        if name == "scheduler" and s.endpoint_token.get_secret_value():
            env["MLOPS_ENDPOINT_TOKEN"] = s.endpoint_token.get_secret_value()
        return env
    return scrubbed_env({**os.environ, **airflow_env(s)})


def services(s: Settings) -> list[Service]:
    """The required parts of the local stack: the MLflow server and the Airflow components."""
    af = ["airflow"]
    mlflow_dir = s.home / "mlflow"
    return [
        Service(
            "mlflow",
            [
                "mlflow",
                "server",
                "--host",
                s.host,
                "--port",
                str(s.mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(mlflow_dir / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "2",
            ],
            s.mlflow_port,
            lambda: _http_ok(f"http://{s.host}:{s.mlflow_port}/health"),
        ),
        Service(
            "api-server",
            [*af, "api-server", "--host", s.host, "--port", str(s.airflow_port)],
            s.airflow_port,
            _airflow_component(s, "metadatabase"),
        ),
        Service("scheduler", [*af, "scheduler"], None, _airflow_component(s, "scheduler")),
        Service("dag-processor", [*af, "dag-processor"], None, _airflow_component(s, "dag_processor")),
        Service("triggerer", [*af, "triggerer"], None, _airflow_component(s, "triggerer")),
    ]


def optional_services(s: Settings) -> list[observability.MonitoringService]:
    """Prometheus, Pushgateway, Alertmanager: started by `up` only when installed (``make monitoring``)."""
    return observability.services(s) if observability.installed() else []


def _all_services(s: Settings) -> list[StackService]:
    return [*services(s), *optional_services(s)]


_PORT_SETTING = {"api-server": "MLOPS_AIRFLOW_PORT", "mlflow": "MLOPS_MLFLOW_PORT"}


def serving_target(s: Settings):
    """The local deployment target of the serving model: the router on MLOPS_SERVING_PORT + backends."""
    from mlops.deploy.local.target import LocalTarget

    return LocalTarget(s.serving_model, s)


def _champion_version(s: Settings) -> str | None:

    from mlops.registry.aliases import CHAMPION, alias_version
    from mlops.registry.client import mlflow_client

    return alias_version(mlflow_client(s.tracking_uri), s.serving_model, CHAMPION)


# --------------------------------------------------------------------------- PID bookkeeping


def _run_dir(s: Settings) -> Path:
    return s.home / "run"


def _pidfile(s: Settings, name: str) -> Path:
    return _run_dir(s) / f"{name}.pid"


def _read_pid(s: Settings, name: str) -> int | None:
    return procs.read_pid(_pidfile(s, name))


port_in_use = procs.port_in_use


# --------------------------------------------------------------------------- commands


def _say(msg: str) -> None:
    print(msg, flush=True)


def _prepare(s: Settings) -> None:
    home = airflow_home(s)
    for d in (home, home / "logs", s.home / "logs", s.home / "mlflow" / "artifacts", _run_dir(s)):
        d.mkdir(parents=True, exist_ok=True)
    # 0600 from the first byte: the password never sits in a world-readable file
    atomic_write_json(
        home / "passwords.json", {s.admin_user: s.admin_password.get_secret_value()}, mode=0o600
    )
    write_env_file(s)
    env = {**os.environ, **airflow_env(s)}
    _say("• migrating the Airflow metadata DB (SQLite)")
    log = s.home / "logs" / "airflow-db-migrate.log"
    with open(log, "w") as fh:
        rc = subprocess.run(
            ["airflow", "db", "migrate"], env=env, stdout=fh, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0:
        raise StackError(f"`airflow db migrate` failed (exit {rc}); see {log}")


def up(s: Settings) -> Settings:
    """Start every part not running yet, then wait until all are healthy. Idempotent.

    Missing secrets are generated first (``<home>/secrets.env``); returns the settings with them.
    """
    if shutil.which("airflow", path=str(Path(sys.executable).parent)) is None:
        raise StackError(f"`airflow` not found next to {sys.executable}: run `make install` first")
    s = ensure_secrets(s)
    problems = exposure_problems(s)
    if problems:
        raise StackError(
            f"refusing to bind to {s.host} (not a loopback address) while "
            + "; ".join(problems)
            + f". Set strong values in the environment, or remove them to have them generated into "
            f"{secrets_path(s.home)}; or keep MLOPS_HOST=127.0.0.1"
        )
    todo: list[StackService] = []
    optional = optional_services(s)
    every: list[StackService] = [*services(s), *optional]
    for svc in every:
        pid = _read_pid(s, svc.name)
        if pid is not None:
            _say(f"• {svc.name}: already running (pid {pid})")
            continue
        if svc.port is not None and port_in_use(s.host, svc.port):
            setting = getattr(svc, "env_var", None) or _PORT_SETTING.get(svc.name, "MLOPS_MLFLOW_PORT")
            raise StackError(
                f"port {svc.port} on {s.host} is already in use by another program, so {svc.name} cannot start. "
                f"Stop that program, or choose another port ({setting})."
            )
        todo.append(svc)
    if todo:
        _prepare(s)
    if optional:
        observability.render(s)
        if _read_pid(s, observability.PROMETHEUS) is not None:
            observability.reload_prometheus(s)  # a running Prometheus picks up changed rules or targets
    for svc in todo:
        _start(s, svc, service_env(s, svc.name))
    wait_healthy(s)
    serve_up(s)
    _say("")
    _say(
        f"Airflow UI   {s.airflow_url}   login {s.admin_user}, password: MLOPS_ADMIN_PASSWORD "
        f"(generated into {secrets_path(s.home)} unless you set it)"
    )
    _say(f"MLflow UI    http://{s.host}:{s.mlflow_port}")
    if serving_target(s).router_running():
        _say(f"Model API    http://{s.host}:{s.serving_port}/invocations  (/predict, /metrics, /version)")
    if optional:
        url = {svc.name: svc.url for svc in optional}
        _say(f"Prometheus   {url['prometheus']}/alerts   (rules: mlops/alerting/rules/)")
        _say(f"Alertmanager {url['alertmanager']}   Pushgateway {url['pushgateway']}")
    else:
        _say("alerts: local alert source (install the Debian packages: make monitoring)")
    _say(f"Airflow CLI  source {s.home / 'airflow.env'} && airflow dags list")
    return s


def wait_healthy(s: Settings) -> None:
    """Wait until every part is healthy; a StackError when one exits or time runs out."""
    deadline = time.monotonic() + s.start_timeout
    pending = {svc.name: svc for svc in _all_services(s)}
    last: dict[str, str] = {}
    while pending:
        for name, svc in list(pending.items()):
            if _read_pid(s, name) is None:
                log = s.home / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise StackError(f"{name} exited during start-up; last log lines from {log}:\n{tail}")
            ok, detail = svc.health()
            last[name] = detail
            if ok:
                _say(f"• {name}: healthy")
                del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            details = ", ".join(f"{n}: {last.get(n, '?')}" for n in pending)
            raise StackError(f"not healthy after {s.start_timeout}s: {details}. Logs: {s.home / 'logs'}")
        time.sleep(1.0)


def _start(s: Settings, svc: StackService, env: dict[str, str]) -> None:
    logfile = s.home / "logs" / f"{svc.name}.log"
    pid = procs.start_detached(svc.argv, env, logfile, s.home, _pidfile(s, svc.name))
    _say(f"• {svc.name}: started (pid {pid}, log {logfile})")


def _stop(s: Settings, svc: StackService, timeout: float = 30.0) -> bool:
    """Stop the process group recorded for ``svc``; False when it was not running."""
    pid = _read_pid(s, svc.name)
    how = procs.stop(_pidfile(s, svc.name), timeout)
    if how is None:
        return False
    _say(
        f"• {svc.name}: {how} (pid {pid})"
        + (f", did not stop within {timeout:.0f}s" if how == "killed" else "")
    )
    return True


def serve_up(s: Settings, timeout: float = 180.0) -> str | None:
    """Serve the serving model's ``@champion`` on the local endpoint (router + one stable backend).

    Idempotent: what already serves the champion is left alone (a running rollout is never touched:
    only a missing or outdated stable backend is replaced). Returns the URL, or None (with a message)
    while the model has no champion yet.
    """
    from mlops.deploy.target import DeploymentError

    version = _champion_version(s)
    if version is None:
        _say(
            f"• serving: not started, {s.serving_model!r} has no @champion yet "
            "(its deployment DAG starts it; `make up` does once a champion exists)"
        )
        return None
    target = serving_target(s)
    target.ready_timeout = timeout
    try:
        stable = target.backends().get("stable")
        if stable is not None and stable.version == version:
            _say(f"• serving: {s.serving_model} v{version} (@champion) already served")
        else:
            target.ensure_router()
            target.ensure_stable(version)
            _say(f"• serving: {s.serving_model} v{version} (@champion) ready")
        target.ensure_router()
    except DeploymentError as exc:
        raise StackError(f"serving: {exc}") from exc
    return target.endpoint()


def down(s: Settings, timeout: float = 30.0) -> None:
    """Stop the process groups `up` started (by recorded PID), newest first. Nothing else is touched."""
    served = serving_target(s).stop_all()
    for name in served:
        _say(f"• serving: stopped {name}")
    # The monitoring parts are stopped by PID file even when their packages were removed meanwhile.
    every: list[StackService] = [*services(s), *observability.services(s)]
    stopped = [_stop(s, svc, timeout) for svc in reversed(every)]
    if not any(stopped) and not served:
        _say("nothing of the local stack is running")


class StatusRow(TypedDict):
    """One part of the stack as ``mlops stack status`` shows it."""

    service: str
    pid: str  # "-" when not running
    state: str
    health: str  # "healthy", "unhealthy (<why>)" or "-"
    optional: bool  # the stack is healthy without it


def _serving_row(s: Settings) -> StatusRow:
    target = serving_target(s)
    if not target.router_running():
        return {"service": "serving", "pid": "-", "state": "stopped (starts once a @champion exists)",
                "health": "-", "optional": True}  # fmt: skip
    weights, restarts = target.weights(), target.restarts()

    def shown(role: str) -> str:
        return f" ({restarts[role]} restarts)" if restarts.get(role) else ""

    routes = ", ".join(
        f"{r} v{b.version} {weights.get(r, 0)}%{shown(r)}" for r, b in target.backends().items()
    ) + (f"; router{shown('router')}" if restarts.get("router") else "")
    if not target.supervisor_running():
        routes += "; NOT supervised (make up restarts the supervisor)"
    ok, detail = _http_ok(f"{target.endpoint()}/ready")
    return {
        "service": "serving",
        "pid": str(procs.read_pid(target.dir / "router.pid")),
        "state": "running",
        "health": ("healthy" if ok else f"unhealthy ({detail})") + f" [{routes or 'no backend'}]",
        "optional": True,
    }


def status(s: Settings) -> list[StatusRow]:
    """One row per part; the model endpoint and the monitoring servers are optional."""
    rows: list[StatusRow] = []
    monitoring = observability.installed()
    required = [svc.name for svc in services(s)]
    every: list[StackService] = [*services(s), *observability.services(s)]
    for svc in every:
        optional = svc.name not in required
        pid = _read_pid(s, svc.name)
        if pid is None:
            state = "stopped"
            if optional and not monitoring:
                state = "not installed (make monitoring)"
            rows.append(
                {"service": svc.name, "pid": "-", "state": state, "health": "-", "optional": optional}
            )
            continue
        ok, detail = svc.health()
        rows.append(
            {
                "service": svc.name,
                "pid": str(pid),
                "state": "running",
                "health": "healthy" if ok else f"unhealthy ({detail})",
                "optional": optional,
            }
        )
    rows.append(_serving_row(s))
    return rows
