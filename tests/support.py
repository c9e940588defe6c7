"""Run one stage body under the stage contract, without Prefect (for stage tests); run the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hardware.policy import StageDevice
from settings.jobs import Job, JobFile, fingerprint, now_iso
from settings.model import FilmSettings, Settings
from settings.stages import StageSettings
from tasks.contract import StageResult, file_record, stage_folder_name
from tasks.kernel import RunEnv, StageSpec, execute

CPU = StageDevice(device="cpu", compute_type="int8", batch_size=4)
PROJECT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = PROJECT, timeout: int = 60) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m flows.subtitle ...` in `cwd`, and its wall time. The Prefect API points at a port nothing
    listens on: a command that should not reach a server fails fast instead of hanging."""
    env = os.environ | {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PYTHONPATH": str(PROJECT)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.subtitle", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip
    return done, time.monotonic() - started


def make_job(root: Path, film: Path | None = None, job_id: str = "20260101-0001") -> Job:
    job = Job(job_id=job_id, dir=root / job_id)
    job.dir.mkdir(parents=True, exist_ok=True)
    if film is not None:
        record = JobFile(
            job_id=job_id,
            input_path=str(film.resolve()),
            input_size=film.stat().st_size,
            fingerprint=fingerprint(film),
            created=now_iso(),
            user="test",
        )
        job.job_file.write_text(record.model_dump_json(indent=2))
    else:
        job.job_file.write_text(json.dumps({"job_id": job_id}))
    return job


def run_stage(
    name: str,
    job: Job,
    settings: StageSettings | None = None,
    upstream: dict[str, StageResult] | None = None,
    film: FilmSettings | None = None,
    device: StageDevice = CPU,
    secrets: dict | None = None,
    cache_root: Path | None = None,
) -> StageResult:
    """One real stage, as the flow runs it; its parts first (as the flow submits them), from `upstream`."""
    spec = stage_spec(name)
    settings = settings or Settings().stage(name)
    env = RunEnv(cache_root=str(cache_root or job.dir / "cache"), secrets=secrets or {})
    upstream = dict(upstream or {})
    for part in spec.parts:
        if part.name not in upstream:
            given = {need: upstream[need] for need in part.needs}
            upstream[part.name] = execute(part, job, settings, device, given, film or FilmSettings(), env)
    return execute(spec, job, settings, device, upstream, film or FilmSettings(), env)


def stage_spec(name: str) -> StageSpec:
    """A real stage, by name: each stage module holds its stage under the stage's own name."""
    import importlib

    return getattr(importlib.import_module(f"tasks.{name}"), name)


def fake_media(job: Job, wav: Path, **facts: Any) -> StageResult:
    """A finished demux stage whose audio is `wav` (copied into its folder)."""
    import shutil

    folder = job.dir / stage_folder_name("demux")
    folder.mkdir(parents=True, exist_ok=True)
    audio = folder / "audio.wav"
    if wav.resolve() != audio.resolve():
        shutil.copyfile(wav, audio)
    stream = {"index": 0, "position": 0}
    media = {"audio": str(audio.relative_to(job.dir)), "duration_s": 0.0, "selected": stream, "source": str(wav)}
    return fake_result(job, "demux", {"media.json": media | facts}, keep=[audio])


def fake_result(job: Job, stage: str, files: dict[str, Any], keep: list[Path] | None = None) -> StageResult:
    """A finished upstream stage that wrote `files` (JSON data, or text) into its folder (plus `keep`)."""
    folder = job.dir / stage_folder_name(stage)
    folder.mkdir(parents=True, exist_ok=True)
    records = [file_record(job.dir, path) for path in keep or []]
    for name, data in files.items():
        path = folder / name
        path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
        records.append(file_record(job.dir, path))
    return StageResult(stage=stage, version="test", job_id=job.job_id, files=records)
