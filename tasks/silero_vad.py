"""silero_vad: speech regions of the demuxed audio with the Silero model shipped in `silero-vad`.

The WAV is read in windows (soundfile) and scored frame by frame (512 samples at 16 kHz).
The model's recurrent state and context are carried across window edges (never reset
mid-file), so the frame probabilities equal those of one pass over the whole file while
memory holds only one window. Segments come from the package's own
`get_speech_timestamps_from_probs` (the hysteresis `get_speech_timestamps` uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from settings.stages import SileroVadSettings
from tasks.contract import PermanentError, StageContext, StageResult
from tasks.documents import MediaInfo, Span, SpeechProbability, SpeechRegions
from tasks.kernel import stage

FRAME = 512  # samples per Silero frame at 16 kHz
SUPPORTED_RATES = (16000,)
PROBABILITY_HOP_S = 0.5


def silero() -> Any:
    """The `silero_vad` package. Importing it sets torch's thread count to 1 for the whole
    process; the previous count is restored so later stages in this process keep their threads."""
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad as package
    finally:
        torch.set_num_threads(threads)
    return package


def load_model() -> Any:
    """The packaged Silero model (no torch.hub, no download), its ONNX export run by onnxruntime on CPU.

    Frames must be scored one after another (the state runs on), and per call onnxruntime
    costs about 0.1 ms a frame against 0.4 ms for the TorchScript model (20 s against 90 s
    for a two-hour film); both give the same probabilities.
    """
    return silero().load_silero_vad(onnx=True)


def audio_windows(path: Path, window_s: float) -> Iterator[tuple[np.ndarray, int]]:
    """(mono float32 samples, sample rate) windows of about window_s seconds, each a whole number of frames."""
    with sf.SoundFile(str(path)) as wav:
        if wav.samplerate not in SUPPORTED_RATES:
            raise PermanentError(
                f"{path} is at {wav.samplerate} Hz; Silero VAD needs 16000 Hz (the demux stage writes 16000 Hz)."
            )
        block = max(FRAME, int(window_s * wav.samplerate) // FRAME * FRAME)
        while True:
            data = wav.read(block, dtype="float32", always_2d=True)
            if not len(data):
                return
            yield data.mean(axis=1), wav.samplerate


CONTEXT = 64  # samples of the frame before that the 16 kHz model sees with each frame


def frame_probabilities(
    model: Any, path: Path, window_s: float, progress: Callable[[float, str], None] | None = None
) -> tuple[np.ndarray, int, int]:
    """Speech probability of every 512-sample frame, scored window by window; also (samples, rate).

    The frames go straight to the model's onnxruntime session with numpy arrays, as the package's
    `OnnxWrapper.__call__` passes them (its 64-sample context before each frame, the recurrent state
    carried on): the wrapper's torch round trips per frame took half the stage's time.
    """
    total = sf.info(str(path)).frames
    session = model.session
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, CONTEXT), dtype=np.float32)
    probs: list[np.ndarray] = []
    seen, rate = 0, 16000
    for samples, rate in audio_windows(path, window_s):
        if samples.size % FRAME:
            samples = np.pad(samples, (0, FRAME - samples.size % FRAME))
        frames = samples.reshape(-1, FRAME)
        window = np.empty(len(frames), dtype=np.float32)
        sr = np.array(rate, dtype=np.int64)
        for i, frame in enumerate(frames):
            x = np.concatenate([context, frame[None, :]], axis=1)
            out, state = session.run(None, {"input": x, "state": state, "sr": sr})
            window[i] = out[0, 0]
            context = x[:, -CONTEXT:]
        probs.append(window)
        seen = min(total, seen + samples.size)
        if progress is not None and total:
            progress(seen / total, f"scored {seen / rate:.0f} s")
    return (np.concatenate(probs) if probs else np.zeros(0, np.float32)), total, rate


def speech_segments(probs: np.ndarray, samples: int, rate: int, settings: SileroVadSettings) -> list[dict[str, float]]:
    """Speech regions in seconds, from frame probabilities, with the settings' threshold, durations and padding."""
    stamps = silero().get_speech_timestamps_from_probs(
        probs.tolist(),
        sampling_rate=rate,
        threshold=settings.threshold,
        min_speech_duration_ms=settings.min_speech_ms,
        min_silence_duration_ms=settings.min_silence_ms,
        speech_pad_ms=settings.speech_pad_ms,
        audio_length_samples=samples,
    )
    return [{"start": round(s["start"] / rate, 3), "end": round(s["end"] / rate, 3)} for s in stamps]


def probability_curve(probs: np.ndarray, rate: int, duration_s: float, hop_s: float = PROBABILITY_HOP_S) -> list[float]:
    """Mean speech probability per hop_s window (a frame counts in the window its start falls in)."""
    bins = max(1, int(np.ceil(duration_s / hop_s)))
    index = np.minimum((np.arange(probs.size) * FRAME / rate // hop_s).astype(int), bins - 1)
    sums = np.bincount(index, weights=probs, minlength=bins)
    counts = np.bincount(index, minlength=bins)
    return [round(float(v), 4) for v in np.divide(sums, np.maximum(counts, 1))]


def speech_ratio(segments: list[dict[str, float]], duration_s: float) -> float:
    return round(sum(s["end"] - s["start"] for s in segments) / duration_s, 4) if duration_s > 0 else 0.0


@stage("silero_vad", version="2", heavy=True)
def silero_vad(ctx: StageContext, settings: SileroVadSettings, demux: StageResult) -> dict:
    wav = ctx.file(demux, ctx.read(demux, MediaInfo).audio)
    ctx.log.info("Silero VAD (packaged model) on cpu, windows of %.0f s", settings.window_s)
    model = load_model()
    probs, samples, rate = frame_probabilities(model, wav, settings.window_s, ctx.progress)
    duration = samples / rate
    segments = speech_segments(probs, samples, rate, settings)
    ratio = speech_ratio(segments, duration)
    ctx.write(SpeechRegions(segments=[Span(**s) for s in segments], speech_ratio=ratio, duration_s=round(duration, 3)))
    ctx.write(SpeechProbability(hop_s=PROBABILITY_HOP_S, values=probability_curve(probs, rate, duration)))
    ctx.log.info("%d speech segments, speech ratio %.3f of %.1f s", len(segments), ratio, duration)
    return {"segments": len(segments), "speech_ratio": ratio, "duration_s": round(duration, 3), "device": "cpu"}
