"""lyrics_detection: song sequences, from the audio and the transcript together.

Per 0.5 s hop, a music score in 0..1 adds up evidence:
- audio (tasks.music_features): a steady beat (`pulse`), held pitch (`tonal`), and sound
  that the VAD does not call speech (`1 - speech probability`, only where there is sound);
- text: transcript segments with music signs (♪, [music]), lines repeated nearby (a chorus),
  or that Whisper was unsure were speech at all (high no-speech probability, low log-prob).
Hops over the threshold form regions; regions closer than `merge_gap_s` are merged; each
region's edges then move to where its beat starts and stops (the smoothed score is only
roughly right there, and text cues can carry it over the dialogue next to a song), and
regions shorter than `min_duration_s` are dropped. Transcript segments mostly inside a region
are lyrics. The weights below are set so that each kind of evidence alone cannot make a
song out of dialogue, and were checked on generated films (tests/test_lyrics.py).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np

from settings.stages import LyricsSettings
from tasks.contract import PermanentError, StageContext, StageResult
from tasks.documents import MediaInfo, MusicFeatures, SongRegion, Songs, SpeechProbability, Transcript
from tasks.kernel import stage, stage_part
from tasks.music_features import HOP_S, HopFeatures, hop_features

# Audio evidence weights (sum to 1) and the ranges mapped onto 0..1.
W_PULSE, W_TONAL, W_NON_SPEECH = 0.55, 0.15, 0.30
PULSE_RANGE = (0.25, 0.45)  # tempogram beat strength (onsets above their floor): speech sits low, a held beat high
SMOOTH_S = 4.0  # evidence is averaged over this much time before it is judged
MEDIAN_S = 2.5  # then short blips are removed
BEAT = 0.5  # a hop holds a beat when its own (unsmoothed) pulse maps to at least this
BEAT_RUN_S = 1.5  # a song's beat holds this long; speech rhythm makes shorter runs
BEAT_GAP_S = 1.0  # dips this short inside a run of beats do not break it
EDGE_SEARCH_S = SMOOTH_S  # how far outside a region its edges may move
LAST_NOTES_S = 2.0  # non-speech sound kept past the first or last beat (a lead-in, the last chord)

# Text cues: how much each says "this is sung".
CUE_MUSIC_SIGN = 1.0
CUE_REPEATED = 0.6
CUE_UNSURE = 0.3
STRONG_CUE = 0.5  # a cue this strong (a music sign, a repeated line) marks sung text on its own; "unsure" does not
REPEAT_WINDOW_S = 90.0
REPEAT_MIN_WORDS = 3
REPEAT_SIMILARITY = 85.0  # rapidfuzz ratio
UNSURE_NO_SPEECH = 0.3
UNSURE_LOGPROB = -0.8
MUSIC_SIGN = re.compile(
    r"[\u2669\u266a\u266b\u266c\U0001f3b5\U0001f3b6]|[\[(]\s*(music|singing|song|instrumental|"
    r"\u0917\u093e\u0928\u093e|\u0938\u0902\u0917\u0940\u0924)\s*[\])]",
    re.IGNORECASE,
)


def _normalised(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text).split())


def text_cues(segments: list[dict[str, Any]]) -> list[float]:
    """Per transcript segment, 0..1: how much its text says it is sung (cues combined as a noisy-or)."""
    from rapidfuzz import fuzz

    texts = [_normalised(str(s.get("text", ""))) for s in segments]
    cues: list[float] = []
    for i, segment in enumerate(segments):
        found: list[float] = []
        if MUSIC_SIGN.search(str(segment.get("text", ""))):
            found.append(CUE_MUSIC_SIGN)
        if len(texts[i].split()) >= REPEAT_MIN_WORDS:
            start = float(segment.get("start", 0.0))
            for j, other in enumerate(segments):
                if (
                    j != i
                    and abs(float(other.get("start", 0.0)) - start) <= REPEAT_WINDOW_S
                    and fuzz.ratio(texts[i], texts[j]) >= REPEAT_SIMILARITY
                ):
                    found.append(CUE_REPEATED)
                    break
        no_speech = segment.get("no_speech_prob")
        logprob = segment.get("avg_logprob")
        if (isinstance(no_speech, (int, float)) and no_speech >= UNSURE_NO_SPEECH) or (
            isinstance(logprob, (int, float)) and logprob <= UNSURE_LOGPROB
        ):
            found.append(CUE_UNSURE)
        cues.append(float(1.0 - np.prod([1.0 - c for c in found])) if found else 0.0)
    return cues


def text_curve(segments: list[dict[str, Any]], cues: list[float], hops: int) -> np.ndarray:
    """The strongest cue of any segment over each hop."""
    curve = np.zeros(hops)
    for segment, cue in zip(segments, cues, strict=False):
        if cue <= 0:
            continue
        first = max(0, int(float(segment["start"]) / HOP_S))
        last = min(hops, int(np.ceil(float(segment["end"]) / HOP_S)))
        curve[first:last] = np.maximum(curve[first:last], cue)
    return curve


def speech_curve(probability: dict[str, Any], hops: int) -> np.ndarray:
    """The VAD's speech probability on this stage's hops (resampled if its hop differs)."""
    values = np.asarray(probability.get("values", []), dtype=float)
    hop = float(probability.get("hop_s", HOP_S))
    if values.size == 0:
        return np.zeros(hops)
    if abs(hop - HOP_S) < 1e-9:
        return np.pad(values[:hops], (0, max(0, hops - values.size)), mode="edge")
    times = (np.arange(hops) + 0.5) * HOP_S
    return np.interp(times, (np.arange(values.size) + 0.5) * hop, values)


def _smooth(values: np.ndarray, seconds: float) -> np.ndarray:
    from scipy.ndimage import uniform_filter1d  # here, not at import: the flow imports this module to wire it

    return uniform_filter1d(values.astype(float), size=max(1, int(round(seconds / HOP_S))), mode="nearest")


def audio_score(features: HopFeatures, speech: np.ndarray) -> np.ndarray:
    """Audio evidence of music in 0..1 per hop."""
    low, high = PULSE_RANGE
    pulse = np.clip((_smooth(features.pulse, SMOOTH_S) - low) / (high - low), 0.0, 1.0)
    tonal = np.clip(_smooth(features.tonal, SMOOTH_S), 0.0, 1.0)
    non_speech = _smooth((1.0 - np.clip(speech, 0.0, 1.0)) * features.presence, SMOOTH_S)
    return W_PULSE * pulse + W_TONAL * tonal + W_NON_SPEECH * non_speech


def music_score(audio: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    combined = np.clip(audio + text_weight * text, 0.0, 1.0)
    from scipy.ndimage import median_filter

    return median_filter(combined, size=max(1, int(round(MEDIAN_S / HOP_S))) | 1, mode="nearest")


def song_regions(
    score: np.ndarray, threshold: float, merge_gap_s: float, min_duration_s: float, duration_s: float
) -> list[dict[str, float]]:
    """Runs of hops over the threshold; neighbours merged, short ones dropped; each with its mean score."""
    above = np.concatenate([[False], score >= threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(int)))
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=False)]
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * HOP_S <= merge_gap_s:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    regions = []
    for a, b in merged:
        start, end = a * HOP_S, min(b * HOP_S, duration_s)
        if end - start >= min_duration_s:
            mean = round(float(score[a:b].mean()), 3)
            regions.append({"start": round(start, 2), "end": round(end, 2), "score": mean})
    return regions


def beat_runs(beat: np.ndarray) -> list[tuple[int, int]]:
    """Runs of beat hops [first, last + 1), dips up to BEAT_GAP_S bridged, runs under BEAT_RUN_S left out."""
    gap, least = int(round(BEAT_GAP_S / HOP_S)), int(round(BEAT_RUN_S / HOP_S))
    runs: list[list[int]] = []
    for hop in np.flatnonzero(beat):
        if runs and hop - runs[-1][1] <= gap:
            runs[-1][1] = int(hop) + 1
        else:
            runs.append([int(hop), int(hop) + 1])
    return [(a, b) for a, b in runs if b - a >= least]


def refined_edges(
    regions: list[dict[str, float]], features: HopFeatures, speech: np.ndarray, text: np.ndarray
) -> list[dict[str, float]]:
    """Each region's edges moved to where its music starts and stops.

    The score is smoothed over seconds, and transcript cues can carry it over the dialogue next to
    a song, so its edges are only roughly right. The beat is sharper: the edges go to the first and
    last long run of beats in or near the region, out to where the beat fades to half its level
    or the transcript stops saying "sung" (a music sign or a repeated line; a singer over the
    music masks its beat), then over the non-speech sound just beyond (a lead-in, the last chord). A region with no long
    run of beats (a song without drums, found by other evidence) keeps its edges.
    """
    low, high = PULSE_RANGE
    pulse = np.clip((features.pulse - low) / (high - low), 0.0, 1.0)
    sound = (features.presence > 0) & (speech < 0.5)
    hops, search, notes = pulse.size, int(round(EDGE_SEARCH_S / HOP_S)), int(round(LAST_NOTES_S / HOP_S))
    out = []
    for region in regions:
        first, last = int(round(region["start"] / HOP_S)), int(round(region["end"] / HOP_S))
        lo, hi = max(0, first - search), min(hops, last + search)
        runs = [(a + lo, b + lo) for a, b in beat_runs(pulse[lo:hi] >= BEAT) if b + lo > first and a + lo < last]
        if not runs:
            out.append(region)
            continue
        start, end = runs[0][0], runs[-1][1]
        # The tempogram sees a few seconds at once: at the true edge about half its window holds the song,
        # so the edge is where the pulse falls to half the song's own level.
        half = 0.5 * float(np.median(pulse[start:end]))
        while start > lo and (pulse[start - 1] >= half or text[start - 1] >= STRONG_CUE):
            start -= 1
        while end < hi and (pulse[end] >= half or text[end] >= STRONG_CUE):
            end += 1
        for _ in range(notes):
            start -= int(start > 0 and sound[start - 1])
            end += int(end < hops and sound[end])
        out.append(region | {"start": round(start * HOP_S, 2), "end": round(end * HOP_S, 2)})
    return out


def mostly_sung(start: float, end: float, regions: list[dict[str, Any]]) -> bool:
    """At least half of [start, end] lies inside the songs: what makes a line of the transcript a sung one."""
    inside = sum(max(0.0, min(end, float(r["end"])) - max(start, float(r["start"]))) for r in regions)
    return inside >= 0.5 * max(end - start, 1e-6)


def lyric_segment_ids(segments: list[dict[str, Any]], regions: list[dict[str, float]]) -> list[Any]:
    """Ids of transcript segments with at least half their time inside a song."""
    return [s.get("id") for s in segments if mostly_sung(float(s["start"]), float(s["end"]), regions)]


@stage_part("lyrics_detection", "music_features", version="1", settings_read=("window_s",), heavy=True)
def music_features(ctx: StageContext, settings: LyricsSettings, demux: StageResult) -> dict:
    """The audio half: it reads the film's audio only, so the flow runs it beside asr where the machine has room."""
    wav = ctx.file(demux, ctx.read(demux, MediaInfo).audio)
    ctx.log.info("music features on cpu (librosa HPSS, tempogram, chroma), windows of %.0f s", settings.window_s)
    try:
        features = hop_features(wav, settings.window_s, lambda f, m: ctx.progress(0.9 * f, m))
    except (RuntimeError, ValueError) as exc:
        raise PermanentError(f"could not read {wav} for music features: {exc}") from exc
    ctx.write(
        MusicFeatures(
            hop_s=HOP_S,
            pulse=features.pulse.tolist(),
            tonal=features.tonal.tolist(),
            presence=features.presence.tolist(),
        )
    )
    ctx.progress(0.9, "music features done; songs are found once the transcript is there")
    return {"hops": len(features.pulse), "device": "cpu"}


@stage("lyrics_detection", version="4", parts=(music_features,))
def lyrics_detection(
    ctx: StageContext,
    settings: LyricsSettings,
    music_features: StageResult,
    silero_vad: StageResult,
    asr: StageResult,
) -> dict:
    stored = ctx.read(music_features, MusicFeatures)
    probability = ctx.read(silero_vad, SpeechProbability).model_dump()
    segments = ctx.read(asr, Transcript).segment_dicts()
    features = HopFeatures(
        pulse=np.asarray(stored.pulse), tonal=np.asarray(stored.tonal), presence=np.asarray(stored.presence)
    )
    hops = len(features.pulse)
    duration = hops * HOP_S
    speech = speech_curve(probability, hops)
    cues = text_cues(segments)
    text = text_curve(segments, cues, hops)
    score = music_score(audio_score(features, speech), text, settings.text_weight)
    found = song_regions(score, settings.threshold, settings.merge_gap_s, 0.0, duration)
    edges = refined_edges(found, features, speech, text)
    regions = [r for r in edges if r["end"] - r["start"] >= settings.min_duration_s]
    lyric_ids = lyric_segment_ids(segments, regions)
    ctx.write(Songs(regions=[SongRegion(**r) for r in regions], lyric_segment_ids=lyric_ids))
    ctx.write_json("music_score.json", {"hop_s": HOP_S, "values": [round(float(v), 3) for v in score]})
    song_s = round(sum(r["end"] - r["start"] for r in regions), 2)
    ctx.log.info("%d song regions (%.1f s): %s; %d lyric segments", len(regions), song_s, regions, len(lyric_ids))
    return {
        "regions": len(regions),
        "song_s": song_s,
        "lyric_segments": len(lyric_ids),
        "text_cue_segments": sum(c > 0 for c in cues),
        "music_features_s": music_features.duration_s,
        "device": "cpu",
    }
