"""The subtitle flow: the eleven stages, each called with the results it reads (a stage's part, such as
lyrics_detection's audio half, is submitted as soon as what it reads is ready).

python -m flows.subtitle JOB_ID            (the command line is flows.cli)
"""

if __name__ == "__main__":  # before the imports below: `prepare` and `status` must not pay for Prefect
    from flows.cli import run_command

    run_command()

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.prepare import prepare_job
from settings.jobs import find_job
from settings.model import load_settings
from tasks.asr import asr
from tasks.contract import StageResult
from tasks.demux import demux
from tasks.diarization import diarization
from tasks.kernel import hardware_profile, open_run
from tasks.lyrics_detection import lyrics_detection, music_features
from tasks.mux import mux
from tasks.post_ner import post_ner
from tasks.pre_ner import pre_ner
from tasks.second_pass_translation import second_pass_translation
from tasks.silero_vad import silero_vad
from tasks.subtitle_gen import subtitle_gen
from tasks.tmdb import tmdb

PIPELINE = (
    demux,
    tmdb,
    pre_ner,
    silero_vad,
    diarization,
    asr,
    second_pass_translation,
    lyrics_detection,
    post_ner,
    subtitle_gen,
    mux,
)
detect_hardware = task(name="detect_hardware", cache_policy=NO_CACHE)(hardware_profile)


def _run_name() -> str:
    params = flow_run.parameters
    return f"subtitle-{params.get('job_id') or Path(params.get('input_path') or 'new').stem}"


@flow(name="subtitle", flow_run_name=_run_name, log_prints=True)
def subtitle(
    job_id: str | None = None,
    input_path: str | None = None,
    stages: list[str] | None = None,
    from_stage: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, StageResult]:
    """Subtitle one job (or, given `input_path`, prepare one first); a new run resumes from the cache."""
    job = find_job(load_settings(overrides=overrides).out_root, job_id or _prepared(input_path, overrides))
    settings = load_settings(job.env_file, overrides=overrides)
    _tag_run(job.job_id)
    with open_run(job, settings, PIPELINE, stages=stages, from_stage=from_stage) as run:
        run.start(detect_hardware(str(settings.out_root), settings.device))
        run.preflight()
        media = run.submit(demux)
        cast = run.submit(tmdb)
        glossary = run.submit(pre_ner, tmdb=cast)
        speech = run.submit(silero_vad, demux=media)
        speakers = run.submit(diarization, demux=media, silero_vad=speech)
        transcript = run.submit(asr, demux=media, silero_vad=speech, diarization=speakers, pre_ner=glossary)
        music = run.submit(music_features, demux=media)  # lyrics_detection's audio half: beside the above if room
        english = run.submit(second_pass_translation, demux=media, silero_vad=speech, asr=transcript, pre_ner=glossary)
        songs = run.submit(lyrics_detection, music_features=music, silero_vad=speech, asr=transcript)
        named = run.submit(post_ner, second_pass_translation=english, pre_ner=glossary)
        subtitles = run.submit(subtitle_gen, demux=media, asr=transcript, post_ner=named, lyrics_detection=songs)
        run.submit(mux, subtitle_gen=subtitles)
        return run.results()


def _prepared(input_path: str | None, overrides: dict[str, Any] | None) -> str:
    if input_path is None:
        raise ValueError("give job_id, or input_path to prepare a new job")
    return prepare_job(Path(input_path), overrides).job_id


def _tag_run(job_id: str) -> None:
    """Put the job id in the run's tags and name, also for runs started from a deployment."""
    from prefect.client.orchestration import get_client

    run_id = flow_run.id
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        client.update_flow_run(
            run_id, name=f"subtitle-{job_id}", tags=sorted(set(current.tags or []) | {f"job:{job_id}", "filmsubs"})
        )
