"""The flow machinery: caching, resume, kill -9, setting changes, locks, retries, artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.prepare import prepare_job
from settings.jobs import Job
from tasks.kernel import JobBusy, job_lock, read_manifest
from tests.media import make_film, noise

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def job(tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch) -> Job:
    film = make_film(tmp_path / "film.mkv", [(noise(2.0), "hin")])
    monkeypatch.setenv("FILMSUBS_TEST_CALLS", str(tmp_path / "calls.txt"))
    return prepare_job(film)


def calls(job: Job) -> list[str]:
    path = Path(os.environ["FILMSUBS_TEST_CALLS"])
    out = path.read_text().split() if path.exists() else []
    path.unlink(missing_ok=True)
    return out


def task_states(job: Job) -> dict[str, str]:
    """Prefect's own record of the latest run: stage name -> state name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = read_manifest(job).flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def run(job: Job, **kwargs):
    from tests.pipeline_stages import test_pipeline

    return test_pipeline(job.job_id, **kwargs)


def test_resume_after_failure_skips_finished_stages(job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE__FAIL_AT", "asr")
    with pytest.raises(Exception, match="stage asr failed"):
        run(job)
    assert sorted(calls(job)) == ["demux", "silero_vad", "tmdb"]
    assert read_manifest(job).stages["asr"].state == "failed"
    assert read_manifest(job).stages["subtitle_gen"].state == "pending"

    monkeypatch.delenv("PIPELINE__FAIL_AT")
    results = run(job)
    assert sorted(calls(job)) == ["asr", "subtitle_gen"]
    states = task_states(job)
    assert states["demux"] == "Cached" and states["silero_vad"] == "Cached" and states["tmdb"] == "Cached"
    assert states["asr"] == "Completed"
    assert (job.output_dir / "film.en.srt").is_file()
    assert results["tmdb"].skipped == "no TMDB_API_KEY"
    entries = read_manifest(job).stages
    assert entries["demux"].state == "cached" and entries["asr"].state == "done"
    assert entries["tmdb"].state == "skipped" and entries["tmdb"].message == "no TMDB_API_KEY"


def test_changed_setting_reruns_stage_and_downstream_only(job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    run(job)
    calls(job)
    monkeypatch.setenv("SILERO_VAD__THRESHOLD", "0.7")
    run(job)
    assert sorted(calls(job)) == ["asr", "silero_vad", "subtitle_gen"]
    assert (job.output_dir / "film.en.srt").read_text().startswith("0.7")


def test_deleted_or_altered_output_reruns_that_stage(job: Job) -> None:
    run(job)
    calls(job)
    (job.dir / "06_asr" / "transcript.txt").write_text("tampered")
    run(job)
    assert calls(job) == ["asr"]  # same content again, so subtitle_gen stays cached
    (job.dir / "01_demux" / "audio.txt").unlink()
    run(job)
    assert calls(job) == ["demux"]
    assert (job.dir / "01_demux" / "audio.txt").is_file()


def test_stages_and_from_stage_force_reruns(job: Job) -> None:
    run(job)
    calls(job)
    run(job, stages=["asr"])
    assert calls(job) == ["asr"]
    run(job, from_stage="silero_vad")
    assert sorted(calls(job)) == ["asr", "silero_vad", "subtitle_gen"]


def test_stages_refuses_when_upstream_never_ran(job: Job) -> None:
    with pytest.raises(Exception, match="run the whole job first"):
        run(job, stages=["subtitle_gen"])


def test_transient_failure_is_retried(job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILMSUBS_TEST_FLAKY", str(tmp_path / "flaky-marker"))
    monkeypatch.setenv("ASR__RETRY_DELAY_S", "0")
    run(job)
    assert calls(job).count("asr") == 2


def test_second_run_of_a_busy_job_refuses(job: Job) -> None:
    with job_lock(job):
        with pytest.raises(JobBusy, match="already running"):
            run(job)
    assert calls(job) == []


def test_gpu_limit_and_artifacts_exist(job: Job) -> None:
    from prefect.client.orchestration import get_client

    run(job)
    key = job.job_id.lower()
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("gpu")
        assert limit.limit >= 1
        run_id = read_manifest(job).flow_run_id
        tables = [
            a
            for a in client.read_artifacts(artifact_filter=_key_filter(f"{key}-stages"))
            if str(a.flow_run_id) == run_id
        ]
        progress = [
            a
            for a in client.read_artifacts(artifact_filter=_key_filter(f"{key}-progress"))
            if str(a.flow_run_id) == run_id
        ]
    assert tables and "| demux | done" in tables[0].data
    assert progress and float(progress[0].data) == pytest.approx(100.0)


def _key_filter(key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    return ArtifactFilter(key=ArtifactFilterKey(any_=[key]))


def test_kill_9_mid_stage_resumes_there(job: Job, tmp_path: Path) -> None:
    env = os.environ | {"FILMSUBS_TEST_SLOW": "30"}
    cmd = [sys.executable, "-m", "tests.pipeline_stages", job.job_id]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stage_dir = job.dir / "04_silero_vad"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(stage_dir.glob(".speech*.tmp*")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (stage_dir / "speech.txt").exists(), "a half-written file must never look finished"
    status = subprocess.run(
        [sys.executable, "-m", "flows.subtitle", "status", job.job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "silero_vad" in status.stdout and "interrupted" in status.stdout, status.stdout + status.stderr
    assert sorted(calls(job)) == ["demux", "silero_vad", "tmdb"]
    env["FILMSUBS_TEST_SLOW"] = "0"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(calls(job)) == ["asr", "silero_vad", "subtitle_gen"]
    assert len((stage_dir / "speech.txt").read_text().splitlines()) == 20


def test_a_missing_model_stops_the_run_before_any_stage(
    tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real flow with ASR__MODEL naming a model that is not cached: refused before demux runs."""
    from flows.subtitle import subtitle

    film = make_film(tmp_path / "film.mkv", [(noise(1.0), "hin")])
    monkeypatch.setenv("CACHE_ROOT", str(tmp_path / "empty-cache"))
    job = prepare_job(film, {"asr": {"model": "small"}, "cache_root": str(tmp_path / "empty-cache")})
    with pytest.raises(Exception, match="stage asr cannot run: .*hf download Systran/faster-whisper-small"):
        subtitle(job_id=job.job_id)
    stages = read_manifest(job).stages
    assert stages["asr"].state == "failed" and stages["asr"].message.startswith("not started")
    assert stages["demux"].state == "pending" and not (job.dir / "01_demux").exists()


def test_pyannote_without_a_token_stops_the_run_before_any_stage(
    tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.subtitle import subtitle

    film = make_film(tmp_path / "film.mkv", [(noise(1.0), "hin")])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("FILMSUBS_CONFIG_DIR", str(tmp_path / "no-config"))  # no config/secrets.json either
    job = prepare_job(film, {"diarization": {"backend": "pyannote"}, "asr": {"model": "packaged"}})
    with pytest.raises(Exception, match="stage diarization cannot run: .*HF_TOKEN"):
        subtitle(job_id=job.job_id)
    assert read_manifest(job).stages["demux"].state == "pending"


def test_device_is_picked_on_the_machine_that_runs_the_job(
    tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prepared where the profile says CPU, run where it says CUDA (a GPU worker): the stages get cuda."""
    from hardware.profile import cached_profile
    from tests.test_hardware import CPU_BOX, CUDA_BOX

    cache = out_root / "hardware_cache.json"
    cached_profile(cache, CPU_BOX)
    monkeypatch.setenv("FILMSUBS_TEST_CALLS", str(tmp_path / "calls.txt"))
    job = prepare_job(make_film(tmp_path / "film.mkv", [(noise(2.0), "hin")]))
    assert 'DEVICE="auto"' in job.env_file.read_text()
    cache.unlink()
    cached_profile(cache, CUDA_BOX)  # the worker's machine
    run(job)
    manifest = read_manifest(job)
    assert manifest.device_mode == "CUDA"
    assert manifest.stages["asr"].device == "cuda" and manifest.stages["demux"].device == "cpu"
    log = next(job.logs_dir.glob("00_orchestrator_*.log")).read_text()
    assert "Device mode: CUDA (NVIDIA H200" in log


def test_a_pinned_device_is_kept(tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILMSUBS_TEST_CALLS", str(tmp_path / "calls.txt"))
    job = prepare_job(make_film(tmp_path / "film.mkv", [(noise(2.0), "hin")]), {"device": "cpu"})
    assert 'DEVICE="cpu"' in job.env_file.read_text()
    run(job)
    assert read_manifest(job).stages["asr"].device == "cpu"


def test_the_flow_refuses_wrong_wiring(job: Job) -> None:
    """`submit` checks that the flow passes a stage exactly the results its body declares."""
    from prefect import flow

    from settings.model import load_settings
    from tasks.kernel import open_run
    from tests.pipeline_stages import TEST_SPECS, asr

    @flow(name="miswired")
    def miswired() -> None:
        with open_run(job, load_settings(job.env_file), TEST_SPECS) as pipeline:
            pipeline.submit(asr, silero_vad=None)  # forgets tmdb

    with pytest.raises(TypeError, match=r"stage asr reads \['silero_vad', 'tmdb'\], the flow passed \['silero_vad'\]"):
        miswired()
