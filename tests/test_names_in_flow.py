"""TMDB names reach the ASR prompt and the English subtitles, through the real flow, with a local
TMDB server standing in for api.themoviedb.org."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.prepare import prepare_job
from flows.sample_film import dialogue, make_film
from tasks.kernel import read_manifest
from tests.tmdb_server import DDLJ, serve_tmdb

LINES = [
    ("A", "Simran, your father Baldev is waiting for us in Punjab."),
    ("B", "Raj, I cannot leave before Kuljeet comes home."),
    ("A", "Then Baldev will be angry with both of us, Simran."),
]
NAMES = ["Simran", "Baldev", "Kuljeet", "Raj"]


def english_names(job) -> list[str]:
    english = next(job.output_dir.glob("*.en.srt")).read_text()
    print(english)
    return [name for name in NAMES if name in english]


def test_tmdb_names_reach_the_prompt_and_the_subtitles(
    prefect_server: str, tmp_path: Path, out_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.subtitle import subtitle

    audio, _ = dialogue(LINES)
    film = make_film(tmp_path / "Dilwale Dulhania Le Jayenge (1995).mkv", [(audio, "eng")])
    with serve_tmdb(films=[DDLJ]) as tmdb:
        for key, value in {
            "TMDB__BASE_URL": tmdb.base_url,
            "TMDB_API_KEY": tmdb.api_key,
            "TMDB__CACHE_DIR": str(tmp_path / "tmdb-cache"),
            "ASR__MODEL": "packaged",
            "FILM__SOURCE_LANG": "en",
            "DIARIZATION__BACKEND": "embedded",
            "TMDB__BACKOFF_S": "0",
        }.items():
            monkeypatch.setenv(key, value)
        without = prepare_job(film, {"tmdb": {"enabled": False}})
        subtitle(job_id=without.job_id)
        job = prepare_job(film)
        subtitle(job_id=job.job_id)
        assert tmdb.count() > 0

    stages = read_manifest(job).stages
    assert stages["tmdb"].state == "done", stages["tmdb"].message
    glossary = json.loads(next(job.dir.glob("*_pre_ner/glossary.json")).read_text())
    prompt = " ".join(glossary["prompt_terms"])
    assert all(name in prompt for name in NAMES), glossary["prompt_terms"]
    asr_log = next(job.logs_dir.glob("*_asr_*.log")).read_text()
    assert "prompt" in asr_log and " 0 terms" not in asr_log

    found_without, found = english_names(without), english_names(job)
    print(f"names spelled as TMDB spells them in the English subtitles: {found} (without TMDB: {found_without})")
    assert {"Simran", "Baldev", "Raj"} <= set(found)
    assert len(found) > len(found_without)
