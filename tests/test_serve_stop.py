"""`deployments.serve` and `deployments.worker` stop within 10 s of SIGTERM: with their Prefect
server up, and with the server already gone (Prefect's own serve shutdown retried its API calls
for over a minute then); a worker also while it is still starting. A worker stopped mid-run hands
the run back, and another worker finishes it.

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
    return os.environ | OFFLINE_ENV | {"PREFECT_API_URL": url, "PREFECT_LOGGING_LEVEL": "DEBUG",
                                       "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


def start(cmd: list[str], url: str, log: Path, ready: str | None) -> subprocess.Popen:
    """Start `cmd` against `url` and wait until its log shows `ready` (None: not at all)."""
    proc = subprocess.Popen(
        cmd, cwd=PROJECT, env=env_for(url), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    if ready is not None:
        wait_for(lambda: ready in log.read_text() or proc.poll() is not None, 180, f"{cmd[2]} to be ready", log)
    assert proc.poll() is None, log.read_text()[-4000:]
    return proc


def start_serve(url: str, inbox: Path, log: Path) -> subprocess.Popen:
    # Serving: the runner's poller has asked the server for scheduled runs at least once.
    cmd = [sys.executable, "-m", "deployments.serve", "--inbox", str(inbox), "--interval", "0"]
    return start(cmd, url, log, "Discovered")


def start_worker(url: str, log: Path, name: str = "stop-test", ready: str | None = "started!") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "deployments.worker", "--pool", POOL, "--name", name, "--limit", "1"]
    return start(cmd, url, log, ready)


def seconds_to_stop(proc: subprocess.Popen, log: Path) -> float:
    """SIGTERM to the process alone (not its group, as a service manager sends it), and time the exit."""
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


def flow_run_state(url: str, run_id: object) -> object:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def deploy_handback_flow(url: str) -> object:
    """The test flow on POOL, from source like the subtitle deployment; one run of it, scheduled."""
    from prefect import Flow
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    attempts = Path(tempfile.mkdtemp(prefix="filmsubs-handback-")) / "attempts"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        flow: object = Flow.from_source(source=str(PROJECT), entrypoint="tests/handback_flow.py:handed_back")
        flow.deploy(name="handback", work_pool_name=POOL, build=False, push=False, print_next_steps=False)  # type: ignore[attr-defined]
        run = run_deployment("handback-test/handback", parameters={"attempts_file": str(attempts)}, timeout=0)
    return run, attempts


def test_serve_and_worker_stop_within_10_s_of_sigterm_with_and_without_their_server(tmp_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="filmsubs-throwaway-prefect-", dir=tmp_path))
    server, url = start_server(home)
    logs = {name: tmp_path / f"{name}.log" for name in ("serve-up", "worker-starting", "worker-just-started",
            "worker-up", "worker-running", "worker-other", "serve-gone", "worker-gone")}  # fmt: skip
    try:
        create = [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"]
        subprocess.run(create, env=env_for(url), check=True, capture_output=True, timeout=120)
        seconds_to_stop(start_serve(url, tmp_path / "inbox", logs["serve-up"]), logs["serve-up"])
        seconds_to_stop(start_worker(url, logs["worker-starting"], ready=None), logs["worker-starting"])
        seconds_to_stop(start_worker(url, logs["worker-just-started"]), logs["worker-just-started"])
        seconds_to_stop(start_worker(url, logs["worker-up"], ready="scheduled_flow_runs"), logs["worker-up"])

        # Stopped mid-run, a worker hands the run back; the next worker takes it and finishes it.
        run, attempts = deploy_handback_flow(url)
        worker = start_worker(url, logs["worker-running"], name="worker-running")
        wait_for(lambda: attempts.exists(), 180, "the first attempt to start", logs["worker-running"])
        seconds_to_stop(worker, logs["worker-running"])
        state = flow_run_state(url, run.id)
        assert state.is_scheduled(), f"{state}\n{logs['worker-running'].read_text()[-4000:]}"
        other = start_worker(url, logs["worker-other"], name="worker-other")
        try:
            final = wait_for(lambda: (s := flow_run_state(url, run.id)).is_final() and s, 180, "the run to finish",
                             logs["worker-other"])  # fmt: skip
        finally:
            stop(other)
        assert final.is_completed() and attempts.read_text() == "2", (final, attempts.read_text())

        serve = start_serve(url, tmp_path / "inbox", logs["serve-gone"])
        worker = start_worker(url, logs["worker-gone"], ready="scheduled_flow_runs")
        stop(server)
        assert server.returncode is not None
        seconds_to_stop(serve, logs["serve-gone"])
        seconds_to_stop(worker, logs["worker-gone"])
    finally:
        stop(server)
