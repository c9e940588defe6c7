"""Test session set-up: a private PREFECT_HOME, and one real Prefect server for the session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Prefect: no state leaks between sessions or into ~/.prefect.
_HOME = Path(tempfile.mkdtemp(prefix="filmsubs-prefect-"))
os.environ["PREFECT_HOME"] = str(_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(_HOME / "storage"))
os.environ.pop("PREFECT_API_URL", None)

SERVER_START_TIMEOUT_S = 120
PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"prefect server did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def start_server(
    home: Path, extra_env: dict[str, str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    log = home / "server.log"
    env = os.environ | {"PREFECT_HOME": str(home)} | (extra_env or {})
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, proc, log, SERVER_START_TIMEOUT_S)
    except Exception:
        stop(proc)
        raise
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real `prefect server start` on loopback for the whole session; its URL."""
    proc, url = start_server(_HOME)
    os.environ["PREFECT_API_URL"] = url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
            from prefect.logging.handlers import APILogHandler

            APILogHandler().flush()  # send queued run logs while the server is still there
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        stop(proc)


@pytest.fixture
def out_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private OUT_ROOT for one test (jobs, hardware cache)."""
    root = tmp_path / "out"
    monkeypatch.setenv("OUT_ROOT", str(root))
    return root


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every outgoing connection fails and is recorded: proves a code path never reaches the network."""
    attempts: list = []

    def refuse(_sock, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture(scope="session")
def hindi_job(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The Hindi demo (`demo --lang hi`) run once for the session: test_hindi checks it, test_faults
    compares its killed-and-resumed runs of the same film with it."""
    import json
    import re

    root = tmp_path_factory.mktemp("hindi")
    film = root / "films" / "Sample Hindi Film (2026).mkv"
    env = os.environ | {"OUT_ROOT": str(root / "out"), "PREFECT_API_URL": prefect_server}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.subtitle", "demo", "--lang", "hi", "--out-film", str(film)],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    job_dir = Path(re.search(r"outputs in (\S+)", done.stdout).group(1)).parent  # type: ignore[union-attr]
    truth = json.loads(film.with_suffix(".truth.json").read_text(encoding="utf-8"))
    print(f"Hindi demo: {seconds:.0f} s wall time (sample film included)")
    return {"dir": job_dir, "truth": truth, "film": film, "seconds": seconds, "stdout": done.stdout}
