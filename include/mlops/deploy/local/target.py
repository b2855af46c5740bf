"""The ``local`` deployment target: model servers as processes on this machine behind the router.

Layout under ``$MLOPS_HOME/serving/<model>/``:

* ``routes.json`` — the routing table (role -> version, URL, weight, PID file, log), written
  atomically under a file lock; the router (:mod:`mlops.deploy.local.router`) follows it per request;
* ``router.pid`` / ``router.log`` — the endpoint process on the model's port (8000 by default);
* ``v<version>-<port>.pid`` / ``.log`` — one ``mlops serve`` process group per backend, on a free port;
* ``api-token`` (0600) — the endpoint's API token when ``endpoint_token`` is set: every backend then
  requires ``Authorization: Bearer <token>`` on its scoring routes (the router passes the header on);
* ``supervisor.pid`` / ``.log`` — ``mlops supervise``, restarting a crashed router or backend
  (:mod:`mlops.deploy.local.supervisor`); restarts are recorded in ``routes.json``.

Next to that folder, ``$MLOPS_HOME/serving/<model>.prometheus-targets.json`` lists the live backends
in Prometheus' file discovery format (labels ``model``, ``role``, ``model_version``), rewritten with
the routing table, so the local stack's Prometheus scrapes every backend's ``/metrics``.

Every process runs in its own session, so it outlives the Airflow task that started it; ``make down``
stops them all (:meth:`LocalTarget.stop_all`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mlops.config.secrets import scrubbed_env
from mlops.config.settings import Settings
from mlops.deploy.analysis import snapshot_from_text
from mlops.deploy.local import procs
from mlops.deploy.local.scrape import targets_path
from mlops.deploy.target import ROLES, STABLE, Backend, DeploymentError, MetricsSnapshot
from mlops.fileio import atomic_write_json, atomic_write_text, locked

#: Seconds between taking a backend out of the routes and stopping it (in-flight requests finish).
DRAIN_S = 1.0
#: The endpoint's API token (``endpoint_token``) as the model servers read it, in the target's folder.
API_TOKEN_FILE = "api-token"


class LocalTarget:
    """Serving on this machine: a router on the serving port in front of one process per role."""

    kind = "local"

    def __init__(
        self,
        model: str,
        settings: Settings | None = None,
        *,
        port: int | None = None,
        workers: int = 1,
        ready_timeout: float = 180.0,
    ):
        self.s = settings or Settings()
        self.model = model
        self.port = port or self.s.serving_port
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.dir = self.s.home / "serving" / model
        self.routes_path = self.dir / "routes.json"
        self.targets_path = targets_path(self.s.home, model)

    # ----------------------------------------------------------------------------- routing table

    def endpoint(self) -> str:
        """URL of the router (the one clients call)."""
        return f"http://{self.s.host}:{self.port}"

    @contextlib.contextmanager
    def table(self, keep_dead: bool | None = None) -> Iterator[dict[str, Any]]:
        """Read-modify-write of the routing table under an exclusive lock; written back atomically.

        ``keep_dead``: keep backends whose process is gone (default: while a supervisor runs, which
        restarts them; without one they are not deployed any more).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / "routes.lock"):
            state = self._read(keep_dead)
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                atomic_write_json(self.routes_path, state, indent=2)
            self._write_targets(state)

    def prometheus_targets(self, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The live backends in Prometheus' file_sd format: one target group per backend."""
        state = self._read() if state is None else state
        out = []
        for role, b in sorted(state["backends"].items()):
            url = urlsplit(b["url"])
            out.append(
                {
                    "targets": [f"{url.hostname}:{url.port}"],
                    "labels": {"model": self.model, "role": role, "model_version": str(b["version"])},
                }
            )
        return out

    def _write_targets(self, state: dict[str, Any] | None) -> None:
        """Rewrite the targets file when it differs (atomically: Prometheus may read it any time)."""
        text = json.dumps([] if state is None else self.prometheus_targets(state), indent=1) + "\n"
        try:
            if self.targets_path.read_text() == text:
                return
        except OSError:
            pass
        atomic_write_text(self.targets_path, text)

    def _read(self, keep_dead: bool | None = None) -> dict[str, Any]:
        try:
            state = json.loads(self.routes_path.read_text())
        except FileNotFoundError:
            state = {}
        except ValueError as exc:
            raise DeploymentError(f"{self.routes_path} is not valid JSON ({exc}); fix or delete it") from exc
        state.setdefault("model", self.model)
        state.setdefault("backends", {})
        # Backends whose process is gone (machine restart, `make down`, a crash nobody restarts) are
        # not deployed; while the supervisor runs, a crashed one stays: it is being restarted.
        if not (self.supervisor_running() if keep_dead is None else keep_dead):
            for role, b in list(state["backends"].items()):
                if not self.backend_alive(b):
                    del state["backends"][role]
        return state

    @staticmethod
    def backend_alive(b: dict[str, Any]) -> bool:
        """Whether the process of backend record ``b`` is running."""
        return procs.read_pid(Path(b["pidfile"])) is not None

    def restarts(self) -> dict[str, int]:
        """Restarts recorded by the supervisor: per backend role, and ``router``."""
        state = self._read()
        out = {role: int(b.get("restarts", 0)) for role, b in state["backends"].items()}
        out["router"] = int(state.get("router", {}).get("restarts", 0))
        return out

    def backends(self) -> dict[str, Backend]:
        """Backends by role, as the routing table holds them."""
        return {
            role: Backend(role, str(b["version"]), b["url"], b.get("image"))
            for role, b in self._read()["backends"].items()
        }

    def weights(self) -> dict[str, int]:
        """Traffic weight (percent) per deployed role."""
        return {role: int(b["weight"]) for role, b in self._read()["backends"].items()}

    # ----------------------------------------------------------------------------- router

    def _router_pidfile(self) -> Path:
        return self.dir / "router.pid"

    def router_running(self) -> bool:
        """Whether the router process of this model is running."""
        return procs.read_pid(self._router_pidfile()) is not None

    def ensure_router(self) -> None:
        """Start the endpoint process and its supervisor if they are not running (idempotent)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / "routes.lock"):  # the supervisor restarts the router under the same lock
            started = not self.router_running()
            if started:
                if procs.port_in_use(self.s.host, self.port):
                    raise DeploymentError(
                        f"port {self.port} on {self.s.host} is in use by another program, so the "
                        f"{self.model} endpoint cannot start there; stop that program or choose another "
                        "port (MLOPS_SERVING_PORT, or deployment.port in the model config)"
                    )
                self.restart_router()
        if started:
            self._wait(
                f"{self.endpoint()}/router/health", self._router_pidfile(), self.dir / "router.log", 30.0,
                f"{self.model} router",
            )  # fmt: skip
        self.ensure_supervisor()

    def restart_router(self) -> None:
        """Start the router process (the caller holds the routing table's lock and checked it is down)."""
        argv = [
            _mlops_bin(), "route",
            "--routes", str(self.routes_path),
            "--host", self.s.host, "--port", str(self.port),
        ]  # fmt: skip
        procs.start_detached(argv, scrubbed_env(os.environ), self.dir / "router.log", self.dir,
                             self._router_pidfile())  # fmt: skip

    # ----------------------------------------------------------------------------- supervision

    def _supervisor_pidfile(self) -> Path:
        return self.dir / "supervisor.pid"

    def supervisor_running(self) -> bool:
        """Whether ``mlops supervise`` runs for this endpoint."""
        return procs.read_pid(self._supervisor_pidfile()) is not None

    def ensure_supervisor(self) -> None:
        """Start the supervisor of this endpoint if it is not running (idempotent)."""
        with locked(self.dir / "supervisor.lock"):
            if self.supervisor_running():
                return
            argv = [_mlops_bin(), "supervise", "--model", self.model, "--port", str(self.port)]
            env = {**scrubbed_env(os.environ), **self.s.as_env()}  # the same state folder, MLflow, host
            procs.start_detached(argv, env, self.dir / "supervisor.log", self.dir, self._supervisor_pidfile())

    # ----------------------------------------------------------------------------- backends

    def deploy(self, role: str, version: str, image: str | None = None) -> Backend:
        """Start ``version`` in ``role`` at weight 0, return once ready (a ready same version is kept)."""
        if role not in ROLES:
            raise DeploymentError(f"unknown role {role!r}; one of {ROLES}")
        self.ensure_router()
        with self.table() as state:
            cur = state["backends"].get(role)
            if cur is not None:
                if str(cur["version"]) == str(version) and _ready(cur["url"]):
                    return Backend(role, str(version), cur["url"], image)
                if int(cur["weight"]) > 0:
                    raise DeploymentError(
                        f"{self.model} {role} (v{cur['version']}) takes {cur['weight']}% of the traffic; "
                        "move its traffic elsewhere before replacing it"
                    )
                del state["backends"][role]
        if cur is not None:
            self._stop_backend(cur)
        port = procs.free_port(self.s.host)
        url, pidfile, log = (
            f"http://{self.s.host}:{port}",
            self.dir / f"v{version}-{port}.pid",
            self.dir / f"v{version}-{port}.log",
        )
        rec: dict[str, Any] = {
            "version": str(version),
            "url": url,
            "port": port,
            "weight": 0,
            "workers": self.workers,
            "pidfile": str(pidfile),
            "log": str(log),
            "image": image,
            "started": time.time(),
        }
        token = self.s.endpoint_token.get_secret_value()
        if token:  # the server reads it from a 0600 file: never in its argv or environment
            rec["api_token_file"] = str(self.dir / API_TOKEN_FILE)
            atomic_write_text(Path(rec["api_token_file"]), token + "\n", mode=0o600)
        self.restart_backend(role, rec)
        self._wait(f"{url}/ready", pidfile, log, self.ready_timeout, f"{self.model} v{version} ({role})")
        with self.table() as state:
            state["backends"][role] = rec
        return Backend(role, str(version), url, image)

    def restart_backend(self, role: str, b: dict[str, Any]) -> None:
        """Start the model server of backend record ``b`` in ``role`` on its port (it is not running)."""
        if procs.port_in_use(self.s.host, int(b["port"])):
            raise OSError(f"port {b['port']} is in use by another program")
        argv = [
            _mlops_bin(), "serve",
            "--model-uri", f"models:/{self.model}/{b['version']}",
            "--tracking-uri", self.s.tracking_uri,
            "--host", self.s.host, "--port", str(b["port"]),
            "--variant", role, "--workers", str(b.get("workers", self.workers)),
        ]  # fmt: skip
        if b.get("api_token_file"):  # restarts keep the token the backend was deployed with
            argv += ["--api-token-file", b["api_token_file"]]
        # no secret and no Airflow configuration: a model server needs MLflow's address, not Airflow's keys
        env = {
            **scrubbed_env(os.environ),
            "MLOPS_MODEL_VERSION": str(b["version"]),
            "MLOPS_MODEL_NAME": self.model,
        }
        procs.start_detached(argv, env, Path(b["log"]), self.dir, Path(b["pidfile"]))

    def set_weights(self, weights: dict[str, int]) -> None:
        """Split traffic between deployed roles: integers >= 0 summing to 100."""
        bad = {r: w for r, w in weights.items() if not isinstance(w, int) or w < 0}
        if bad or sum(weights.values()) != 100:
            raise DeploymentError(f"weights must be integers >= 0 summing to 100, got {weights}")
        with self.table() as state:
            missing = [r for r, w in weights.items() if w > 0 and r not in state["backends"]]
            if missing:
                raise DeploymentError(f"cannot route traffic to {missing}: not deployed on {self.model}")
            for role, b in state["backends"].items():
                b["weight"] = int(weights.get(role, 0))

    def promote(self, role: str, keep_previous: bool = False) -> None:
        """Make ``role`` the stable backend at 100 %; the former stable is kept as ``previous`` or stopped."""
        stop: list[dict[str, Any]] = []
        with self.table() as state:
            bk = state["backends"]
            if role not in bk:
                raise DeploymentError(f"cannot promote {role}: not deployed on {self.model}")
            if role == STABLE:
                bk[STABLE]["weight"] = 100
                return
            new, old = bk.pop(role), bk.pop(STABLE, None)
            new["weight"] = 100
            bk[STABLE] = new
            for r in list(bk):
                bk[r]["weight"] = 0
            bk[STABLE]["weight"] = 100
            if old is not None:
                old["weight"] = 0
                if keep_previous:
                    if "previous" in bk:
                        stop.append(bk.pop("previous"))
                    bk["previous"] = old
                else:
                    stop.append(old)
        if stop:
            time.sleep(DRAIN_S)
            for b in stop:
                self._stop_backend(b)

    def remove(self, role: str) -> None:
        """Take ``role`` out of the routes and stop it (it must take no traffic); absent is a no-op."""
        with self.table() as state:
            cur = state["backends"].get(role)
            if cur is None:
                return
            if int(cur["weight"]) > 0:
                raise DeploymentError(
                    f"cannot remove {self.model} {role}: it takes {cur['weight']}% of the traffic"
                )
            del state["backends"][role]
        time.sleep(DRAIN_S)
        self._stop_backend(cur)

    def snapshot(self, role: str) -> MetricsSnapshot:
        """Cumulative serving metrics of the backend in ``role``, read from its ``/metrics``."""
        b = self.backends().get(role)
        if b is None:
            raise DeploymentError(f"no {role} backend deployed for {self.model}")
        try:
            r = httpx.get(f"{b.url}/metrics", timeout=10.0, trust_env=False)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise DeploymentError(f"cannot read metrics of {self.model} {role} at {b.url}: {exc}") from exc
        return snapshot_from_text(r.text)

    # ----------------------------------------------------------------------------- lifecycle

    def ensure_stable(self, version: str) -> Backend:
        """Serve ``version`` as stable at 100 % (``make up``: the champion after a restart)."""
        cur = self.backends().get(STABLE)
        if cur is not None and cur.version == str(version):
            self.set_weights({STABLE: 100})
            return cur
        role = "green" if cur is not None else STABLE
        backend = self.deploy(role, version)
        if role != STABLE:
            self.set_weights({role: 100})
            self.promote(role)
        else:
            self.set_weights({STABLE: 100})
        return self.backends()[STABLE] if role != STABLE else backend

    def stop_all(self) -> list[str]:
        """Stop the router and every backend; returns what was stopped."""
        stopped = []
        if procs.stop(self._supervisor_pidfile()):  # first, or it would restart what is stopped next
            stopped.append("supervisor")
        if procs.stop(self._router_pidfile()):
            stopped.append("router")
        if self.dir.exists():
            for pidfile in sorted(self.dir.glob("v*.pid")):
                if procs.stop(pidfile):
                    stopped.append(pidfile.stem)
        if self.targets_path.exists():
            self._write_targets(None)
        return stopped

    def _stop_backend(self, b: dict[str, Any]) -> None:
        procs.stop(Path(b["pidfile"]), timeout=20.0)

    def _wait(self, url: str, pidfile: Path, log: Path, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if procs.read_pid(pidfile) is None:
                raise DeploymentError(f"{what} exited during start-up; last log lines ({log}):\n{_tail(log)}")
            if _ready(url):
                return
            if time.monotonic() > deadline:
                procs.stop(pidfile)
                raise DeploymentError(
                    f"{what} not ready after {timeout:.0f}s at {url}; stopped it. Log ({log}):\n{_tail(log)}"
                )
            time.sleep(0.5)


def _ready(url: str) -> bool:
    if not url.endswith(("/ready", "/health")):
        url = f"{url}/ready"
    try:
        return httpx.get(url, timeout=2.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _mlops_bin() -> str:
    return str(Path(sys.executable).parent / "mlops")
