"""Several machines for real, on one: a PostgreSQL server (started here with initdb and pg_ctl on a
loopback port), the Prefect server on it, two process workers on one pool, each with its own GPU
limit, and the watch folder feeding them. One worker is killed in the middle of its run; the run
started again goes to the other worker and resumes from the shared job folder's cache. That worker
is stopped with SIGTERM in the middle of it: the run goes back to the queue and a third worker
finishes it.

PostgreSQL comes from Debian's `postgresql` package (scripts/setup.sh installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from settings.jobs import find_job, now_iso
from tasks.kernel import read_manifest
from tests.conftest import free_port, start_server, stop
from tests.test_deployments import OFFLINE_ENV, PROJECT, background, wait_for
from tests.test_secrets import HF_SENTINEL, TMDB_SENTINEL, leaking_files, leaks
from tests.tmdb_server import serve_tmdb

pytestmark = pytest.mark.long

POOL = "filmsubs-machines"
WORDS = {"Film 1 (2026)": {"tonight", "station", "hurry"}, "Film 2 (2026)": {"garden", "morning", "bucket"}}
INSTALL_HINT = "PostgreSQL is missing: apt-get install -y postgresql (scripts/setup.sh installs it)"


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or (
        [Path(p)] if (p := shutil.which("initdb")) else []
    )
    if not found:
        pytest.skip(INSTALL_HINT)
    return found[-1].parent


@dataclass
class Postgres:
    url: str  # SQLAlchemy's, for Prefect
    dump: Callable[[], bytes]  # pg_dump of the prefect database


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free loopback port."""
    tools = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="filmsubs-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def pg(tool: str, *args: str) -> bytes:
        done = subprocess.run([*as_owner, str(tools / tool), *args], capture_output=True, timeout=120)
        assert done.returncode == 0, f"{tool}: {done.stdout[-2000:]!r}{done.stderr[-2000:]!r}"
        return done.stdout

    pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    pg("pg_ctl", "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-o",
       f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    try:
        address = ("-h", "127.0.0.1", "-p", str(port), "-U", "postgres")
        pg("createdb", *address, "prefect")
        yield Postgres(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect", lambda: pg("pg_dump", *address, "prefect")
        )
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def api(url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def flow_runs(url: str, name_prefix: str = "subtitle-") -> list:
    from prefect.client.orchestration import get_client

    with api(url), get_client(sync_client=True) as client:
        return [r for r in client.read_flow_runs() if r.name.startswith(name_prefix)]


def limits(url: str) -> set[str]:
    from prefect.client.orchestration import get_client

    with api(url), get_client(sync_client=True) as client:
        return {limit.name for limit in client.read_global_concurrency_limits(limit=100, offset=0)}


def start_worker(name: str, env: dict[str, str], log: Path):
    cmd = [sys.executable, "-m", "deployments.worker", "--pool", POOL, "--limit", "1", "--name", name]
    return background(cmd, env | {"PIPELINE__GPU_LIMIT": f"gpu-{name}"}, log)


def taken_by(log: Path, runs: list) -> list:
    text = log.read_text()
    return [r for r in runs if f"submitting flow run '{r.id}'" in text and f"Aborted submission of flow run '{r.id}'"
            not in text]  # fmt: skip


def test_postgres_server_two_workers_watch_folder_and_a_killed_worker(tmp_path: Path) -> None:
    from prefect.deployments import run_deployment

    from tests.media import dialogue, make_film

    films = tmp_path / "films"
    for i, lines in enumerate(
        [
            [("A", "The train leaves at nine tonight."), ("B", "Then we must hurry to the station.")],
            [("C", "The garden needs water every morning."), ("A", "I will fill the buckets at dawn.")],
        ]  # fmt: skip
    ):
        make_film(films / f"Film {i + 1} (2026).mkv", [(dialogue(lines)[0], "eng")])
    inbox, out_root = tmp_path / "inbox", tmp_path / "shared" / "out"
    inbox.mkdir()
    home = Path(tempfile.mkdtemp(prefix="filmsubs-pg-prefect-", dir=tmp_path))
    with postgres() as database, serve_tmdb(api_key=TMDB_SENTINEL) as tmdb:
        server, url = start_server(home, {"PREFECT_SERVER_DATABASE_CONNECTION_URL": database.url})
        try:
            env = os.environ | OFFLINE_ENV | {"PREFECT_API_URL": url, "OUT_ROOT": str(out_root),
                                              "PREFECT_WORKER_QUERY_SECONDS": "2", "PYTHONUNBUFFERED": "1",
                                              "HF_TOKEN": HF_SENTINEL, "TMDB_API_KEY": TMDB_SENTINEL,
                                              "TMDB__BASE_URL": tmdb.base_url, "TMDB__BACKOFF_S": "0",
                                              "TMDB__CACHE_DIR": str(tmp_path / "tmdb-cache")}  # fmt: skip
            register = [sys.executable, "-m", "deployments.work_pool", "--pool", POOL, "--inbox", str(inbox),
                        "--interval", "3600"]  # fmt: skip
            done = subprocess.run(register, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            logs = {name: tmp_path / f"{name}.log" for name in ("worker-1", "worker-2", "worker-3")}
            with start_worker("worker-2", env, logs["worker-2"]) as second:
                with start_worker("worker-1", env, logs["worker-1"]) as first:
                    for film in films.iterdir():
                        shutil.copy(film, inbox / film.name)
                    with api(url):
                        for _ in range(2):  # the first scan notes size and mtime; the second takes the films
                            scan = run_deployment("watch-folder/inbox", timeout=300, as_subflow=False)
                            assert scan.state.is_completed(), scan.state
                    runs = wait_for(lambda: len(flow_runs(url)) == 2 and flow_runs(url), 60, "the two subtitle runs")
                    jobs = {r.id: find_job(out_root, r.parameters["job_id"]) for r in runs}

                    def in_asr_on_first() -> object:  # the run worker-1 took, once it is decoding
                        mine = taken_by(logs["worker-1"], runs)
                        stages = read_manifest(jobs[mine[0].id]).stages if mine else {}
                        return mine and stages.get("asr") and stages["asr"].state == "running" and mine[0]

                    killed = wait_for(in_asr_on_first, 600, "worker-1's run to reach asr", logs["worker-1"])
                    assert taken_by(logs["worker-2"], runs), "each worker takes one of the two runs"
                    kill_tree(first.pid)  # the machine dies: the worker and its flow-run process
                    first.wait()
                other = next(r for r in runs if r.id != killed.id)
                state = wait_for(lambda: final_state(url, other.id), 600, "worker-2's own run", logs["worker-2"])
                assert state.is_completed(), state
                job = jobs[killed.id]
                assert read_manifest(job).stages["asr"].state == "running"  # interrupted, never finished
                with api(url):
                    again = run_deployment("subtitle/default", parameters={"job_id": job.job_id}, timeout=0,
                                           as_subflow=False)  # fmt: skip
                since = now_iso()

                def in_asr_again() -> bool:  # this run, on worker-2 (the killed run left asr marked running)
                    entry = read_manifest(job).stages["asr"]
                    return (
                        entry.state == "running"
                        and (entry.updated or "") >= since
                        and bool(taken_by(logs["worker-2"], [again]))
                    )

                wait_for(in_asr_again, 600, "the run again to reach asr on worker-2", logs["worker-2"])
                second.send_signal(signal.SIGTERM)  # the machine is shut down: its worker hands the run back
                second.wait(timeout=10)
            assert f"handed back 1 flow runs: {again.id}" in logs["worker-2"].read_text(), logs["worker-2"].read_text()
            state = final_state(url, again.id)
            assert state is None, state  # queued again (AwaitingRetry), not crashed
            with start_worker("worker-3", env, logs["worker-3"]):
                state = wait_for(lambda: final_state(url, again.id), 600, "worker-3 to finish it", logs["worker-3"])
                assert state.is_completed(), state
                assert taken_by(logs["worker-3"], [again])
            stages = read_manifest(job).stages
            assert stages["demux"].state == "cached" and stages["silero_vad"].state == "cached", stages
            # asr ran again on worker-3, or finished on worker-2 in the 2.5 s between SIGTERM and SIGKILL (it takes
            # about 3 s on these films) and came from the cache: either way the run resumed, nothing was lost.
            assert stages["asr"].state in {"done", "cached"}, stages
            for one in jobs.values():  # each job has its own film's words, none of the other's
                said = " ".join(p.read_text().lower() for p in one.output_dir.glob("*.en.srt"))
                own, other = WORDS[Path(one.read_job_file().input_path).stem], WORDS.values()
                assert any(w in said for w in own) and not any(w in said for ws in other if ws != own for w in ws), said
            assert {"gpu-worker-1", "gpu-worker-2"} <= limits(url)
            assert tmdb.count() > 0  # the sentinel key was really sent: it was in the runs' hands
            assert leaks(database.dump()) == []  # nor in Prefect's Postgres database
            assert leaking_files(tmp_path) == {}  # job folders, TMDB cache, worker logs, server home
        finally:
            stop(server)


def kill_tree(pid: int) -> None:
    import psutil

    group = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in group:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(group, timeout=30)


def final_state(url: str, run_id: object) -> object | None:
    from prefect.client.orchestration import get_client

    with api(url), get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state if state is not None and state.is_final() else None
