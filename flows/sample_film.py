"""Generated films: speech from espeak-ng, music and noise from sox, video from ffmpeg.

The demo runs on one, and the tests measure against them: every clip comes with its ground
truth (script, speaker turns, speech regions), so word error rate, diarization error and
timing are checked against known facts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
INSTALL_HINT = (
    "Install it with `bash scripts/setup.sh` (Debian: apt-get install -y ffmpeg espeak-ng sox festival "
    "festival-hi festvox-hi-nsk; macOS: brew install ffmpeg espeak-ng sox)."
)

# Voices that sound clearly different (espeak-ng voice+variant, pitch 0-99, words a minute). The Hindi
# ones read Devanagari: festival's NSK diphone voice (`festival:` + its voice name) and espeak-ng's `hi`.
VOICES: dict[str, tuple[str, int, int]] = {
    "A": ("en-us+m3", 35, 165),
    "B": ("en-gb+f4", 75, 175),
    "C": ("en-us+m7", 15, 150),
    "HA": ("festival:voice_hindi_NSK_diphone", 0, 0),
    "HB": ("hi+f3", 70, 150),
    "HC": ("hi+m3", 30, 140),
}


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"`{tool}` is needed to generate media and is not installed. {INSTALL_HINT}")
    return path


def run(cmd: list[str]) -> None:
    require(cmd[0])
    subprocess.run(cmd, check=True, capture_output=True)


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str
    start: float
    end: float


def speak(text: str, speaker: str = "A") -> np.ndarray:
    """Speech for `text` in the speaker's voice, 16 kHz mono float32, leading/trailing silence trimmed."""
    voice, pitch, speed = VOICES[speaker]
    with tempfile.TemporaryDirectory() as tmp:
        raw, wav = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        if voice.startswith("festival:"):
            script = Path(tmp) / "text.txt"
            script.write_text(text, encoding="utf-8")
            run(["text2wave", "-eval", f"({voice.split(':', 1)[1]})", str(script), "-o", str(raw)])
        else:
            run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text])
        run(["sox", "-R", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)])  # -R: the same dither every time
        audio, _ = sf.read(wav, dtype="float32")
    return trim(audio)


def trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


def music(seconds: float, *, drums: bool = True) -> np.ndarray:
    """Chords (sox synth) over a steady drum pattern, 16 kHz mono float32."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.wav"
        chords = ["pluck", "C3", "pluck", "E3", "pluck", "G3", "pluck", "C4"]
        run(
            [
                "sox",
                "-R",  # repeatable: the synth's noise is seeded, so the same film every time
                "-n",
                "-r",
                str(RATE),
                "-c",
                "1",
                str(out),
                "synth",
                str(seconds),
                *chords,
                "tremolo",
                "2",
                "40",
                "gain",
                "-12",
            ]
        )
        audio, _ = sf.read(out, dtype="float32")
    if drums:
        beat = np.zeros_like(audio)
        period = int(0.5 * RATE)  # 120 bpm
        hit = np.random.default_rng(0).standard_normal(int(0.06 * RATE)) * np.exp(-np.linspace(0, 8, int(0.06 * RATE)))
        kick = np.sin(2 * np.pi * 60 * np.arange(int(0.12 * RATE)) / RATE) * np.exp(
            -np.linspace(0, 6, int(0.12 * RATE))
        )
        for i, start in enumerate(range(0, audio.size - period, period)):
            source = kick if i % 2 == 0 else hit
            beat[start : start + source.size] += 0.5 * source.astype(np.float32)
        audio = audio + beat
    return (audio / max(1e-6, np.abs(audio).max()) * 0.5).astype(np.float32)


def noise(seconds: float, level: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.standard_normal(int(seconds * RATE)) * level).astype(np.float32)


def dialogue(
    lines: list[tuple[str, str]], gaps: list[float] | float = 0.8, lead: float = 0.5, tail: float = 0.5
) -> tuple[np.ndarray, list[Turn]]:
    """Lines `(speaker, text)` spoken in turn with the given gaps; returns audio and the true turns."""
    gap_list = gaps if isinstance(gaps, list) else [gaps] * len(lines)
    pieces: list[np.ndarray] = [np.zeros(int(lead * RATE), np.float32)]
    turns: list[Turn] = []
    t = lead
    for (speaker, text), gap in zip(lines, gap_list, strict=False):
        speech = speak(text, speaker)
        turns.append(Turn(speaker, text, round(t, 3), round(t + speech.size / RATE, 3)))
        pieces += [speech, np.zeros(int(gap * RATE), np.float32)]
        t += speech.size / RATE + int(gap * RATE) / RATE
    pieces.append(np.zeros(int(tail * RATE), np.float32))
    return np.concatenate(pieces), turns


def write_wav(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


def make_film(
    path: Path, tracks: list[tuple[np.ndarray, str]], *, video: bool = True, fps: int = 25, default_track: int = 0
) -> Path:
    """A film with a small test-pattern video and one AAC track per `(audio, language)`."""
    require("ffmpeg")
    with tempfile.TemporaryDirectory() as tmp:
        wavs = [write_wav(Path(tmp) / f"t{i}.wav", audio) for i, (audio, _) in enumerate(tracks)]
        seconds = max(a.size for a, _ in tracks) / RATE
        cmd = ["ffmpeg", "-y", "-v", "error"]
        if video:
            cmd += ["-f", "lavfi", "-i", f"testsrc=size=160x90:rate={fps}:duration={seconds:.3f}"]
        for wav in wavs:
            cmd += ["-i", str(wav)]
        first_audio = 1 if video else 0
        if video:
            cmd += ["-map", "0:v"]
        for i in range(len(wavs)):
            cmd += ["-map", f"{first_audio + i}:a"]
        if video:
            cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        cmd += ["-c:a", "aac", "-b:a", "64k"]
        for i, (_, lang) in enumerate(tracks):
            cmd += [
                f"-metadata:s:a:{i}",
                f"language={lang}",
                f"-disposition:a:{i}",
                "default" if i == default_track else "0",
            ]
        path.parent.mkdir(parents=True, exist_ok=True)
        run(cmd + [str(path)])
    return path
