"""Small stages for testing the flow machinery (the real stages plug into the same machinery).

They reuse real stage names, so they receive the real settings sub-models, and each call is
appended to the file named by FILMSUBS_TEST_CALLS so tests can count executions.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prefect import flow

from flows.subtitle import detect_hardware
from settings.jobs import find_job
from settings.model import load_settings
from tasks.contract import StageContext, StageResult, TransientError
from tasks.kernel import StageSkipped, open_run, stage


def _called(ctx: StageContext) -> None:
    calls = os.environ.get("FILMSUBS_TEST_CALLS")
    if calls:
        with open(calls, "a") as fh:
            fh.write(f"{ctx.stage}\n")


@stage("demux", "1")
def demux(ctx: StageContext, settings) -> dict:
    _called(ctx)
    ctx.write_text("audio.txt", f"audio of {ctx.job_file.input_path} clipped at {settings.clip_start}\n")
    return {"lines": 1}


@stage("tmdb", "1", optional=True, secrets=("tmdb_api_key",))
def tmdb(ctx: StageContext, settings) -> dict:
    _called(ctx)
    if ctx.secrets.get("tmdb_api_key") is None:
        raise StageSkipped("no TMDB_API_KEY")
    return {}


@stage("silero_vad", "1")
def silero_vad(ctx: StageContext, settings, demux: StageResult) -> dict:
    _called(ctx)
    audio = ctx.file(demux, "audio.txt").read_text()
    pause = float(os.environ.get("FILMSUBS_TEST_SLOW", "0"))
    with ctx.output("speech.txt") as tmp, tmp.open("w") as fh:
        for i in range(20):
            fh.write(f"{i} {audio}")
            fh.flush()
            time.sleep(pause / 20)
    ctx.write_text("threshold.txt", f"{settings.threshold}\n")
    return {"threshold": settings.threshold}


@stage("asr", "1", gpu=True)
def asr(ctx: StageContext, settings, silero_vad: StageResult, tmdb: StageResult) -> dict:
    _called(ctx)
    flaky = Path(os.environ.get("FILMSUBS_TEST_FLAKY", "/nonexistent/x"))
    if flaky.parent.is_dir() and not flaky.exists():
        flaky.touch()
        raise TransientError("the disk was busy (injected once)")
    speech = ctx.file(silero_vad, "speech.txt").read_text()
    threshold = ctx.file(silero_vad, "threshold.txt").read_text()
    ctx.write_text("transcript.txt", f"{threshold}{speech.upper()}")
    return {"beam": settings.beam_size}


@stage("subtitle_gen", "1")
def subtitle_gen(ctx: StageContext, settings, asr: StageResult) -> dict:
    _called(ctx)
    ctx.write_text("film.en.srt", ctx.file(asr, "transcript.txt").read_text(), final=True)
    return {}


TEST_SPECS = (demux, tmdb, silero_vad, asr, subtitle_gen)


@flow(name="subtitle-test")
def test_pipeline(job_id: str, stages: list[str] | None = None, from_stage: str | None = None):
    """The same frame as the real flow, over the small stages above."""
    job = find_job(load_settings().out_root, job_id)
    settings = load_settings(job.env_file)
    with open_run(job, settings, TEST_SPECS, stages=stages, from_stage=from_stage) as run:
        run.start(detect_hardware(str(settings.out_root), settings.device))
        run.preflight()
        audio = run.submit(demux)
        names = run.submit(tmdb)
        speech = run.submit(silero_vad, demux=audio)
        text = run.submit(asr, silero_vad=speech, tmdb=names)
        run.submit(subtitle_gen, asr=text)
        return run.results()


if __name__ == "__main__":
    test_pipeline(sys.argv[1], stages=sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else None)
    print("finished", Path.cwd())
