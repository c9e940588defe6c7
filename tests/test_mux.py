"""mux: stream copy plus subtitle tracks, checked with ffprobe; the input is never touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from settings.model import FilmSettings
from settings.stages import MuxSettings, SubtitleSettings
from tasks.contract import PermanentError, StageResult, sha256_file
from tasks.media import probe
from tasks.mux import Track, iso639_2, language_name, mux_command, verify
from tests.media import RATE, make_film, require
from tests.support import make_job, run_stage
from tests.test_subtitle_gen import upstream


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("ffmpeg")
    t = np.arange(int(4 * RATE)) / RATE
    tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return make_film(tmp_path_factory.mktemp("film") / "Dil Se Test.mp4", [(tone, "hin"), (tone * 0.5, "eng")])


def subtitles(tmp_path: Path, film: Path, formats: list[str] | None = None) -> tuple:
    job = make_job(tmp_path / "out", film)
    up = upstream(job, fps=25.0)
    result = run_stage(
        "subtitle_gen",
        job,
        SubtitleSettings(formats=formats or ["srt", "vtt", "ass"]),
        upstream=up,
        film=FilmSettings(),
    )
    return job, {"subtitle_gen": result}


def sub_streams(path: Path) -> list[dict]:
    return [s for s in probe(path)["streams"] if s["codec_type"] == "subtitle"]


def test_language_codes_are_iso_639_2() -> None:
    assert [iso639_2(c) for c in ("en", "hi", "hin", "EN-us", "", "xx")] == ["eng", "hin", "hin", "eng", "und", "und"]
    assert language_name("hi") == "Hindi" and language_name("eng") == "English"


def test_mkv_copies_streams_adds_tagged_tracks_and_keeps_the_input(tmp_path: Path, film: Path) -> None:
    before = sha256_file(film)
    job, up = subtitles(tmp_path, film)
    result: StageResult = run_stage("mux", job, MuxSettings(), upstream=up, film=FilmSettings())
    out = job.output_dir / "Dil Se Test.subtitled.mkv"
    print("mux summary:", result.summary)
    info = probe(out)
    kinds = [s["codec_type"] for s in info["streams"]]
    assert kinds == ["video", "audio", "audio", "subtitle", "subtitle"]
    assert [s["codec_name"] for s in info["streams"][:3]] == ["h264", "aac", "aac"]  # copied, not re-encoded
    subs = sub_streams(out)
    assert [(s["codec_name"], s["tags"]["language"], s["disposition"]["default"]) for s in subs] == [
        ("subrip", "eng", 1),
        ("subrip", "hin", 0),
    ]
    assert [s["tags"].get("title") for s in subs] == ["English", "Hindi"]
    assert sha256_file(film) == before  # the input film is never touched
    assert not [p.name for p in job.output_dir.iterdir() if ".tmp" in p.name]  # nothing half-written left

    # A re-run (cache miss, changed setting) replaces the job's own previous output...
    again = run_stage("mux", job, MuxSettings(), upstream=up, film=FilmSettings())
    assert again.summary["size"] == result.summary["size"]
    # ...but never a file it did not write, unless told to.
    out.write_bytes(b"someone else's file")
    with pytest.raises(PermanentError, match="MUX__OVERWRITE"):
        run_stage("mux", job, MuxSettings(), upstream=up, film=FilmSettings())
    assert out.read_bytes() == b"someone else's file"
    run_stage("mux", job, MuxSettings(overwrite=True), upstream=up, film=FilmSettings())
    assert len(sub_streams(out)) == 2
    assert sha256_file(film) == before


def test_mp4_uses_mov_text(tmp_path: Path, film: Path) -> None:
    job, up = subtitles(tmp_path, film, formats=["ass", "vtt"])  # no SRT: ASS is converted
    run_stage("mux", job, MuxSettings(container="mp4"), upstream=up, film=FilmSettings())
    subs = sub_streams(job.output_dir / "Dil Se Test.subtitled.mp4")
    print(
        "mp4 subtitle tracks:",
        [(s["codec_name"], s["tags"].get("language"), s["disposition"]["default"]) for s in subs],
    )
    assert [(s["codec_name"], s["tags"]["language"], s["disposition"]["default"]) for s in subs] == [
        ("mov_text", "eng", 1),
        ("mov_text", "hin", 0),
    ]
    assert [s["tags"].get("handler_name") for s in subs] == ["English", "Hindi"]


def test_the_ffprobe_check_catches_a_wrong_file(tmp_path: Path, film: Path) -> None:
    job, up = subtitles(tmp_path, film, formats=["srt"])
    en = job.output_dir / "Dil Se Test.en.srt"
    hi = job.output_dir / "Dil Se Test.hi.srt"
    wanted = [Track("en", en, "srt"), Track("hi", hi, "srt")]
    wrong = tmp_path / "wrong.mkv"
    mux_command(film, [Track("hi", hi, "srt")], wrong, "mkv", probe(film)).run(quiet=True)  # one track, Hindi default
    problems = verify(probe(film), probe(wrong), wanted, "mkv")
    print("problems found:", problems)
    assert any("1 subtitle tracks instead of 2" in p for p in problems)
    assert any("language hin, expected eng" in p for p in problems)
