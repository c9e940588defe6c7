"""`deployments.serve` and a work-pool worker stop within 10 s of SIGTERM: with their Prefect
server up, and with the server already gone (Prefect's own serve shutdown retried its API calls
for over a minute then).

A throwaway server on a free port, not the session's: this test kills it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import start_server, stop
from tests.test_deployments import OFFLINE_ENV, PROJECT, wait_for

pytestmark = pytest.mark.long

STOP_WITHIN_S = 10.0


POOL = "filmsubs-stop-test"


def env_for(url: str) -> dict[str, str]:
    return os.environ | OFFLINE_ENV | {"PREFECT_API_URL": url, "PREFECT_LOGGING_LEVEL": "DEBUG"}


def start(cmd: list[str], url: str, log: Path, ready: str) -> subprocess.Popen:
    """Start `cmd` against `url` and wait until its log shows `ready`."""
    proc = subprocess.Popen(
        cmd, cwd=PROJECT, env=env_for(url), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_for(lambda: ready in log.read_text() or proc.poll() is not None, 180, f"{cmd[2]} to be ready", log)
    assert proc.poll() is None, log.read_text()[-4000:]
    return proc


def start_serve(url: str, inbox: Path, log: Path) -> subprocess.Popen:
    # Serving: the runner's poller has asked the server for scheduled runs at least once.
    cmd = [sys.executable, "-m", "deployments.serve", "--inbox", str(inbox), "--interval", "0"]
    return start(cmd, url, log, "Discovered")


def start_worker(url: str, log: Path) -> subprocess.Popen:
    # Working: it has polled for runs once. A SIGTERM in the second after "started!" can be lost in
    # Prefect's own start-up (the worker then ignores the SIGINT its CLI forwards); not our code.
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", "stop-test"]
    return start(cmd, url, log, "scheduled_flow_runs")


def seconds_to_stop(proc: subprocess.Popen, log: Path) -> float:
    """SIGTERM to serve alone (not its group, as a service manager sends it), and time the exit."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        stop(proc)
    took = time.monotonic() - start
    print(f"{log.stem} exited {proc.returncode} {took:.1f} s after SIGTERM")
    assert took < STOP_WITHIN_S, f"{took:.1f} s\n{log.read_text()[-4000:]}"
    return took


def test_serve_and_worker_stop_within_10_s_of_sigterm_with_and_without_their_server(tmp_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="filmsubs-throwaway-prefect-", dir=tmp_path))
    server, url = start_server(home)
    logs = {name: tmp_path / f"{name}.log" for name in ("serve-up", "worker-up", "serve-gone", "worker-gone")}
    try:
        create = [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"]
        subprocess.run(create, env=env_for(url), check=True, capture_output=True, timeout=120)
        seconds_to_stop(start_serve(url, tmp_path / "inbox", logs["serve-up"]), logs["serve-up"])
        seconds_to_stop(start_worker(url, logs["worker-up"]), logs["worker-up"])

        serve = start_serve(url, tmp_path / "inbox", logs["serve-gone"])
        worker = start_worker(url, logs["worker-gone"])
        stop(server)
        assert server.returncode is not None
        seconds_to_stop(serve, logs["serve-gone"])
        seconds_to_stop(worker, logs["worker-gone"])
    finally:
        stop(server)
