"""Music-against-speech evidence from the audio, per 0.5 s hop, read window by window.

Each window (plus a margin for context) goes through an STFT (tasks/spectra.py: librosa's
transforms without librosa's import), harmonic/percussive separation (HPSS), then
- `pulse`: how strongly the percussive onsets repeat at one beat period and at its double
  and triple (a tempogram over a few seconds). Steady rhythm is the clearest mark of a song;
  speech has syllable rhythm but not a beat that holds over multiples;
- `tonal`: pitch continuity, the chroma of the harmonic part staying the same from one frame
  to the next while it is loud (held notes, chords); speech glides and stops;
- `presence`: whether the hop carries sound at all (a frame within LOUD_RANGE_DB of the
  window's loud level; a drum hit counts, a pause does not), so silence is never music.
Only one window is in memory at a time, so a two-hour film costs what a few minutes do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tasks.spectra import chroma, mel_power, onset_strength, power_to_db, soft_mask, stft_magnitude, tempogram

HOP_S = 0.5  # one value per half second, like the VAD's speech_probability.json
FRAME_HOP = 400  # STFT hop in samples (25 ms at 16 kHz): 20 frames a hop
N_FFT = 1024
TEMPO_WINDOW_S = 6.0  # tempogram context
BEAT_RANGE_S = (0.33, 1.0)  # beat periods considered: 60 to 180 beats a minute
TONAL_LAG = 4  # frames (100 ms) between the chroma vectors compared
LOUD_RANGE_DB = 30.0  # a frame this far under the window's loud level counts as quiet
ONSET_FLOOR_S = 1.0  # onsets are measured above their mean over this much time


HPSS_KERNEL = 17  # median filter length, in frames along time (harmonic) and in bins (percussive)
MEDIAN_ROWS = 16  # rows sorted at once by running_median: small enough to stay in cache


@dataclass(frozen=True)
class HopFeatures:
    """Per-hop arrays (same length), values in 0..1."""

    pulse: np.ndarray
    tonal: np.ndarray
    presence: np.ndarray


@dataclass(frozen=True)
class Block:
    samples: np.ndarray  # the core with up to `margin_s` of context each side
    rate: int
    file_start: int  # sample in the file where the core starts (a hop boundary)
    core: tuple[int, int]  # the core's bounds inside `samples`


def audio_blocks(path: Path, block_s: float, margin_s: float) -> Iterator[Block]:
    """The file in blocks of about `block_s`, each read with `margin_s` of context either side."""
    with sf.SoundFile(str(path)) as wav:
        rate, total = wav.samplerate, wav.frames
        hop = int(round(HOP_S * rate))
        block = max(hop, int(block_s * rate) // hop * hop)
        margin = int(margin_s * rate)
        for core_start in range(0, total, block):
            core_end = min(total, core_start + block)
            start = max(0, core_start - margin)
            wav.seek(start)
            data = wav.read(min(total, core_end + margin) - start, dtype="float32", always_2d=True).mean(axis=1)
            yield Block(data, rate, core_start, (core_start - start, core_end - start))


def running_median(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Median over `size` neighbours along `axis` of a 2-D array, edges mirrored.

    Equals `scipy.ndimage.median_filter` with a 1-D footprint and mode "reflect" (what librosa's
    HPSS calls), at a third of its time: a partial sort of a few rows' sliding windows at a time.
    """
    if axis == 0:
        return running_median(values.T, size, 1).T
    half = size // 2
    padded = np.pad(values, ((0, 0), (half, half)), mode="symmetric")
    out = np.empty_like(values)
    for row in range(0, values.shape[0], MEDIAN_ROWS):
        windows = np.lib.stride_tricks.sliding_window_view(padded[row : row + MEDIAN_ROWS], size, axis=1)
        out[row : row + MEDIAN_ROWS] = np.partition(windows, half, axis=-1)[..., half]
    return out


def hpss(spec: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(harmonic, percussive) parts of a magnitude spectrogram: librosa.decompose.hpss with
    kernel (size, size), margin 1 and power 2, whose median filters took 85 % of this stage."""
    along_time = running_median(spec, size, axis=1)
    along_frequency = running_median(spec, size, axis=0)
    harmonic = spec * soft_mask(along_time, along_frequency)
    percussive = spec * soft_mask(along_frequency, along_time)
    return harmonic, percussive


def block_features(samples: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """Per-STFT-frame features of one block (frame k is centred on sample k * FRAME_HOP)."""
    from scipy.ndimage import uniform_filter1d

    spec = stft_magnitude(samples, N_FFT, FRAME_HOP)
    harmonic, percussive = hpss(spec, HPSS_KERNEL)
    energy = (spec**2).sum(axis=0) + 1e-10
    h_energy = (harmonic**2).sum(axis=0)

    onsets = onset_strength(power_to_db(mel_power(percussive**2, rate, 64)), FRAME_HOP)
    frames_per_s = rate / FRAME_HOP
    # Only onsets above the local mean: a noise bed gives a steady onset floor whose rhythm is
    # high at every lag (a "beat" at every period); what stands out of it is what can repeat.
    floor = uniform_filter1d(onsets, size=max(1, int(ONSET_FLOOR_S * frames_per_s)), mode="nearest")
    onsets = np.maximum(0.0, onsets - floor)
    window = int(TEMPO_WINDOW_S * frames_per_s)
    rhythm = tempogram(onsets, window)
    lags = np.arange(int(BEAT_RANGE_S[0] * frames_per_s), int(BEAT_RANGE_S[1] * frames_per_s) + 1)
    lags = lags[3 * lags < rhythm.shape[0]]
    pulse = np.max([(rhythm[lag] + rhythm[2 * lag] + rhythm[3 * lag]) / 3 for lag in lags], axis=0)

    pitch_classes = chroma(harmonic**2, rate)
    pitch_classes = pitch_classes / (np.linalg.norm(pitch_classes, axis=0, keepdims=True) + 1e-9)
    h_db = 10 * np.log10(h_energy + 1e-10)
    h_loud = h_db > np.percentile(h_db, 95) - LOUD_RANGE_DB
    tonal = np.zeros(pitch_classes.shape[1])
    same = (pitch_classes[:, :-TONAL_LAG] * pitch_classes[:, TONAL_LAG:]).sum(axis=0)
    tonal[:-TONAL_LAG] = same * h_loud[:-TONAL_LAG] * h_loud[TONAL_LAG:]

    db = 10 * np.log10(energy)
    presence = (db > np.percentile(db, 95) - LOUD_RANGE_DB).astype(float)
    return {"pulse": pulse[: spec.shape[1]], "tonal": tonal, "presence": presence}


def hop_features(
    path: Path, block_s: float = 120.0, progress: Callable[[float, str], None] | None = None
) -> HopFeatures:
    """Features per HOP_S hop over the whole file, computed one block at a time."""
    info = sf.info(str(path))
    total_s = info.frames / info.samplerate
    hops = max(1, int(np.ceil(total_s / HOP_S)))
    out = {name: np.zeros(hops) for name in ("pulse", "tonal", "presence")}
    for block in audio_blocks(path, block_s, margin_s=TEMPO_WINDOW_S + 2.0):
        frames = block_features(block.samples, block.rate)
        hop = int(round(HOP_S * block.rate))
        centres = np.arange(len(frames["presence"])) * FRAME_HOP
        inside = (centres >= block.core[0]) & (centres < block.core[1])
        index = np.minimum((block.file_start + centres[inside] - block.core[0]) // hop, hops - 1)
        counts = np.bincount(index, minlength=hops)
        filled = counts > 0
        for name, values in frames.items():
            if name == "presence":  # any sound in the hop (a drum hit counts, a pause does not)
                loudest = np.zeros(hops)
                np.maximum.at(loudest, index, values[inside])
                out[name][filled] = loudest[filled]
                continue
            sums = np.bincount(index, weights=values[inside], minlength=hops)
            out[name][filled] = sums[filled] / counts[filled]
        done_s = (block.file_start + block.core[1] - block.core[0]) / block.rate
        if progress is not None:
            progress(min(1.0, done_s / max(total_s, 1e-9)), f"audio features to {done_s:.0f} s")
    return HopFeatures(**out)
