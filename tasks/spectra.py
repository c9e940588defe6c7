"""Short-time spectra in numpy, computed as librosa 0.11 computes them (tests compare the two).

The speaker embeddings and the music features need an STFT, mel and chroma filter banks, an
onset envelope and a tempogram. Importing librosa for them cost about 3 s of every run (it
compiles numba kernels and imports scipy.signal and scipy.stats at import time), more than
the 10-minute film's music features themselves; these few transforms cost nothing to import.
Defaults follow librosa's: a periodic Hann window, centred frames padded with zeros, Slaney
mel scale and norm, chroma with the tuning estimated from the spectrum.
"""

from __future__ import annotations

import functools

import numpy as np


def hann(length: int) -> np.ndarray:
    """The periodic Hann window (scipy's `get_window("hann", length, fftbins=True)`)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def stft_magnitude(samples: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| (bins, frames) in float32: `np.abs(librosa.stft(samples, n_fft=n_fft, hop_length=hop))`."""
    padded = np.pad(np.asarray(samples, dtype=np.float32), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    spectrum = np.fft.rfft(frames * hann(n_fft), axis=1).astype(np.complex64)
    return np.abs(spectrum).T


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=float)
    mel = hz / (200.0 / 3)
    above = hz >= 1000.0
    mel[above] = 15.0 + np.log(hz[above] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=float)
    hz = mel * (200.0 / 3)
    above = mel >= 15.0
    hz[above] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[above] - 15.0))
    return hz


@functools.lru_cache(maxsize=8)
def mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters with Slaney's area norm, 0 Hz to Nyquist (`librosa.filters.mel`); built once
    per shape (the speaker encoder asks for them for every speech region), and read-only."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array([0.0]))[0], hz_to_mel(np.array([rate / 2.0]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, bins)
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]))
    weights = weights.astype(np.float32)  # rounded where librosa rounds, before the norm
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_power(power: np.ndarray, rate: int, n_mels: int) -> np.ndarray:
    """A power spectrogram (bins, frames) on the mel scale (`librosa.feature.melspectrogram(S=power)`)."""
    return mel_filters(rate, 2 * (power.shape[0] - 1), n_mels) @ power


def power_to_db(power: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    db = 10.0 * np.log10(np.maximum(1e-10, power))
    return np.maximum(db, db.max() - top_db)


def onset_strength(db: np.ndarray, hop: int, n_fft: int = 2048) -> np.ndarray:
    """Mean positive rise per frame, shifted as librosa's centred frames are (`librosa.onset.onset_strength(S=db)`)."""
    rise = np.maximum(0.0, db[:, 1:] - db[:, :-1]).mean(axis=0)
    return np.pad(rise, (1 + n_fft // (2 * hop), 0))[: db.shape[1]]


def max_normalised(values: np.ndarray, axis: int) -> np.ndarray:
    """Each slice over its largest magnitude, slices that are all but zero left alone (`librosa.util.normalize`)."""
    length = np.abs(values).astype(float).max(axis=axis, keepdims=True)
    length[length < np.finfo(values.dtype).tiny] = 1.0
    return values / length


def tempogram(onsets: np.ndarray, win_length: int) -> np.ndarray:
    """(lags, frames) autocorrelation of the onset envelope in centred Hann windows (`librosa.feature.tempogram`)."""
    count = onsets.shape[-1]
    half = win_length // 2
    padded = np.pad(onsets, (half, half), mode="linear_ramp", end_values=(0, 0))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win_length)[:count] * hann(win_length)
    size = 2 * win_length - 1
    autocorrelation = np.fft.irfft(np.abs(np.fft.rfft(frames, n=size, axis=1)) ** 2, n=size, axis=1)[:, :win_length]
    return max_normalised(autocorrelation.T, axis=0)


def parabolic_shift(values: np.ndarray) -> np.ndarray:
    """Offset of the parabola's vertex through each bin and its neighbours (0 at the edges and where it
    would move more than a bin), along axis 0."""
    shift = np.zeros_like(values)
    middle, below, above = values[1:-1], values[:-2], values[2:]
    a = above + below - 2 * middle
    b = (above - below) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift[1:-1] = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a)
    return shift


def local_peaks(values: np.ndarray) -> np.ndarray:
    """Bins above the one below and not under the one above, along axis 0 (`librosa.util.localmax`)."""
    peaks = np.zeros(values.shape, dtype=bool)
    peaks[1:-1] = (values[1:-1] > values[:-2]) & (values[1:-1] >= values[2:])
    peaks[-1] = values[-1] > values[-2]  # the first bin is never a peak
    return peaks


def tuning(spectrum: np.ndarray, rate: int, resolution: float = 0.01) -> float:
    """Deviation from A440 in fractions of a semitone: the commonest offset of the strong spectral peaks
    between 150 Hz and 4 kHz (`librosa.estimate_tuning(S=spectrum)`)."""
    spectrum = np.abs(spectrum)
    n_fft = 2 * (spectrum.shape[0] - 1)
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    slope = np.gradient(spectrum, axis=0)
    shift = parabolic_shift(spectrum)
    in_range = ((150.0 <= bins) & (bins < 4000.0))[:, None]
    strong = spectrum * (spectrum > 0.1 * spectrum.max(axis=0, keepdims=True))
    rows, cols = np.nonzero(in_range & local_peaks(strong))
    pitches = ((rows + shift[rows, cols]) * float(rate) / n_fft).astype(spectrum.dtype)
    magnitudes = (spectrum[rows, cols] + 0.5 * slope[rows, cols] * shift[rows, cols]).astype(spectrum.dtype)
    voiced = pitches > 0
    threshold = np.median(magnitudes[voiced]) if voiced.any() else 0.0
    frequencies = pitches[(magnitudes >= threshold) & voiced]
    if not frequencies.size:
        return 0.0
    residual = np.mod(12 * np.log2(frequencies / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    counts, edges = np.histogram(residual, np.linspace(-0.5, 0.5, int(np.ceil(1.0 / resolution)) + 1))
    return float(edges[np.argmax(counts)])


def chroma_filters(rate: int, n_fft: int, tuning_offset: float) -> np.ndarray:
    """Twelve pitch-class filters from C, Gaussian over octaves around C5 (`librosa.filters.chroma`)."""
    n_chroma = 12
    frequencies = np.linspace(0, rate, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning_offset / n_chroma)
    position = n_chroma * np.log2(frequencies / (a440 / 16))
    position = np.concatenate(([position[0] - 1.5 * n_chroma], position))
    widths = np.concatenate((np.maximum(position[1:] - position[:-1], 1.0), [1]))
    distance = np.subtract.outer(position, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / np.tile(widths, (n_chroma, 1))) ** 2)
    norms = np.sqrt((weights**2).sum(axis=0, keepdims=True))
    norms[norms < np.finfo(weights.dtype).tiny] = 1.0
    weights = weights / norms
    weights *= np.tile(np.exp(-0.5 * (((position / n_chroma - 5.0) / 2.0) ** 2)), (n_chroma, 1))
    weights = np.roll(weights, -3, axis=0)
    return np.ascontiguousarray(weights[:, : int(1 + n_fft / 2)], dtype=np.float32)


def chroma(power: np.ndarray, rate: int) -> np.ndarray:
    """Unnormalised chroma (12, frames) of a power spectrogram (`librosa.feature.chroma_stft(S=power, norm=None)`)."""
    n_fft = 2 * (power.shape[0] - 1)
    return chroma_filters(rate, n_fft, tuning(power, rate)) @ power


def soft_mask(part: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """part² / (part² + rest²), 0.5 where both are zero (`librosa.util.softmask(power=2, split_zeros=True)`)."""
    larger = np.maximum(part, rest)
    silent = larger < np.finfo(part.dtype).tiny
    larger[silent] = 1
    mask = (part / larger) ** 2
    other = (rest / larger) ** 2
    sounding = ~silent
    mask[sounding] /= mask[sounding] + other[sounding]
    mask[silent] = 0.5
    return mask
