"""Deployments as a Prefect user runs them on one machine: a real server, `deployments.serve` and
the watch folder (several machines: tests/test_several_machines.py). Every process started here is
stopped at the end. In the long group: it runs two subtitle jobs through a served deployment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from flows.demo import DEMO_SETTINGS
from flows.sample_film import dialogue, make_film
from tests.conftest import stop

PROJECT = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {
    "ASR__MODEL": DEMO_SETTINGS["asr"]["model"],
    "FILM__SOURCE_LANG": DEMO_SETTINGS["film"]["source_lang"],
    "DIARIZATION__BACKEND": "embedded",
}


@contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        cmd, cwd=PROJECT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        stop(proc)


def wait_for(check, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def deployment_id(name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name).id
        except ObjectNotFound:
            return None


def watch_parameters() -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name("watch-folder/inbox").parameters


def runs_of(deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id(deployment)]))
        )


def final_state(run_id) -> object | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state if state is not None and state.is_final() else None


@pytest.fixture(scope="module")
def short_film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    audio, _ = dialogue([("A", "Raj, the train leaves in ten minutes."), ("B", "I know. My father is waiting.")])
    return make_film(tmp_path_factory.mktemp("films") / "Short Film (2026).mkv", [(audio, "eng")])


@pytest.mark.long
def test_watch_folder_runs_a_new_film_once(
    prefect_server: str, short_film: Path, tmp_path: Path, out_root: Path
) -> None:
    from prefect.deployments import run_deployment

    from flows.inbox import Ledger, ledger_path

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = os.environ | OFFLINE_ENV | {"PREFECT_API_URL": prefect_server, "OUT_ROOT": str(out_root)}
    log = tmp_path / "serve.log"
    # No schedule: the test triggers every scan itself, so no scheduled scan can race it.
    cmd = [sys.executable, "-m", "deployments.serve", "--inbox", str(inbox), "--interval", "0"]
    with background(cmd, env, log) as serve:
        wait_for(
            lambda: deployment_id("watch-folder/inbox") and deployment_id("subtitle/default"),
            180,
            "the served deployments",
            log,
        )
        shutil.copy(short_film, inbox / short_film.name)
        for _ in range(2):  # the first scan only notes size and mtime; the second takes the film
            scan = run_deployment("watch-folder/inbox", timeout=180, as_subflow=False)
            assert scan.state.is_completed(), scan.state
        runs = runs_of("subtitle/default")
        assert len(runs) == 1
        run = runs[0]
        state = wait_for(lambda: final_state(run.id), 900, "the subtitle run", log)
        assert state.is_completed(), f"{state.name}: {state.message}\n{log.read_text()[-4000:]}"
        assert serve.poll() is None
        # Stop the watcher only once the run's own process has exited, as an operator would.
        wait_for(lambda: not psutil.Process(serve.pid).children(recursive=True), 120, "the run's process to exit")

        ledger = Ledger.model_validate_json(ledger_path(out_root, inbox).read_text())
        (entry,) = ledger.films.values()
        assert entry.flow_run_id == str(run.id) and entry.job_id
        job_dirs = list(out_root.glob(f"*/*/*/*/{entry.job_id}"))
        output = job_dirs[0] / "output"
        assert list(output.glob("*.en.srt")) and list(output.glob("*.subtitled.mkv"))

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        with get_client(sync_client=True) as client:
            shown = client.read_flow_run(run.id)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        assert entry.job_id in shown.name and f"job:{entry.job_id}" in shown.tags
        keys = {a.key for a in artifacts}
        assert {
            f"{entry.job_id}-stages",
            f"{entry.job_id}-progress",
            f"{entry.job_id}-subtitle-gen-qc",
            f"{entry.job_id}-asr-progress",
        } <= keys, keys

    # The watcher restarts, now moving finished films away; the same film comes again under
    # another name: no second run.
    with background(cmd + ["--processed", "move"], env, tmp_path / "serve-again.log"):
        wait_for(lambda: watch_parameters().get("processed") == "move", 180, "the re-served deployment", log)
        shutil.copy(short_film, inbox / "copy of the same film.mkv")
        for _ in range(2):
            assert run_deployment("watch-folder/inbox", timeout=180, as_subflow=False).state.is_completed()
        again = runs_of("subtitle/default")
        assert len(again) == 1, [(r.name, r.state_name, r.created, r.idempotency_key, r.run_count) for r in again]
    ledger = Ledger.model_validate_json(ledger_path(out_root, inbox).read_text())
    assert [e.state for e in ledger.films.values()] == ["done"]
    moved = inbox / ".done" / short_film.name
    assert moved.is_file() and not (inbox / short_film.name).exists()
    assert [e.path for e in ledger.films.values()] == [str(moved)]
