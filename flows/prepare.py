"""`prepare`: check the film, allocate a job id, write the job folder. Nothing heavy happens here."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from settings.jobs import Job, JobFile, allocate_job_id, fingerprint, job_dir_for, now_iso, write_text_atomic
from settings.model import Settings, job_env_text, load_settings
from settings.volume import OutputVolumeError
from tasks.media import MIN_DURATION_S, MediaError, audio_streams, media_duration, probe, truncation


class InputError(ValueError):
    """Bad input: refused before anything is created (exit status 2)."""


def checked_input(path: Path) -> dict[str, Any]:
    """ffprobe facts of a usable film, or InputError saying what is wrong with it.

    Only cheap checks (a stat, ffprobe, a few packets read near the end), so a bad file is
    refused in a second, before a job folder exists or any model is loaded.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory; give the film file itself")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"{path} is not readable ({exc.strerror}); check its permissions") from exc
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); there is nothing to subtitle")
    try:
        info = probe(path)
    except MediaError as exc:
        raise InputError(f"{exc}; is it a film, and was it copied completely?") from exc
    if not audio_streams(info):
        raise InputError(f"{path} has no audio stream; there is nothing to subtitle")
    duration = media_duration(info)
    if duration is not None and duration < MIN_DURATION_S:
        raise InputError(f"{path} is shorter than {MIN_DURATION_S:.0f} s ({duration:.2f} s), nothing to subtitle")
    cut = truncation(path, info)
    if cut:
        raise InputError(f"{path} looks truncated: {cut}; copy it again")
    return info


def prepare_job(film: Path, overrides: dict[str, Any] | None = None) -> Job:
    """Create a job for `film`: id, folder, `.<JOB_ID>.env`, `job.json`.

    DEVICE stays as the user gave it (`auto` by default): the device is picked on the machine that
    runs the job, which need not be this one (a watch folder on a CPU box feeding GPU workers).
    """
    film = film.expanduser().resolve()
    info = checked_input(film)
    settings: Settings = load_settings(overrides=overrides)
    record = JobFile(
        job_id="",
        input_path=str(film),
        input_size=film.stat().st_size,
        duration_s=media_duration(info),
        fingerprint=fingerprint(film),
        created=now_iso(),
        user=settings.user,
    )
    job: Job | None = None
    try:
        job_id = allocate_job_id(settings.out_root)
        job = Job(job_id=job_id, dir=job_dir_for(settings.out_root, job_id, settings.user))
        job.dir.mkdir(parents=True, exist_ok=False)
        job.logs_dir.mkdir()
        write_text_atomic(job.env_file, job_env_text(settings))
        write_text_atomic(job.job_file, record.model_copy(update={"job_id": job_id}).model_dump_json(indent=2))
    except OSError as exc:  # a read-only or full OUT_ROOT: no half-made job left behind
        if job is not None:
            shutil.rmtree(job.dir, ignore_errors=True)
        raise OutputVolumeError(
            exc.errno,
            f"cannot make a job folder under {settings.out_root} ({exc.strerror}); make OUT_ROOT "
            "writable, free some space or set OUT_ROOT elsewhere",
        ) from exc
    return job
