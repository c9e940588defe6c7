"""tasks/spectra.py against librosa itself, on speech followed by a song (and on noise for the tuning)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from tasks import spectra
from tests.media import dialogue, music

RATE = 16000


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    speech, _ = dialogue([("A", "Raj, the train leaves in ten minutes.")], gaps=0.5)
    return np.concatenate([speech, music(8.0), np.zeros(1000)]).astype(np.float32)


def close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * float(np.abs(theirs).max()))


@pytest.mark.parametrize(("n_fft", "hop"), [(1024, 400), (400, 160)])
def test_stft_and_mel(audio: np.ndarray, n_fft: int, hop: int) -> None:
    magnitude = spectra.stft_magnitude(audio, n_fft, hop)
    close(magnitude, np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop)))
    close(spectra.mel_filters(RATE, n_fft, 40), librosa.filters.mel(sr=RATE, n_fft=n_fft, n_mels=40))
    close(spectra.mel_power(magnitude**2, RATE, 64), librosa.feature.melspectrogram(S=magnitude**2, sr=RATE, n_mels=64))


def test_resemblyzers_mel_frames(audio: np.ndarray) -> None:
    from resemblyzer.audio import wav_to_mel_spectrogram

    from tasks.speaker_embedding import mel_frames

    close(mel_frames(audio), wav_to_mel_spectrogram(audio))


def test_onsets_tempogram_and_chroma(audio: np.ndarray) -> None:
    power = np.abs(librosa.stft(audio, n_fft=1024, hop_length=400)) ** 2
    db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=RATE, n_mels=64))
    close(spectra.power_to_db(librosa.feature.melspectrogram(S=power, sr=RATE, n_mels=64)), db)
    onsets = librosa.onset.onset_strength(S=db, sr=RATE, hop_length=400)
    close(spectra.onset_strength(db, 400), onsets)
    expected = librosa.feature.tempogram(onset_envelope=onsets, sr=RATE, hop_length=400, win_length=240)
    close(spectra.tempogram(onsets, 240), expected)
    close(spectra.chroma(power, RATE), librosa.feature.chroma_stft(S=power, sr=RATE, n_fft=1024, norm=None))
    close(spectra.chroma_filters(RATE, 1024, 0.13), librosa.filters.chroma(sr=RATE, n_fft=1024, tuning=0.13))
    a, b = np.random.default_rng(0).random((2, 50, 60)).astype(np.float32)
    close(spectra.soft_mask(a, b), librosa.util.softmask(a, b, power=2, split_zeros=True))


def test_tuning(audio: np.ndarray) -> None:
    power = np.abs(librosa.stft(audio, n_fft=1024, hop_length=400)) ** 2
    rng = np.random.default_rng(3)
    cases = [power, *[(rng.random((513, 200)) ** 4).astype(np.float32) for _ in range(4)]]
    found = [spectra.tuning(c, RATE) for c in cases]
    assert found == [librosa.estimate_tuning(S=c, sr=RATE, bins_per_octave=12) for c in cases]
    assert len(set(found)) > 1  # not one constant answer
