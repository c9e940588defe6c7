"""silero_vad: speech time found in generated audio with known regions (speech, silence, noise, music bed)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.detection import DetectionPrecision, DetectionRecall

from settings.stages import SileroVadSettings
from tasks.contract import StageResult
from tasks.silero_vad import load_model, speech_segments
from tests.media import RATE, music, noise, speak, write_wav
from tests.support import fake_media, make_job, run_stage

# (kind, content): "speech" lines are (speaker, text); beds are mixed under the speech that follows.
SCENE = [
    ("silence", 1.0),
    ("speech", ("A", "We should leave the city before the monsoon arrives. The river rises every night.")),
    ("noise", 1.5),
    ("speech_over_noise", ("B", "The roads to the village are already flooded, and the bridge is closed.")),
    ("silence", 2.0),
    ("music", 4.0),
    ("speech_over_music", ("C", "Then we will take the morning train to Delhi, before anyone notices.")),
    ("music", 2.0),
    ("silence", 1.5),
    ("speech", ("A", "Pack only what you can carry, and tell nobody where we are going.")),
    ("noise", 2.0),
    ("speech", ("B", "Fine. I will meet you at the station at six, by the old clock tower.")),
    ("silence", 1.0),
]


def build_scene() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The scene's audio and its true speech regions (start, end) in seconds."""
    pieces, truth, t = [], [], 0.0
    bed_music = music(12.0)
    for kind, content in SCENE:
        if kind == "silence":
            piece = np.zeros(int(content * RATE), np.float32)
        elif kind == "noise":
            piece = noise(content, level=0.03)
        elif kind == "music":
            piece = bed_music[: int(content * RATE)]
        else:
            speaker, text = content
            piece = speak(text, speaker) * 0.8
            if kind == "speech_over_noise":
                piece = piece + noise(piece.size / RATE, level=0.03)[: piece.size]
            elif kind == "speech_over_music":
                piece = piece + 0.35 * bed_music[: piece.size]
            truth.append((round(t, 3), round(t + piece.size / RATE, 3)))
        pieces.append(piece.astype(np.float32))
        t += piece.size / RATE
    return np.clip(np.concatenate(pieces), -1, 1), truth


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    audio, truth = build_scene()
    return write_wav(folder / "audio.wav", audio), truth


def fake_demux(job, wav) -> StageResult:
    """A demux result for a WAV placed where demux would write it."""
    return fake_media(job, wav)


def as_annotation(regions) -> Annotation:
    annotation = Annotation()
    for start, end in regions:
        annotation[Segment(start, end)] = "speech"
    return annotation


def test_vad_recall_and_precision(tmp_path, scene):
    wav, truth = scene
    job = make_job(tmp_path)
    started = time.monotonic()
    result = run_stage("silero_vad", job, SileroVadSettings(), upstream={"demux": fake_demux(job, wav)})
    took = time.monotonic() - started
    folder = job.dir / "04_silero_vad"
    found = json.loads((folder / "speech_segments.json").read_text())
    curve = json.loads((folder / "speech_probability.json").read_text())
    reference = as_annotation(truth)
    hypothesis = as_annotation((s["start"], s["end"]) for s in found["segments"])
    duration = sf.info(str(wav)).duration
    uem = Timeline([Segment(0, duration)])
    recall = DetectionRecall()(reference, hypothesis, uem=uem)
    precision = DetectionPrecision()(reference, hypothesis, uem=uem)
    print(
        f"VAD recall={recall:.3f} precision={precision:.3f} speech_ratio={found['speech_ratio']:.3f} "
        f"(true {sum(e - s for s, e in truth) / duration:.3f}) segments={len(found['segments'])} "
        f"on {duration:.1f} s in {took:.1f} s"
    )
    assert recall >= 0.95 and precision >= 0.90
    assert result.summary["speech_ratio"] == found["speech_ratio"]
    assert abs(found["duration_s"] - duration) < 0.01
    assert curve["hop_s"] == 0.5 and len(curve["values"]) == int(np.ceil(duration / 0.5))
    # The curve follows the truth: high inside speech, low in the music-only and silent stretches.
    values = np.array(curve["values"])
    inside = [values[int(s / 0.5) + 1 : int(e / 0.5) - 1].mean() for s, e in truth]
    assert min(inside) > 0.5 and values[:2].max() < 0.2


def test_windows_carry_state_across_edges(tmp_path, scene):
    """Scoring in 11 s windows gives the segments of one pass of get_speech_timestamps over the whole file."""
    import torch
    from silero_vad import get_speech_timestamps

    wav, _ = scene
    settings = SileroVadSettings(window_s=11.0)
    job = make_job(tmp_path)
    run_stage("silero_vad", job, settings, upstream={"demux": fake_demux(job, wav)})
    windowed = json.loads((job.dir / "04_silero_vad" / "speech_segments.json").read_text())["segments"]
    audio, _ = sf.read(wav, dtype="float32")
    whole = get_speech_timestamps(
        torch.from_numpy(audio),
        load_model(),
        threshold=settings.threshold,
        min_speech_duration_ms=settings.min_speech_ms,
        min_silence_duration_ms=settings.min_silence_ms,
        speech_pad_ms=settings.speech_pad_ms,
    )
    expected = [{"start": round(s["start"] / RATE, 3), "end": round(s["end"] / RATE, 3)} for s in whole]
    print(f"windowed {len(windowed)} segments, whole-file {len(expected)} segments")
    assert windowed == expected


def test_settings_shape_the_segments():
    """A longer minimum silence merges segments; a higher minimum speech drops short ones."""
    rate, frames = 16000, 200
    probs = np.zeros(frames, np.float32)
    probs[10:40] = 0.9  # ~1 s of speech
    probs[50:80] = 0.9  # after ~0.3 s of silence
    probs[120:125] = 0.9  # a 0.16 s blip
    samples = frames * 512
    base = speech_segments(probs, samples, rate, SileroVadSettings(min_silence_ms=100, min_speech_ms=100))
    merged = speech_segments(probs, samples, rate, SileroVadSettings(min_silence_ms=500, min_speech_ms=100))
    no_blip = speech_segments(probs, samples, rate, SileroVadSettings(min_silence_ms=100, min_speech_ms=250))
    assert len(base) == 3 and len(merged) == 2 and len(no_blip) == 2
    padded = speech_segments(probs, samples, rate, SileroVadSettings(speech_pad_ms=0, min_silence_ms=100))
    assert padded[0]["start"] == round(10 * 512 / rate, 3)
