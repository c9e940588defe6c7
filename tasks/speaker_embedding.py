"""The embedded diarization backend: Resemblyzer embeddings, clustering, resegmentation.

Works with no network: the speech regions come from the silero_vad stage, the speaker
encoder's weights ship inside the `resemblyzer` package. Steps:
1. embed short overlapping windows of every speech region (read region by region, so
   memory holds one region, never the film);
2. cluster the windows (average-linkage on cosine distance), cutting the tree at growing
   sizes; clusters with too little speech are outliers whose windows join the nearest
   speaker, and the partition with the best silhouette wins (fewest speakers on a near
   tie), or one speaker when no split is convincing; min/max speakers bound the count;
3. resegment: each 0.1 s frame scores each speaker by the mean similarity of the windows
   covering it, and a Viterbi pass with a switch penalty labels the frames, so a turn
   change inside one speech region is found and single-window flickers are smoothed away.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tasks.spectra import mel_power, stft_magnitude

MEL_STEP_S = 0.01  # Resemblyzer's mel frames are 10 ms apart
AUTO_MAX_SPEAKERS = 10  # upper bound of the automatic count unless max_speakers says otherwise
MAX_CLUSTER_ITEMS = 3000  # windows used to build the clusters (the rest are only assigned)
SILHOUETTE_TOLERANCE = 0.03  # a count this close to the best silhouette but smaller is preferred


@dataclass(frozen=True)
class EmbeddedParams:
    """Knobs of the embedded backend (from DiarizationSettings)."""

    window_s: float = 1.2
    hop_s: float = 0.4
    min_silhouette: float = 0.25
    min_speaker_s: float = 2.0
    frame_s: float = 0.1
    switch_penalty: float = 0.6
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass
class Windows:
    """Embedded windows: times in seconds, the speech region each lies in, L2-normed embeddings."""

    start: np.ndarray
    end: np.ndarray
    region: np.ndarray
    embedding: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)


def load_encoder(device: str) -> Any:
    """Resemblyzer's VoiceEncoder with its package-shipped weights, on `device`."""
    with warnings.catch_warnings():  # its webrtcvad import warns that pkg_resources is deprecated
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        from resemblyzer import VoiceEncoder

    return VoiceEncoder(device=device, verbose=False)


def read_region(wav: sf.SoundFile, start: float, end: float) -> np.ndarray:
    wav.seek(max(0, int(start * wav.samplerate)))
    data = wav.read(max(0, int((end - start) * wav.samplerate)), dtype="float32", always_2d=True)
    return data.mean(axis=1)


def mel_frames(samples: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power every 10 ms, what Resemblyzer's `wav_to_mel_spectrogram` gives, without
    importing librosa for it (tasks/spectra.py)."""
    from resemblyzer.hparams import mel_n_channels, mel_window_length, mel_window_step, sampling_rate

    n_fft, hop = sampling_rate * mel_window_length // 1000, sampling_rate * mel_window_step // 1000
    power = stft_magnitude(samples, n_fft, hop) ** 2
    return mel_power(power, sampling_rate, mel_n_channels).astype(np.float32).T


def window_starts(n_frames: int, window: int, hop: int) -> list[int]:
    """Mel-frame offsets of the windows over a region; the last window ends at the region's end."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def embed_windows(
    encoder: Any,
    wav_path: Path,
    regions: list[dict[str, float]],
    params: EmbeddedParams,
    batch_size: int = 256,
    progress: Callable[[float, str], None] | None = None,
) -> Windows:
    """One embedding per window of `window_s` every `hop_s` inside each speech region."""
    import torch
    from resemblyzer.audio import normalize_volume
    from resemblyzer.hparams import audio_norm_target_dBFS, sampling_rate

    window, hop = round(params.window_s / MEL_STEP_S), max(1, round(params.hop_s / MEL_STEP_S))
    starts, ends, owners, vectors = [], [], [], []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            with torch.inference_mode():
                batch = torch.from_numpy(np.stack(pending)).to(encoder.device)
                vectors.extend(encoder(batch).cpu().numpy())
            pending.clear()

    with sf.SoundFile(str(wav_path)) as wav:
        if wav.samplerate != sampling_rate:
            raise ValueError(f"{wav_path} is at {wav.samplerate} Hz; the speaker encoder needs {sampling_rate} Hz")
        for i, region in enumerate(regions):
            audio = read_region(wav, region["start"], region["end"])
            if audio.size < sampling_rate * MEL_STEP_S * 10 or not np.any(np.abs(audio) > 1e-4):
                continue  # under 0.1 s or silent: no usable voice; resegmentation labels it from its neighbours
            mel = mel_frames(normalize_volume(audio, audio_norm_target_dBFS, increase_only=True))
            for offset in window_starts(len(mel), window, hop):
                piece = mel[offset : offset + window]
                starts.append(region["start"] + offset * MEL_STEP_S)
                ends.append(min(region["end"], region["start"] + (offset + len(piece)) * MEL_STEP_S))
                owners.append(i)
                if len(piece) == window:
                    pending.append(piece)
                    if len(pending) >= batch_size:
                        flush()
                else:  # a region shorter than one window: embedded alone, in order
                    flush()
                    pending.append(piece)
                    flush()
            if progress is not None and (
                i + 1 == len(regions) or (i + 1) * 20 // len(regions) > i * 20 // len(regions)
            ):
                progress((i + 1) / len(regions), f"embedded {i + 1}/{len(regions)} speech regions")
        flush()
    dim = 256 if not vectors else len(vectors[0])
    embedding = np.array(vectors, np.float32).reshape(-1, dim)
    usable = np.isfinite(embedding).all(axis=1)  # an all-zero activation normalises to NaN
    return Windows(
        np.array(starts, float)[usable], np.array(ends, float)[usable], np.array(owners, int)[usable], embedding[usable]
    )


def normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)


def speaker_count_bounds(n_items: int, params: EmbeddedParams) -> tuple[int, int]:
    low = max(1, params.min_speakers or 1)
    high = params.max_speakers or AUTO_MAX_SPEAKERS
    high = max(low, min(high, n_items))
    return min(low, high), high


def cluster_speakers(embeddings: np.ndarray, params: EmbeddedParams) -> tuple[np.ndarray, dict[str, Any]]:
    """Speaker centroids (k, dim) from window embeddings, and how the count was chosen.

    The average-linkage tree (cosine distance) is cut at growing sizes. In each cut, clusters
    holding less than `min_speaker_s` of windows are outliers (a laugh, windows across a turn
    change), not speakers: their windows go to the nearest major cluster, as they will in
    the output. Each resulting partition is scored by its silhouette; the fewest speakers
    within `SILHOUETTE_TOLERANCE` of the best score win if they reach `min_silhouette`, else
    one speaker. min/max speakers bound the counts.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    items = normalise(embeddings.astype(np.float64))
    if len(items) > MAX_CLUSTER_ITEMS:  # evenly spread subsample: the tree is O(n^2) in memory
        items = items[np.linspace(0, len(items) - 1, MAX_CLUSTER_ITEMS).round().astype(int)]
    low, high = speaker_count_bounds(len(items), params)
    min_size = max(2, int(np.ceil(params.min_speaker_s / params.hop_s)))
    partitions: dict[int, tuple[float, np.ndarray]] = {}  # speakers -> (silhouette, centroids)
    if len(items) >= 2 * min_size and high >= 2:
        tree = linkage(items, method="average", metric="cosine")
        distances = cosine_distances(items)
        for cut in range(2, min(len(items) - 1, 3 * high + 10) + 1):
            labels = fcluster(tree, t=cut, criterion="maxclust")
            sizes = np.bincount(labels)
            major = np.flatnonzero(sizes >= min_size)
            if len(major) > high:
                break
            if len(major) < max(2, low):
                continue
            centroids = normalise(np.stack([items[labels == c].mean(axis=0) for c in major]))
            assigned = (items @ centroids.T).argmax(axis=1)
            assigned[np.isin(labels, major)] = np.searchsorted(major, labels[np.isin(labels, major)])
            if len(set(assigned)) < 2:
                continue
            score = silhouette(distances, assigned)
            if score > partitions.get(len(major), (-1.0, None))[0]:
                partitions[len(major)] = (score, centroids)
    scores = {k: round(v[0], 3) for k, v in sorted(partitions.items())}
    if partitions:
        top = max(v[0] for v in partitions.values())
        count = min(k for k, v in partitions.items() if v[0] >= top - SILHOUETTE_TOLERANCE)
        score, centroids = partitions[count]
        if score >= params.min_silhouette or low >= 2:
            return refine_centroids(items, centroids), {
                "count": count,
                "scores": scores,
                "reason": f"silhouette {score:.3f} at {count} speakers",
            }
        reason = f"no split reaches silhouette {params.min_silhouette:g} (best {top:.3f})"
    elif low >= 2 and len(items) > low:  # min_speakers asks for a split no major clusters support: cut plainly
        labels = fcluster(linkage(items, method="average", metric="cosine"), t=low, criterion="maxclust")
        centroids = normalise(np.stack([items[labels == c].mean(axis=0) for c in np.unique(labels)]))
        return refine_centroids(items, centroids), {
            "count": len(centroids),
            "scores": scores,
            "reason": f"min_speakers={low}: plain cut of the tree",
        }
    else:
        reason = (
            f"no split into speakers of at least {params.min_speaker_s:g} s each" if high >= 2 else "max_speakers=1"
        )
    return normalise(items.mean(axis=0, keepdims=True)), {
        "count": 1,
        "scores": scores,
        "reason": reason + ": one speaker",
    }


def cosine_distances(items: np.ndarray) -> np.ndarray:
    """Pairwise cosine distances of unit vectors, as sklearn's `pairwise_distances(metric="cosine")` gives them."""
    distances = 1.0 - items @ items.T
    np.clip(distances, 0.0, 2.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a labelling over precomputed distances (sklearn's `silhouette_score`; a
    one-window cluster scores 0). The distances are computed once for every cut of the tree; importing
    sklearn for this cost a second of each run."""
    classes, index = np.unique(labels, return_inverse=True)
    members = np.eye(len(classes))[index]
    sums = distances @ members  # each window's summed distance to each cluster
    sizes = members.sum(axis=0)
    rows = np.arange(len(index))
    with np.errstate(divide="ignore", invalid="ignore"):
        within = sums[rows, index] / (sizes[index] - 1)
        between = sums / sizes
        between[rows, index] = np.inf
        nearest = between.min(axis=1)
        scores = (nearest - within) / np.maximum(within, nearest)
    return float(np.nan_to_num(scores).mean())


def refine_centroids(items: np.ndarray, centroids: np.ndarray, rounds: int = 3) -> np.ndarray:
    """A few spherical k-means rounds over the windows; a centroid left with no window stays as it was."""
    for _ in range(rounds):
        nearest = (items @ centroids.T).argmax(axis=1)
        centroids = normalise(
            np.stack(
                [
                    items[nearest == c].mean(axis=0) if np.any(nearest == c) else centroids[c]
                    for c in range(len(centroids))
                ]
            )
        )
    return centroids


def viterbi(scores: np.ndarray, switch_penalty: float) -> np.ndarray:
    """Best label path through (frames, k) scores, paying `switch_penalty` per label change."""
    frames, k = scores.shape
    total = scores[0].copy()
    back = np.zeros((frames, k), dtype=int)
    for t in range(1, frames):
        stay = total
        best_prev = int(total.argmax())
        switch = total[best_prev] - switch_penalty
        back[t] = np.where(stay >= switch, np.arange(k), best_prev)
        total = np.maximum(stay, switch) + scores[t]
    path = np.empty(frames, dtype=int)
    path[-1] = int(total.argmax())
    for t in range(frames - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def frame_scores(mids: np.ndarray, starts: np.ndarray, ends: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """(frames, k): mean similarity of the windows covering each frame centre; the nearest window where none does.

    Difference arrays keep it linear in frames + windows, whatever the length of a region.
    """
    first = np.searchsorted(mids, starts, side="left")
    last = np.searchsorted(mids, ends, side="left")  # exclusive
    sums = np.zeros((mids.size + 1, similarity.shape[1]))
    counts = np.zeros(mids.size + 1)
    np.add.at(sums, first, similarity)
    np.add.at(sums, last, -similarity)
    np.add.at(counts, first, 1)
    np.add.at(counts, last, -1)
    sums, counts = np.cumsum(sums, axis=0)[:-1], np.cumsum(counts)[:-1]
    uncovered = counts < 0.5
    if uncovered.any():
        nearest = np.abs((starts + ends)[None, :] / 2 - mids[uncovered][:, None]).argmin(axis=1)
        sums[uncovered], counts[uncovered] = similarity[nearest], 1
    return sums / counts[:, None]


def resegment(
    windows: Windows, centroids: np.ndarray, regions: list[dict[str, float]], params: EmbeddedParams
) -> list[tuple[float, float, int]]:
    """Turns (start, end, cluster) covering every speech region, split where the speaker changes."""
    similarity = normalise(windows.embedding) @ centroids.T if len(windows) else np.zeros((0, len(centroids)))
    centres = (windows.start + windows.end) / 2
    turns: list[tuple[float, float, int]] = []
    for i, region in enumerate(regions):
        n_frames = max(1, int(np.ceil((region["end"] - region["start"]) / params.frame_s)))
        edges = region["start"] + np.arange(n_frames + 1) * params.frame_s
        edges[-1] = region["end"]
        mids = (edges[:-1] + edges[1:]) / 2
        mine = np.flatnonzero(windows.region == i)
        if mine.size == 0:  # too short or silent to embed: the nearest embedded window speaks for it
            if not len(windows):
                turns.append((region["start"], region["end"], 0))
                continue
            mine = np.array([int(np.abs(centres - mids.mean()).argmin())])
        scores = frame_scores(mids, windows.start[mine], windows.end[mine], similarity[mine])
        path = viterbi(scores, params.switch_penalty)
        for run in np.split(np.arange(n_frames), np.flatnonzero(np.diff(path)) + 1):
            turns.append((float(edges[run[0]]), float(edges[run[-1] + 1]), int(path[run[0]])))
    return turns


def diarize_embedded(
    wav_path: Path,
    regions: list[dict[str, float]],
    device: str,
    params: EmbeddedParams,
    batch_size: int = 256,
    log: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[list[tuple[float, float, int]], dict]:
    """Turns (start, end, cluster id) and facts about the clustering, for the speech regions of a 16 kHz WAV."""
    regions = [r for r in regions if r["end"] > r["start"]]
    if not regions:
        return [], {"count": 0, "scores": {}, "reason": "no speech", "windows": 0}
    encoder = load_encoder(device)
    windows = embed_windows(encoder, wav_path, regions, params, batch_size, progress)
    long_enough = windows.end - windows.start >= min(params.window_s, 1.0) - 1e-6
    basis = windows.embedding[long_enough] if long_enough.sum() >= 3 else windows.embedding
    if len(basis) == 0:
        return [(r["start"], r["end"], 0) for r in regions], {
            "count": 1,
            "scores": {},
            "reason": "nothing to embed",
            "windows": 0,
        }
    centroids, facts = cluster_speakers(basis, params)
    if log is not None:
        log.info(
            "embedded %d windows (%d used for clustering); %s; silhouettes %s",
            len(windows),
            len(basis),
            facts["reason"],
            facts["scores"],
        )
    turns = resegment(windows, centroids, regions, params)
    return turns, {**facts, "windows": len(windows)}
