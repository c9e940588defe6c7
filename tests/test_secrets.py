"""Secrets stay secret: a whole job with sentinel HF_TOKEN and TMDB_API_KEY (TMDB served
locally, and the key really used), then every place a run writes is searched for them as bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.prepare import prepare_job
from flows.sample_film import dialogue, make_film
from tasks.kernel import read_manifest
from tests.conftest import _HOME as PREFECT_HOME
from tests.tmdb_server import DDLJ, serve_tmdb

HF_SENTINEL = "hf_SENTINEL_7f3a9c"
TMDB_SENTINEL = "tmdb-SENTINEL-51e2"
SENTINELS = (HF_SENTINEL.encode(), TMDB_SENTINEL.encode())


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def leaks(data: bytes) -> list[str]:
    return [sentinel.decode() for sentinel in SENTINELS if sentinel in data]


def leaking_files(*roots: Path) -> dict[str, list[str]]:
    found = {}
    for path in files_under(*roots):
        try:
            data = path.read_bytes()
        except OSError:  # a file removed while we look (the server's temporary files)
            continue
        if hits := leaks(str(path).encode() + data):  # its name too (cache keys name result files)
            found[str(path)] = hits
    return found


def prefect_records(flow_run_id) -> bytes:
    """The flow run, its task runs (parameters, cache keys), artifacts and logs, as the API gives them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert len(task_runs) >= 11 and artifacts and logs  # every stage, plus the run's own tasks
    records = [run, *task_runs, *artifacts, *logs]
    return json.dumps([r.model_dump(mode="json") for r in records]).encode()


def test_sentinel_secrets_reach_no_file_log_cache_or_prefect_record(
    prefect_server: str,
    tmp_path: Path,
    out_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.logging.handlers import APILogHandler

    from flows.subtitle import subtitle

    audio, _ = dialogue([("A", "Simran, your father Baldev is waiting."), ("B", "Raj, I know. Let us go.")])
    film = make_film(tmp_path / "Dilwale Dulhania Le Jayenge (1995).mkv", [(audio, "eng")])
    tmdb_cache = tmp_path / "tmdb-cache"
    with serve_tmdb(films=[DDLJ], api_key=TMDB_SENTINEL) as tmdb:
        for key, value in {
            "HF_TOKEN": HF_SENTINEL,
            "TMDB_API_KEY": TMDB_SENTINEL,
            "TMDB__BASE_URL": tmdb.base_url,
            "TMDB__CACHE_DIR": str(tmdb_cache),
            "TMDB__BACKOFF_S": "0",
            "ASR__MODEL": "packaged",
            "FILM__SOURCE_LANG": "en",
            "DIARIZATION__BACKEND": "embedded",
        }.items():
            monkeypatch.setenv(key, value)
        job = prepare_job(film)
        subtitle(job_id=job.job_id)
        assert tmdb.count() > 0  # the key was really sent, so it was really in the run's hands

    manifest = read_manifest(job)
    assert manifest.stages["tmdb"].state == "done", manifest.stages["tmdb"].message
    assert list(job.output_dir.glob("*.en.srt")) and list(job.results_dir.iterdir())  # results, by cache key
    APILogHandler().flush()  # the run's log lines into the server's database first

    assert list(tmdb_cache.glob("*.json")), "the TMDB answer cache was not written"
    assert (out_root / "hardware_cache.json").is_file()
    assert (PREFECT_HOME / "prefect.db").is_file()
    # The job folder (logs, manifest, outputs), OUT_ROOT (hardware cache, ids, locks), the TMDB
    # answer cache, and PREFECT_HOME: the server's SQLite database (and its WAL), its log, results.
    assert leaking_files(job.dir, out_root, tmdb_cache, PREFECT_HOME) == {}
    assert leaks(prefect_records(manifest.flow_run_id)) == []
    out, err = capfd.readouterr()
    assert leaks((out + err).encode()) == []
