"""lyrics_detection's audio half (the music features) runs beside the speech stages through the real flow
when the machine has CPU slots to spare, and after them when it has one; its text half waits for the
transcript."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from flows.prepare import prepare_job
from flows.sample_film import dialogue, make_film
from hardware.profile import detect
from tasks.kernel import read_manifest

LINES = [
    ("A", "The ferry leaves the harbour at noon, so pack the bags tonight."),
    ("B", "Then we still have time for tea before the long drive to the coast."),
    ("A", "Bring the blue umbrella, it always rains when we arrive."),
]


def span(log: Path) -> tuple[datetime, datetime]:
    """When the stage's log says it started and ended."""
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in log.read_text().splitlines() if line]
    return stamps[0], stamps[-1]


@pytest.mark.parametrize("cores", [8, 2])
def test_music_features_run_beside_the_speech_stages_where_there_is_room_and_songs_wait_for_the_transcript(
    prefect_server: str, tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch, cores: int
) -> None:
    from flows.subtitle import subtitle

    # 8 cores give two CPU slots (hardware.policy.cpu_slots): two heavy stages may run at once; 2 cores give one.
    out_root.mkdir(parents=True)
    profile = detect().model_copy(update={"cpu_cores": cores, "kind": "cpu", "detected_at": time.time()})
    (out_root / "hardware_cache.json").write_text(json.dumps(profile.model_dump()))
    for key, value in {"ASR__MODEL": "packaged", "FILM__SOURCE_LANG": "en", "DIARIZATION__BACKEND": "embedded"}.items():
        monkeypatch.setenv(key, value)
    audio, _ = dialogue(LINES)
    job = prepare_job(make_film(tmp_path / "Ferry (2026).mkv", [(audio, "eng")]), {"tmdb": {"enabled": False}})
    subtitle(job_id=job.job_id)

    logs = {path.name.rsplit("_", 1)[0]: path for path in job.logs_dir.glob("*.log")}
    part = span(logs["08_lyrics_detection.music_features"])
    speech = {name: span(logs[name]) for name in ("04_silero_vad", "05_diarization", "06_asr")}
    text_half = span(logs["08_lyrics_detection"])
    print({"music_features": part, **speech, "lyrics_detection": text_half})
    beside = [name for name, (start, end) in speech.items() if start < part[1] and part[0] < end]
    if cores == 8:
        assert part[0] < speech["06_asr"][1], "the audio half waited for the transcript"
        assert beside, "the audio half ran alone although the machine had a CPU slot to spare"
    else:  # with one slot it would only take turns with them: it runs after them, as lyrics_detection did
        assert not beside and part[0] >= speech["06_asr"][1], "the audio half took the one slot from the speech stages"
    assert text_half[0] >= speech["06_asr"][1]
    stages = read_manifest(job).stages
    assert "music_features" not in stages and stages["lyrics_detection"].state == "done"
    songs = json.loads(next(job.dir.glob("08_lyrics_detection/songs.json")).read_text())
    assert songs["regions"] == []  # dialogue only: no song

    # A second run takes both halves from the cache.
    subtitle(job_id=job.job_id)
    assert read_manifest(job).stages["lyrics_detection"].state == "cached"
    assert len(list(job.logs_dir.glob("08_lyrics_detection.music_features_*.log"))) == 1
