"""demux: stream choice, clip range, media facts, clear errors, bounded memory on a long input."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from settings.stages import DemuxSettings
from tasks.contract import PermanentError
from tasks.demux import normalise_language, select_stream
from tests.media import RATE, make_film, require
from tests.support import make_job, run_stage


def tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(path: Path) -> float:
    audio, rate = sf.read(path, dtype="float32")
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


@pytest.fixture(scope="module")
def two_track_film(tmp_path_factory) -> Path:
    """Video at 25 fps, an English dub at 880 Hz (position 0) and Hindi at 440 Hz (position 1, default)."""
    folder = tmp_path_factory.mktemp("film")
    return make_film(folder / "film.mkv", [(tone(880, 6.0), "eng"), (tone(440, 6.0), "hin")], default_track=1)


def demux_files(job) -> tuple[Path, dict]:
    folder = job.dir / "01_demux"
    return folder / "audio.wav", json.loads((folder / "media.json").read_text())


def test_default_track_and_media_facts(tmp_path, two_track_film):
    job = make_job(tmp_path, two_track_film)
    result = run_stage("demux", job, DemuxSettings())
    wav, media = demux_files(job)
    info = sf.info(str(wav))
    print(f"demux summary: {result.summary}")
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.duration - 6.0) < 0.1
    assert media["fps"] == pytest.approx(25.0)
    assert [
        (s["position"], s["language"], s["default"], s["codec"], s["channels"]) for s in media["audio_streams"]
    ] == [(0, "eng", False, "aac", 1), (1, "hin", True, "aac", 1)]
    assert media["selected"]["position"] == 1 and media["clip"] is None
    assert media["selected"]["index"] == 2  # ffprobe index: video is stream 0
    assert abs(dominant_hz(wav) - 440) < 5
    assert {f.name.split("/")[-1] for f in result.files} == {"audio.wav", "media.json"}
    log = next(job.logs_dir.glob("01_demux_*.log")).read_text()
    assert "default-flagged" in log


def test_track_by_language_and_by_position(tmp_path, two_track_film):
    job = make_job(tmp_path / "lang", two_track_film)
    run_stage("demux", job, DemuxSettings(audio_language="en"))
    wav, media = demux_files(job)
    assert media["selected"]["language"] == "eng" and abs(dominant_hz(wav) - 880) < 5

    job = make_job(tmp_path / "pos", two_track_film)
    run_stage("demux", job, DemuxSettings(audio_track=0))
    wav, media = demux_files(job)
    assert media["selected"]["position"] == 0 and abs(dominant_hz(wav) - 880) < 5


def test_clip_range(tmp_path, two_track_film):
    job = make_job(tmp_path, two_track_film)
    run_stage("demux", job, DemuxSettings(clip_start=1.5, clip_end=4.0))
    wav, media = demux_files(job)
    print(f"clip duration {sf.info(str(wav)).duration:.3f} s (expected 2.5)")
    assert abs(sf.info(str(wav)).duration - 2.5) < 0.05
    assert media["clip"] == {"start": 1.5, "end": 4.0} and abs(media["duration_s"] - 2.5) < 0.05
    # an end past the film is clamped to it
    job = make_job(tmp_path / "tail", two_track_film)
    run_stage("demux", job, DemuxSettings(clip_start=5.0, clip_end=60.0))
    wav, media = demux_files(job)
    assert media["clip"]["end"] == media["source_duration_s"] < 60
    assert abs(sf.info(str(wav)).duration - (media["source_duration_s"] - 5.0)) < 0.05


def test_default_selection_rules():
    def streams(*specs):
        return [
            {"index": i + 1, "position": i, "codec": "aac", "channels": 2, "language": lang, "default": default}
            for i, (lang, default) in enumerate(specs)
        ]

    assert select_stream(streams(("eng", False), ("hin", True)), DemuxSettings())[0]["position"] == 1
    assert select_stream(streams(("eng", False), ("hin", False), ("hi", False)), DemuxSettings())[0]["position"] == 1
    assert select_stream(streams(("eng", False), ("tam", False)), DemuxSettings())[0]["position"] == 0
    assert (
        select_stream(streams(("eng", False), ("Hindi", False)), DemuxSettings(audio_language="hin"))[0]["position"]
        == 1
    )
    assert (
        normalise_language("und") is None and normalise_language("hin") == "hi" and normalise_language("en-US") == "en"
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        (DemuxSettings(audio_track=5), "DEMUX__AUDIO_TRACK=5"),
        (DemuxSettings(audio_language="ta"), "DEMUX__AUDIO_LANGUAGE=ta"),
        (DemuxSettings(clip_start=30.0), "past the end"),
        (DemuxSettings(clip_start=3.0, clip_end=2.0), "must be after"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, two_track_film, settings, message):
    job = make_job(tmp_path, two_track_film)
    with pytest.raises(PermanentError, match=message):
        run_stage("demux", job, settings)


def test_no_audio_and_unreadable_media(tmp_path):
    require("ffmpeg")
    silent = tmp_path / "silent.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x36:rate=10:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(silent),
        ],
        check=True,
    )
    with pytest.raises(PermanentError, match="no audio stream"):
        run_stage("demux", make_job(tmp_path / "a", silent), DemuxSettings())
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(PermanentError, match="not readable media"):
        run_stage("demux", make_job(tmp_path / "b", junk), DemuxSettings())


def sine_film(path: Path, seconds: float) -> Path:
    """48 kHz stereo FLAC made by ffmpeg's lavfi sine source (fast even for half an hour)."""
    require("ffmpeg")
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=220:sample_rate=48000:duration={seconds}",
            "-ac",
            "2",
            "-c:a",
            "flac",
            "-compression_level",
            "0",
            str(path),
        ],
        check=True,
    )
    return path


def test_long_input_demuxes_with_bounded_memory(tmp_path):
    """30 minutes of 48 kHz stereo (≈660 MiB decoded as float): ffmpeg's peak RSS stays at its 10-second level."""
    minutes = 30
    started = time.monotonic()
    long_film = sine_film(tmp_path / "long.mka", minutes * 60)
    made = time.monotonic() - started
    short = run_stage("demux", make_job(tmp_path / "short", sine_film(tmp_path / "short.mka", 10)), DemuxSettings())
    job = make_job(tmp_path / "long", long_film)
    started = time.monotonic()
    result = run_stage("demux", job, DemuxSettings())
    took = time.monotonic() - started
    wav, media = demux_files(job)
    peak, base = result.summary["ffmpeg_peak_rss_mb"], short.summary["ffmpeg_peak_rss_mb"]
    decoded_mb = minutes * 60 * 48000 * 2 * 4 / 2**20
    print(
        f"long input: {minutes} min made in {made:.1f} s, demuxed in {took:.1f} s; ffmpeg peak RSS {peak:.1f} MiB "
        f"(10 s input: {base:.1f} MiB; whole decoded input would be {decoded_mb:.0f} MiB, "
        f"output wav {wav.stat().st_size / 2**20:.0f} MiB)"
    )
    assert abs(media["duration_s"] - minutes * 60) < 1
    assert 0 < base and 0 < peak < 150 and peak - base < 32
