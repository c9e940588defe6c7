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

from flows.pipeline import run_job
from tasks.contract import StageContext, TransientError
from tasks.stage import StageSkipped, stage


def _called(ctx: StageContext) -> None:
    calls = os.environ.get("FILMSUBS_TEST_CALLS")
    if calls:
        with open(calls, "a") as fh:
            fh.write(f"{ctx.stage}\n")


@stage("demux", "1", register=False)
def demux(ctx: StageContext, settings) -> dict:
    _called(ctx)
    ctx.write_text("audio.txt", f"audio of {ctx.job_file.input_path} from {settings.sample_rate}\n")
    return {"lines": 1}


@stage("tmdb", "1", optional=True, secrets=("tmdb_api_key",), register=False)
def tmdb(ctx: StageContext, settings) -> dict:
    _called(ctx)
    if ctx.secrets.get("tmdb_api_key") is None:
        raise StageSkipped("no TMDB_API_KEY")
    return {}


@stage("silero_vad", "1", needs=("demux",), register=False)
def silero_vad(ctx: StageContext, settings) -> dict:
    _called(ctx)
    audio = ctx.input("demux", "audio.txt").read_text()
    pause = float(os.environ.get("FILMSUBS_TEST_SLOW", "0"))
    with ctx.output("speech.txt") as tmp, tmp.open("w") as fh:
        for i in range(20):
            fh.write(f"{i} {audio}")
            fh.flush()
            time.sleep(pause / 20)
    ctx.write_text("threshold.txt", f"{settings.threshold}\n")
    return {"threshold": settings.threshold}


@stage("asr", "1", needs=("silero_vad", "tmdb"), gpu=True, register=False)
def asr(ctx: StageContext, settings) -> dict:
    _called(ctx)
    flaky = Path(os.environ.get("FILMSUBS_TEST_FLAKY", "/nonexistent/x"))
    if flaky.parent.is_dir() and not flaky.exists():
        flaky.touch()
        raise TransientError("the disk was busy (injected once)")
    speech = ctx.input("silero_vad", "speech.txt").read_text()
    threshold = ctx.input("silero_vad", "threshold.txt").read_text()
    ctx.write_text("transcript.txt", f"{threshold}{speech.upper()}")
    return {"beam": settings.beam_size}


@stage("subtitle_gen", "1", needs=("asr",), register=False)
def subtitle_gen(ctx: StageContext, settings) -> dict:
    _called(ctx)
    ctx.write_text("film.en.srt", ctx.input("asr", "transcript.txt").read_text(), final=True)
    return {}


TEST_SPECS = [demux, tmdb, silero_vad, asr, subtitle_gen]


@flow(name="subtitle-test")
def test_pipeline(job_id: str, stages: list[str] | None = None, from_stage: str | None = None):
    return run_job(job_id, TEST_SPECS, stages=stages, from_stage=from_stage)


if __name__ == "__main__":
    test_pipeline(sys.argv[1], stages=sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else None)
    print("finished", Path.cwd())
