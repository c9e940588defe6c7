"""Prefect's temporary server, started as soon as a run knows it will need one.

With no API URL configured Prefect starts a temporary server itself, but only when the flow first calls
the API: after the run has imported its stages, and after importing Prefect's server package into the
client, which needs only the server's address. Started here, at the top of the command, the server boots
on another core while the run imports and checks its job; on the 10-minute bench film's cached re-run
that took the temporary-server run from 11.7 s to 6.7–8.8 s.

It is the same server Prefect would start (its uvicorn command, UI off, ephemeral services), on the same
PREFECT_HOME database. Where an API URL is configured after all (a profile, prefect.toml, .env), or the
server fails to start, it is stopped and Prefect decides as it always does.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PATIENCE_S = 15.0  # waits longer than this say why (the first start on a new PREFECT_HOME migrates the database)


def configured_api_url() -> bool:
    """Whether an API URL is set where a quick look finds it: the environment, or the active profile.

    Prefect reads more places (prefect.toml, .env, pyproject.toml); `serving` asks Prefect itself before
    using the server, so this only spares starting one that would be stopped again.
    """
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    return bool(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporaryServer:
    """A Prefect API server in a child process for the length of this command."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.submodule_search_locations, "Prefect is not installed"
        app_dir = Path(next(iter(spec.submodule_search_locations))).parent
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        # Prefect's own command and environment for its temporary server (prefect.server.api.server).
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
                   "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "error", "--lifespan", "on"]  # fmt: skip
        env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(command, env=env)
        atexit.register(self.stop)  # before Prefect's own exit hooks, so it runs after they sent their logs

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the server answers; False when it exits or does not answer in time."""
        started = time.monotonic()
        said = False
        while time.monotonic() - started < timeout_s:
            if self.process is None or self.process.poll() is not None:
                return False
            if self.answers():
                return True
            if not said and time.monotonic() - started > PATIENCE_S:
                print("waiting for the temporary Prefect server (its first start on a new PREFECT_HOME sets up "
                      "the database; set PREFECT_API_URL to use a running server)", file=sys.stderr)  # fmt: skip
                said = True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_early() -> TemporaryServer | None:
    """A temporary server starting now, unless an API URL is configured (then the run uses that)."""
    return None if configured_api_url() else TemporaryServer()


@contextmanager
def serving(server: TemporaryServer | None) -> Iterator[None]:
    """Run the block against `server` once it answers; without one, Prefect's settings decide as usual."""
    if server is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings

    settings = get_current_settings()
    if PREFECT_API_URL.value() or not settings.server.ephemeral.enabled:
        server.stop()  # configured elsewhere (prefect.toml, .env) or temporary servers are off: Prefect decides
        yield
        return
    # Prefect's own limit, which flows/__init__.py raises to 120 s for a first start on a new PREFECT_HOME.
    if not server.wait_ready(settings.server.ephemeral.startup_timeout_seconds):
        server.stop()
        print("the early temporary Prefect server did not start; Prefect starts its own", file=sys.stderr)
        yield
        return
    # No UI link in the log: like Prefect's own temporary server, this one serves no UI.
    with temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_UI_URL: ""}):
        yield
