"""lyrics_detection on generated films: dialogue, a song (with and without a voice), dialogue."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from settings.model import FilmSettings
from settings.stages import LyricsSettings
from tasks.lyrics_detection import lyric_segment_ids, song_regions, speech_curve, text_cues
from tasks.music_features import hop_features
from tests.media import RATE, dialogue, make_film, music, speak, write_wav
from tests.support import fake_result, make_job, run_stage

BEFORE = [
    ("A", "We should leave before the monsoon arrives, the river rises every night."),
    ("B", "The roads to the village are already flooded."),
    ("A", "Then we take the morning train to Delhi."),
    ("B", "Fine, I will meet you at the station at six."),
]
AFTER = [
    ("B", "Did you hear that song? It was beautiful."),
    ("A", "My grandmother used to sing it when I was a child."),
    ("B", "Then sing it for me again tomorrow."),
    ("A", "Only if you promise to dance, my friend."),
]
LYRIC = "my heart is singing for you tonight, my heart is singing for you"
SONG_S = 30.0


def build_film(folder: Path, voiced: bool, unsure: bool = False) -> tuple[Path, dict, tuple[float, float]]:
    """A film with dialogue, a song, dialogue; its hand-written transcript and the song's true span.

    `unsure`: Whisper was unsure the dialogue after the song was speech at all, as the multilingual
    base model is on real Hindi speech; that text cue must not carry the song over the dialogue."""
    first, first_turns = dialogue(BEFORE, gaps=0.8)
    second, second_turns = dialogue(AFTER, gaps=0.8)
    song = music(SONG_S)
    song_start = first.size / RATE
    segments = [
        {
            "id": i,
            "start": t.start,
            "end": t.end,
            "text": t.text,
            "speaker": t.speaker,
            "avg_logprob": -0.3,
            "no_speech_prob": 0.02,
            "words": [],
        }
        for i, t in enumerate(first_turns)
    ]
    if voiced:
        line = speak(LYRIC, "C")
        at = 0
        while at + line.size < song.size:
            song[at : at + line.size] += 0.8 * line
            segments.append(
                {
                    "id": len(segments),
                    "start": round(song_start + at / RATE, 3),
                    "end": round(song_start + (at + line.size) / RATE, 3),
                    "text": LYRIC,
                    "speaker": None,
                    "avg_logprob": -0.9,
                    "no_speech_prob": 0.35,
                    "words": [],
                }
            )
            at += line.size + RATE // 2
    after_start = song_start + song.size / RATE
    segments += [
        {
            "id": len(segments) + i,
            "start": round(after_start + t.start, 3),
            "end": round(after_start + t.end, 3),
            "text": t.text,
            "speaker": t.speaker,
            "avg_logprob": -0.9 if unsure else -0.3,
            "no_speech_prob": 0.6 if unsure else 0.02,
            "words": [],
        }
        for i, t in enumerate(second_turns)
    ]
    audio = np.clip(np.concatenate([first, song, second]), -1, 1).astype(np.float32)
    film = make_film(folder / f"{'voiced' if voiced else 'plain'} song.mkv", [(audio, "hin")])
    transcript = {
        "language": "hi",
        "language_probability": 0.9,
        "model": "hand-written",
        "word_timestamps": "whisper",
        "segments": segments,
    }
    return film, transcript, (round(song_start, 3), round(after_start, 3))


def upstream_for(tmp_path: Path, film: Path, transcript: dict) -> tuple:
    """The real demux and silero_vad stages, and a hand-written transcript."""
    job = make_job(tmp_path / "out", film)
    demux = run_stage("demux", job)
    vad = run_stage("silero_vad", job, upstream={"demux": demux})
    asr = fake_result(job, "asr", {"transcript.json": transcript})
    return job, {"demux": demux, "silero_vad": vad, "asr": asr}


@pytest.mark.parametrize(
    ("voiced", "unsure"),
    [(False, False), (True, False), (True, True)],
    ids=["music-only", "voice-over-music", "unsure-dialogue-after"],
)
def test_song_between_dialogue_is_found_and_no_dialogue_is_flagged(tmp_path: Path, voiced: bool, unsure: bool) -> None:
    """The song region starts and ends where the music does (within a second), not where the smoothed score
    or the transcript's cues would carry it."""
    film, transcript, (true_start, true_end) = build_film(tmp_path, voiced, unsure)
    job, upstream = upstream_for(tmp_path, film, transcript)
    started = time.perf_counter()
    result = run_stage("lyrics_detection", job, LyricsSettings(), upstream=upstream, film=FilmSettings())
    seconds = time.perf_counter() - started
    songs = json.loads((job.dir / result.file("songs.json").name).read_text())
    regions = songs["regions"]
    print(
        f"{'voiced' if voiced else 'plain'}: truth {true_start:.2f}-{true_end:.2f}, found {regions}, "
        f"stage {seconds:.1f} s, summary {result.summary}"
    )
    assert len(regions) == 1
    start_error, end_error = abs(regions[0]["start"] - true_start), abs(regions[0]["end"] - true_end)
    print(f"edge errors: start {start_error:.2f} s, end {end_error:.2f} s")
    assert start_error <= 1.5 and end_error <= 1.5
    dialogue_ids = {s["id"] for s in transcript["segments"] if s["speaker"] is not None}
    song_ids = {s["id"] for s in transcript["segments"] if s["speaker"] is None}
    assert not dialogue_ids & set(songs["lyric_segment_ids"])  # no dialogue flagged
    assert set(songs["lyric_segment_ids"]) == song_ids
    curve = np.array(json.loads((job.dir / result.file("music_score.json").name).read_text())["values"])
    times = (np.arange(curve.size) + 0.5) * 0.5
    outside = curve[(times < true_start - 3) | (times > true_end + 3)]
    inside = curve[(times > true_start + 3) & (times < true_end - 3)]
    print(f"music score: dialogue max {outside.max():.2f}, song min {inside.min():.2f} (threshold 0.5)")


def test_text_cues() -> None:
    segments = [
        {"start": 0, "end": 2, "text": "\u266a la la \u266a", "no_speech_prob": 0.0, "avg_logprob": -0.2},
        {"start": 10, "end": 12, "text": "Tujhe dekha to ye jaana sanam", "no_speech_prob": 0.0, "avg_logprob": -0.2},
        {"start": 20, "end": 22, "text": "Tujhe dekha to yeh jaana sanam!", "no_speech_prob": 0.0, "avg_logprob": -0.2},
        {"start": 30, "end": 32, "text": "Where are you going?", "no_speech_prob": 0.5, "avg_logprob": -0.2},
        {"start": 40, "end": 42, "text": "I am going home now.", "no_speech_prob": 0.01, "avg_logprob": -0.25},
        {"start": 400, "end": 402, "text": "Tujhe dekha to ye jaana sanam", "no_speech_prob": 0.0, "avg_logprob": -0.2},
    ]
    cues = text_cues(segments)
    print("cues:", cues)
    assert cues[0] == 1.0 and cues[1] == cues[2] == 0.6 and cues[3] == pytest.approx(0.3)
    assert cues[4] == 0.0 and cues[5] == 0.0  # a repeat far away is no chorus


def test_regions_are_merged_and_short_ones_dropped() -> None:
    score = np.zeros(200)
    score[20:60] = 0.8  # 10-30 s
    score[64:90] = 0.7  # gap of 2 s: merged, to 45 s
    score[120:150] = 0.9  # 15 s: too short
    regions = song_regions(score, 0.5, merge_gap_s=4.0, min_duration_s=20.0, duration_s=100.0)
    assert [(r["start"], r["end"]) for r in regions] == [(10.0, 45.0)]
    segments = [
        {"id": 1, "start": 9.0, "end": 12.0},
        {"id": 2, "start": 44.0, "end": 48.0},
        {"id": 3, "start": 30.0, "end": 33.0},
    ]
    assert lyric_segment_ids(segments, regions) == [1, 3]


def test_speech_probability_on_another_hop_is_resampled() -> None:
    curve = speech_curve({"hop_s": 1.0, "values": [0.0, 1.0, 1.0, 0.0]}, 8)
    assert curve.shape == (8,) and curve[0] == 0.0 and curve[3] == 1.0


def test_features_do_not_depend_on_the_window_size(tmp_path: Path) -> None:
    """Windows bound the memory; with their margins the beat evidence is the same as in one pass."""
    speech, _ = dialogue(BEFORE[:2], gaps=0.8)
    audio = np.concatenate([speech, music(20.0), speech])
    wav = write_wav(tmp_path / "a.wav", np.clip(audio, -1, 1).astype(np.float32))
    small, whole = hop_features(wav, block_s=15.0), hop_features(wav, block_s=600.0)
    difference = float(np.abs(small.pulse - whole.pulse).max())
    print(f"largest pulse difference between 15 s windows and one pass: {difference:.4f}")
    assert small.pulse.shape == whole.pulse.shape and difference < 0.02


def test_hpss_equals_librosa(tmp_path: Path) -> None:
    """The faster median filters give librosa's separation, edges included (speech and a song)."""
    import librosa

    from tasks.music_features import FRAME_HOP, HPSS_KERNEL, N_FFT, hpss

    speech, _ = dialogue(BEFORE[:1], gaps=0.5)
    audio = np.concatenate([speech, music(6.0)]).astype(np.float32)
    spec = np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=FRAME_HOP))
    ours = hpss(spec, HPSS_KERNEL)
    theirs = librosa.decompose.hpss(spec, kernel_size=(HPSS_KERNEL, HPSS_KERNEL))
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-7)
