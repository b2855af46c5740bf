"""Detached processes of the local stack and the local deployment target, tracked by PID files.

A PID file records the PID *and* the process start time, so a recycled PID is never mistaken for
ours; processes run in their own session (process group), so stopping one stops its workers too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from mlops.fileio import atomic_write_json


def proc_start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, from /proc); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def read_pid(path: Path) -> int | None:
    """PID of our live process recorded in ``path``; None (and the stale file removed) otherwise."""
    try:
        rec = json.loads(path.read_text())
        pid, started = int(rec["pid"]), str(rec["start_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if proc_start_time(pid) != started or _is_zombie(pid):
        path.unlink(missing_ok=True)
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped by its parent (it no longer runs)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def write_pid(path: Path, pid: int) -> None:
    """Record ``pid`` and its start time in ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"pid": pid, "start_time": proc_start_time(pid)})


def start_detached(argv: list[str], env: dict[str, str], log: Path, cwd: Path, pidfile: Path) -> int:
    """Start ``argv`` in a new session with output appended to ``log``; record it in ``pidfile``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(cwd),
        )
    write_pid(pidfile, proc.pid)
    return proc.pid


def stop(pidfile: Path, timeout: float = 30.0) -> str | None:
    """Stop the process group recorded in ``pidfile``: SIGTERM, then SIGKILL after ``timeout``.

    Returns None when nothing was running, else ``"stopped"`` or ``"killed"``.
    """
    pid = read_pid(pidfile)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    how = "stopped"
    if group_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        how = "killed"
    pidfile.unlink(missing_ok=True)
    return how


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member (a zombie leader alone does not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts as alive for killpg: look for a live member.
    return any(_pgid_of(p) == pgid for p in _all_pids())


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _pgid_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[2])


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server about to start.

    Taken below the kernel's ephemeral range: a port the OS hands out for ``bind(0)`` can be taken
    by any outgoing connection's local end before the server binds it (seen: an api-server losing
    its port to a health-check client). Never the same port twice in one process.
    """
    import random

    low = min(_ephemeral_range()[0], 32768)
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # fall back to the OS's choice
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
