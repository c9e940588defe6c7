"""subtitle_gen end to end: upstream results written by hand, files checked through pysubs2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pysubs2
import pytest

from settings.jobs import Job
from settings.model import FilmSettings
from settings.stages import SubtitleSettings
from tasks.contract import stage_folder_name
from tasks.documents import SubtitleSet
from tests.support import fake_result, make_job, run_stage

SONG = (40.0, 70.0)


def words(text: str, start: float, end: float) -> list[dict[str, Any]]:
    tokens = text.split()
    step = (end - start) / len(tokens)
    return [
        {
            "word": w,
            "start": round(start + i * step, 3),
            "end": round(start + (i + 0.8) * step, 3),
            "speaker": None,
            "probability": 0.9,
        }
        for i, w in enumerate(tokens)
    ]


SCRIPT = [  # id, start, end, speaker, Hindi, English
    (0, 1.0, 4.2, "SPEAKER_00", "राज, तुम कल बाज़ार क्यों नहीं आए?", "Raj, why didn't you come to the market yesterday?"),
    (1, 4.6, 5.1, "SPEAKER_01", "क्यों?", "Why?"),
    (2, 5.3, 5.8, "SPEAKER_00", "बस ऐसे ही।", "Just because."),
    (
        3,
        8.0,
        15.5,
        "SPEAKER_01",
        "मैं पूरे दिन अपनी माँ के साथ अस्पताल में था क्योंकि उनकी तबीयत बहुत ख़राब थी और डॉक्टर देर से आए।",
        "I was at the hospital with my mother all day because she was very ill and the doctor came late.",
    ),
    (4, 45.0, 50.0, "SPEAKER_00", "दिल मेरा गाए तेरे लिए", "My heart sings for you tonight"),
    (5, 52.0, 57.0, "SPEAKER_00", "दिल मेरा गाए तेरे लिए", "My heart sings for you tonight"),
    (6, 75.0, 77.5, "SPEAKER_01", "चलो, अब घर चलते हैं।", "Come on, let's go home now."),
]


def decode_report() -> dict:
    """Every line's speech fully under words but the one at 20-22 s; one dropped hallucination."""
    regions = [{"start": s, "end": e, "covered_s": e - s} for _, s, e, *_ in SCRIPT]
    regions.append({"start": 20.0, "end": 22.0, "covered_s": 0.0})
    records = [
        {"start": 30.0, "end": 31.0, "text": "thanks for watching", "reason": "stock_phrase", "action": "dropped"}
    ]
    return {"records": records, "regions": regions}


def upstream(job: Job, *, fps: float | None = 24.0, clip: dict | None = None) -> dict:
    transcript = {
        "language": "hi",
        "language_probability": 0.98,
        "model": "test",
        "word_timestamps": "whisper",
        "segments": [
            {
                "id": i,
                "start": s,
                "end": e,
                "text": hi,
                "speaker": sp,
                "avg_logprob": -0.3,
                "no_speech_prob": 0.05,
                "words": words(hi, s, e),
            }
            for i, s, e, sp, hi, _ in SCRIPT
        ],
    }
    english = {
        "backend": "test",
        "source_language": "hi",
        "target_language": "en",
        "passthrough": False,
        "segments": [
            {"id": i, "start": s, "end": e, "text": en, "speaker": sp, "words": [], "source_ids": [i]}
            for i, s, e, sp, _, en in SCRIPT
        ],
    }
    songs = {"regions": [{"start": SONG[0], "end": SONG[1], "score": 0.9}], "lyric_segment_ids": [4, 5]}
    media = {
        "audio": "01_demux/audio.wav",
        "duration_s": 80.0,
        "fps": fps,
        "audio_streams": [],
        "selected": {"index": 0, "position": 0},
        "clip": clip,
        "source": "x",
    }
    return {
        "demux": fake_result(job, "demux", {"media.json": media, "audio.wav": "not read"}),
        "asr": fake_result(job, "asr", {"transcript.json": transcript, "decode_report.json": decode_report()}),
        "post_ner": fake_result(job, "post_ner", {"english.json": english}),
        "lyrics_detection": fake_result(job, "lyrics_detection", {"songs.json": songs}),
    }


@pytest.fixture
def film(tmp_path: Path) -> Path:
    path = tmp_path / "media" / "Dil Se Test.mkv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a real film; subtitle_gen only needs its name")
    return path


def test_writes_english_and_hindi_in_three_formats_with_qc(tmp_path: Path, film: Path) -> None:
    job = make_job(tmp_path / "out", film)
    result = run_stage("subtitle_gen", job, SubtitleSettings(), upstream=upstream(job), film=FilmSettings())
    names = sorted(Path(f.name).name for f in result.files)
    print("files:", names, "summary:", result.summary)
    for lang in ("en", "hi"):
        for fmt in ("srt", "vtt", "ass"):
            assert f"Dil Se Test.{lang}.{fmt}" in names
            assert (job.output_dir / f"Dil Se Test.{lang}.{fmt}").is_file()
    assert {"qc.json", "qc.md", "subtitles.json"} <= set(names)
    subtitle_set = SubtitleSet.model_validate_json((job.dir / result.file("subtitles.json").name).read_text())
    assert [(t.language, t.role) for t in subtitle_set.tracks] == [("en", "target"), ("hi", "source")]
    assert subtitle_set.tracks[0].files["srt"] == "output/Dil Se Test.en.srt"

    srt = pysubs2.load(str(job.output_dir / "Dil Se Test.en.srt"))
    texts = [e.plaintext for e in srt]
    assert any("Raj, why didn't you come" in t for t in texts)
    assert "- Why?\n- Just because." in texts  # two speakers, one event
    raw = (job.output_dir / "Dil Se Test.en.srt").read_text(encoding="utf-8")
    assert "<i>\u266a My heart sings for you tonight \u266a</i>" in raw  # lyrics: italic and note signs
    vtt = (job.output_dir / "Dil Se Test.en.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT")
    hindi = pysubs2.load(str(job.output_dir / "Dil Se Test.hi.srt"))
    assert any("अस्पताल" in e.plaintext for e in hindi)
    frame_ms = 1000 / 24
    for subs in (srt, hindi):
        for a, b in zip(subs, subs[1:], strict=False):
            assert b.start - a.end >= 2 * frame_ms - 1  # two frames at the film's 24 fps
        for event in subs:
            assert all(len(line) <= 42 for line in event.plaintext.splitlines())

    qc = json.loads((job.dir / stage_folder_name("subtitle_gen") / "qc.json").read_text())
    for lang in ("en", "hi"):
        counts = qc["tracks"][lang]["counts"]
        assert all(counts[rule] == 0 for rule in ("line_length", "line_count", "order", "overlap", "min_gap"))
    assert qc["tracks"]["en"]["limits"]["fps"] == 24.0
    assert qc["hard_violations"] == 0
    assert result.summary["qc"]["en"]["events"] == len(srt)
    md = (job.dir / stage_folder_name("subtitle_gen") / "qc.md").read_text()
    assert "| reading_speed |" in md
    spoken = sum(e - s for _, s, e, *_ in SCRIPT if not SONG[0] <= (s + e) / 2 <= SONG[1])
    assert qc["speech_coverage"] == round(spoken / (spoken + 2.0), 3) and qc["uncovered"] == [
        {"start": 20.0, "end": 22.0}
    ]
    assert "no words over the speech at 20.00-22.00 s" in md and "| dropped | stock_phrase |" in md
    print("QC en:", result.summary["qc"]["en"])


def test_songs_left_out_and_children_reading_speed(tmp_path: Path, film: Path) -> None:
    job = make_job(tmp_path / "out", film)
    result = run_stage(
        "subtitle_gen",
        job,
        SubtitleSettings(formats=["srt"], source_subtitles=False, subtitle_songs=False),
        upstream=upstream(job, fps=None),
        film=FilmSettings(audience="children"),
    )
    assert [t["language"] for t in result.summary["tracks"]] == ["en"]
    raw = (job.output_dir / "Dil Se Test.en.srt").read_text(encoding="utf-8")
    assert "heart" not in raw and "\u266a" not in raw
    assert not (job.output_dir / "Dil Se Test.hi.srt").exists()
    qc = json.loads((job.dir / stage_folder_name("subtitle_gen") / "qc.json").read_text())
    assert qc["tracks"]["en"]["limits"]["max_cps"] == 17.0 and qc["tracks"]["en"]["limits"]["fps"] == 25.0


def test_clip_start_shifts_times_to_the_film(tmp_path: Path, film: Path) -> None:
    job = make_job(tmp_path / "out", film)
    run_stage(
        "subtitle_gen",
        job,
        SubtitleSettings(formats=["srt"]),
        upstream=upstream(job, fps=25.0, clip={"start": 100.0, "end": 180.0}),
        film=FilmSettings(),
    )
    srt = pysubs2.load(str(job.output_dir / "Dil Se Test.en.srt"))
    assert srt[0].start == 101_000


def test_a_line_said_before_a_song_in_the_songs_first_segment_stays_dialogue() -> None:
    """Whisper joined the line before a song to the song's first lines in one segment, which lay mostly in
    the song (the 30-minute bench film): each sentence is judged by its own time; the sung ones stay lyrics,
    and with songs left out only they go."""
    from tasks.subtitle_gen import speech_units

    said = words("We need more chairs for the guests in the garden.", 386.84, 390.48)
    sung = words("Under the silver moon we danced tonight.", 397.53, 400.70)
    more = words("Hold my hand and never let it go.", 401.34, 404.58)
    segment = {"id": 33, "start": 386.84, "end": 404.58, "speaker": "SPEAKER_01",
               "text": "We need more chairs for the guests in the garden. Under the silver moon we danced tonight. "
                       "Hold my hand and never let it go.", "words": said + sung + more}  # fmt: skip
    songs = {"regions": [{"start": 389.5, "end": 415.0}], "lyric_segment_ids": [33]}
    units = speech_units([segment], songs, id_keys=("id",))
    assert [(" ".join(w.text for w in u.words), u.lyric) for u in units] == [
        ("We need more chairs for the guests in the garden.", False),
        ("Under the silver moon we danced tonight. Hold my hand and never let it go.", True),
    ]
    left = speech_units([segment], songs, id_keys=("id",), keep_songs=False)
    assert [u.lyric for u in left] == [False] and len(left[0].words) == 10
    # A segment that meets no song keeps the lyrics stage's word for it; one without word times stays whole.
    away = segment | {"start": 100.0, "end": 110.0, "words": words(segment["text"], 100.0, 110.0)}
    assert [u.lyric for u in speech_units([away], songs, id_keys=("id",))] == [True]
    bare = segment | {"words": []}
    assert [u.lyric for u in speech_units([bare], songs, id_keys=("id",))] == [True]
