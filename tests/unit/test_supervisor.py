"""The supervisor's restart policy: backoff, bounded restarts, records, no restart of what was removed."""

from __future__ import annotations

import contextlib

from mlops.deploy.local.supervisor import ROUTER, RestartPolicy, Supervisor


class FakeTarget:
    """A routing table in memory and processes that are alive or not, as the test says."""

    model = "churn"
    port = 8000

    def __init__(self):
        self.state = {"backends": {"stable": {"version": "3", "url": "http://127.0.0.1:1", "pidfile": "s"},
                                   "canary": {"version": "4", "url": "http://127.0.0.1:2", "pidfile": "c"}}}  # fmt: skip
        self.alive = {"s": True, "c": True, ROUTER: True}
        self.started: list[str] = []
        self.fail_start = False

    @contextlib.contextmanager
    def table(self, keep_dead=None):
        assert keep_dead is True  # the supervisor must see crashed backends to restart them
        yield self.state

    def router_running(self):
        return self.alive[ROUTER]

    def backend_alive(self, b):
        return self.alive[b["pidfile"]]

    def restart_router(self):
        self.started.append(ROUTER)

    def restart_backend(self, role, b):
        if self.fail_start:
            raise OSError("port 2 is in use by another program")
        self.started.append(role)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_backoff_doubles_and_is_capped():
    p = RestartPolicy(backoff_initial_s=1, backoff_max_s=30)
    assert [p.delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_a_crashed_backend_is_restarted_at_once_and_recorded():
    t, clock = FakeTarget(), Clock()
    sup = Supervisor(t, clock=clock)
    assert sup.check() == []
    t.alive["c"] = False
    assert sup.check() == ["restarted canary"]
    assert t.started == ["canary"]
    rec = t.state["backends"]["canary"]
    assert rec["restarts"] == 1 and rec["state"] == "running" and rec["last_restart"]
    assert "restarts" not in t.state["backends"]["stable"]


def test_repeated_crashes_back_off_then_give_up_and_others_are_untouched():
    t, clock = FakeTarget(), Clock()
    sup = Supervisor(t, RestartPolicy(backoff_initial_s=1, backoff_max_s=30, max_restarts=3), clock=clock)
    t.alive["c"] = False  # it dies again right after every restart
    assert sup.check() == ["restarted canary"]  # 1st: at once
    assert sup.check() == []  # 2nd is due 1 s later
    assert t.state["backends"]["canary"]["state"] == "restarting"
    clock.t += 1.0
    assert sup.check() == ["restarted canary"]
    assert sup.check() == []
    clock.t += 1.9
    assert sup.check() == []  # 2 s after the second
    clock.t += 0.1
    assert sup.check() == ["restarted canary"]
    clock.t += 100
    assert sup.check() == ["gave up on canary"]
    assert t.state["backends"]["canary"]["state"] == "failed"
    assert t.state["backends"]["canary"]["restarts"] == 3
    clock.t += 100
    assert sup.check() == []  # no more attempts
    assert t.started == ["canary"] * 3
    assert t.state["backends"]["stable"].get("state") == "running"


def test_restarts_older_than_the_window_do_not_count():
    t, clock = FakeTarget(), Clock()
    sup = Supervisor(t, RestartPolicy(max_restarts=2, window_s=60), clock=clock)
    for _ in range(5):  # one crash every 2 minutes: never more than one restart per window
        t.alive["s"] = False
        assert sup.check() == ["restarted stable"]
        t.alive["s"] = True
        sup.check()
        clock.t += 120
    assert t.state["backends"]["stable"]["restarts"] == 5


def test_the_router_is_supervised_too():
    t, clock = FakeTarget(), Clock()
    sup = Supervisor(t, clock=clock)
    t.alive[ROUTER] = False
    assert sup.check() == ["restarted router"]
    assert t.state[ROUTER]["restarts"] == 1


def test_a_backend_removed_from_the_table_is_forgotten_not_restarted():
    t, clock = FakeTarget(), Clock()
    sup = Supervisor(t, clock=clock)
    t.alive["c"] = False
    sup.check()
    del t.state["backends"]["canary"]  # a rollout removed it
    t.alive["c"] = False
    assert sup.check() == []
    assert t.started == ["canary"]


def test_a_failed_start_is_retried_after_the_backoff():
    t, clock = FakeTarget(), Clock()
    sup = Supervisor(t, RestartPolicy(backoff_initial_s=5), clock=clock)
    t.alive["c"] = False
    t.fail_start = True
    assert sup.check() == ["failed to restart canary"]
    t.fail_start = False
    assert sup.check() == []
    clock.t += 5
    assert sup.check() == ["restarted canary"]


def test_an_exited_child_not_yet_reaped_counts_as_dead(tmp_path):
    """A server killed while its parent (the supervisor, a test) has not reaped it is a zombie: dead."""
    import subprocess
    import time

    from mlops.deploy.local import procs

    child = subprocess.Popen(["sleep", "30"])
    pidfile = tmp_path / "x.pid"
    procs.write_pid(pidfile, child.pid)
    assert procs.read_pid(pidfile) == child.pid
    child.kill()
    time.sleep(0.3)  # exited, not waited for
    assert procs.read_pid(pidfile) is None
    assert not pidfile.exists()
    child.wait()
