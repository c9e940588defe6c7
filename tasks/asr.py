"""asr: speech to text with Whisper (faster-whisper, the engine WhisperX wraps, with WhisperX's decode
options) over the speech regions of the silero_vad stage, word times from WhisperX's aligner when cached.

- Model: ASR__MODEL (see `tasks.whisper_models`): `packaged` (offline tiny.en), `auto`
  (large-v3 on CUDA, small elsewhere), a hub name taken from the cache, or a local CTranslate2
  folder. Device, compute type and batch size come from the hardware policy unless
  ASR__COMPUTE_TYPE / ASR__BATCH_SIZE say otherwise.
- Speech: the silero_vad segments, merged into windows of at most ASR__CHUNK_S seconds and
  decoded in batches; no second VAD.
- Language: the film's (FILM__SOURCE_LANG, `hi` by default) unless ASR__LANGUAGE says otherwise
  (`auto` detects on the first 30 s of speech). The
  detected language and its probability are recorded; with a fixed language on a multilingual
  model the recorded probability is Whisper's probability for that language on the same
  speech. Hindi is written as Whisper writes it (Devanagari), never transliterated; a Latin
  glossary prompt can pull Whisper towards romanised Hindi, so give Devanagari variants (or a
  Devanagari ASR__INITIAL_PROMPT) for Hindi films.
  An English-only model (tiny.en, `packaged`) cannot transcribe another language: asking it
  for `hi` is a PermanentError naming ASR__LANGUAGE and ASR__MODEL rather than a transcript
  of nonsense; with `auto` it records `en` (probability 1.0, not detected).
- Names: pre_ner's ranked `prompt_terms` go into Whisper's initial prompt (and hotwords with
  ASR__HOTWORDS), fixed for the pass, within ASR__PROMPT_MAX_TOKENS.
- Decoding, prompt and guards are the shared Whisper pass (`tasks.whisper_pass`).
- Guards (`tasks.asr_guards`): no conditioning on previous text; Whisper's thresholds; text over
  VAD silence, repeated phrases, prompt recitals and stock phrases removed; each in
  the decode report (`decode_report.json`), which subtitle_gen's QC report summarises.
- Word times: WhisperX alignment with the language's wav2vec2 model when it (and NLTK's punkt_tab
  sentence data) is in the cache; otherwise Whisper's own word timestamps, logged as a fallback.
- Speakers: each word and segment gets the speaker of the diarization turns it overlaps most; a
  segment whose words change speaker is cut there, so a segment is one speaker's.
"""

from __future__ import annotations

import math
import os
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from hardware.policy import StageDevice
from settings.stages import AsrSettings
from tasks.contract import PermanentError, StageContext, StageResult
from tasks.devanagari import SEED as DEVANAGARI_SEED
from tasks.devanagari import devanagari_share, devanagari_terms, latin_share, latin_spellings
from tasks.documents import (
    CoveredRegion,
    DecodeReport,
    Glossary,
    GuardRecord,
    MediaInfo,
    Segment,
    SpeakerTurns,
    SpeechRegions,
    Transcript,
)
from tasks.kernel import stage
from tasks.media import SAMPLE_RATE
from tasks.memory import loaded
from tasks.subtitle_layout import SENTENCE_END
from tasks.whisper_models import (
    AUTO,
    Audio,
    Decoded,
    LoadedWhisper,
    cached_snapshot,
    covered_seconds,
    cut_where_labels_change,
    detect_language,
    fetch_command,
    is_multilingual,
    join_words,
    resolve_model,
)
from tasks.whisper_pass import ENGLISH_WORDS, PassRequest, english_check, english_share, name_words, whisper_pass

HOTWORD_SHARE = 1 / 3  # of the prompt budget, for the top names, when ASR__HOTWORDS is on
MODEL_SETTING = "ASR__MODEL"


# Inputs -------------------------------------------------------------------------------


def read_audio(path: Path) -> Audio:
    """The demuxed WAV (16 kHz mono), read window by window."""
    return Audio(path)


# Language -----------------------------------------------------------------------------


def check_language(language: str, multilingual: bool, model_spec: str) -> str | None:
    """The language to decode with (None = detect); an English-only model refuses any other language."""
    language = language.strip().lower()
    if not multilingual:
        if language not in ("en", AUTO):
            raise PermanentError(
                f"the ASR model {model_spec} is English-only and cannot transcribe language {language!r}. For "
                "English audio, prepare the job with --source-lang en (FILM__SOURCE_LANG=en); otherwise set "
                f"{MODEL_SETTING} to a multilingual model (e.g. large-v3 or small; fetch it with "
                "`hf download Systran/faster-whisper-small`)."
            )
        return "en"
    return None if language == AUTO else language


def recorded_language(
    whisper: LoadedWhisper, language: str | None, speech: np.ndarray, log: Any
) -> tuple[str, float | None]:
    """The language to decode with and the probability to record.

    `auto` detects on the first 30 s of speech. A fixed language on a multilingual model records
    Whisper's probability for it on the same speech (a low one hints at a wrong ASR__LANGUAGE or
    audio track). An English-only model records en with 1.0 (nothing to detect).
    """
    if not is_multilingual(whisper):
        return "en", 1.0
    enough = speech.size >= SAMPLE_RATE // 2
    if language is None:
        if not enough:
            log.warning("no speech to detect the language on: recording en")
            return "en", None
        detected, probability, _ = detect_language(whisper, speech)
        log.info("detected language %s (p=%.2f)", detected, probability)
        return detected, probability
    if not enough:
        return language, None
    guess, guess_p, probabilities = detect_language(whisper, speech)
    probability = probabilities.get(language, 0.0)
    say = log.warning if guess != language and guess_p > 0.5 else log.info
    say(
        "language %s (FILM__SOURCE_LANG or ASR__LANGUAGE) (Whisper gives it p=%.2f; its own guess is %s, p=%.2f)",
        language,
        probability,
        guess,
        guess_p,
    )
    return language, probability


# Word times and speakers -----------------------------------------------------------------


def monotonic_words(words: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """Word times filled where missing (interpolated), kept inside [start, end], in order and not overlapping."""
    if not words:
        return []
    n = len(words)
    starts = np.array([np.nan if w.get("start") is None else float(w["start"]) for w in words])
    ends = np.array([np.nan if w.get("end") is None else float(w["end"]) for w in words])
    index = np.arange(n)
    for values in (starts, ends):
        known = ~np.isnan(values)
        if not known.any():
            values[:] = np.linspace(start, end, n + 1)[:-1] if values is starts else np.linspace(start, end, n + 1)[1:]
        elif not known.all():
            values[~known] = np.interp(index[~known], index[known], values[known])
    out, previous_end = [], start
    for w, s, e in zip(words, starts, ends, strict=True):
        s = min(max(float(s), previous_end, start), end)
        e = min(max(float(e), s), end)
        out.append(dict(w, start=round(s, 3), end=round(e, 3)))
        previous_end = e
    return out


TURN_PAUSE_S = 0.3  # a gap between words this long can hold a change of speaker
EDGE_SHIFT_S = 1.0  # a region's first word moves to the VAD edge when it is at most this far from it


def speaker_of(start: float, end: float, turns: list[dict[str, Any]]) -> str | None:
    """The speaker whose turns overlap [start, end] most; the nearest turn's speaker when none overlaps."""
    if not turns:
        return None
    totals: dict[str, float] = {}
    for turn in turns:
        shared = min(end, turn["end"]) - max(start, turn["start"])
        if shared > 0:
            totals[turn["speaker"]] = totals.get(turn["speaker"], 0.0) + shared
    if totals:
        return max(totals, key=totals.__getitem__)
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: max(0.0, t["start"] - middle, middle - t["end"]))
    return nearest["speaker"]


def segment_record(index: int, seg: Decoded, turns: list[dict[str, Any]], language: str) -> dict[str, Any]:
    words = [
        {
            "word": w["word"].strip(),
            "start": w["start"],
            "end": w["end"],
            "speaker": speaker_of(w["start"], w["end"], turns),
            "probability": w.get("probability"),
        }
        for w in seg.words
        if w["word"].strip()
    ]
    return {
        "id": index,
        "start": round(seg.start, 3),
        "end": round(seg.end, 3),
        "text": seg.text.strip(),
        "speaker": speaker_of(seg.start, seg.end, turns),
        "language": seg.language or language,
        "avg_logprob": round(seg.avg_logprob, 4),
        "no_speech_prob": round(seg.no_speech_prob, 4),
        "words": words,
    }


def phrases(words: list[dict[str, Any]]) -> list[list[int]]:
    """Word indices grouped into phrases that end at a sentence end or a pause: where a speaker may change."""
    groups: list[list[int]] = [[]]
    for i, word in enumerate(words):
        groups[-1].append(i)
        following = words[i + 1] if i + 1 < len(words) else None
        ends = SENTENCE_END.search(word["word"].strip()) is not None
        if following is not None and (ends or float(following["start"]) - float(word["end"]) >= TURN_PAUSE_S):
            groups.append([])
    return [g for g in groups if g]


def split_at_speakers(seg: Decoded, turns: list[dict[str, Any]]) -> list[Decoded]:
    """A segment cut where its phrases change speaker, so each segment is one speaker's (Whisper often
    runs a quick exchange into one segment); scores are the segment's.

    A diarization turn edge is a few hundred milliseconds off: cut at each word, it leaves a sentence's
    first or last word with the other speaker, an event of its own. So a speaker change only falls
    at a sentence end or a pause, and each phrase goes to the speaker who holds most of its time.
    """
    if not turns or len(seg.words) < 2:
        return [seg]
    labels: list[Any] = [None] * len(seg.words)
    for group in phrases(seg.words):
        held: dict[Any, float] = {}
        for i in group:
            w = seg.words[i]
            who = speaker_of(w["start"], w["end"], turns)
            held[who] = held.get(who, 0.0) + max(1e-3, float(w["end"]) - float(w["start"]))
        for i in group:
            labels[i] = max(held, key=held.__getitem__)
    return cut_where_labels_change(seg, labels)


def on_speech_edges(segments: list[Decoded], speech: list[dict[str, float]]) -> list[Decoded]:
    """The first word of each VAD speech region starts on the region's edge.

    Whisper's word times drift by a few hundred milliseconds, often late at the start of an
    utterance (or early, into the silence before it); the VAD edge is on the first frame of
    speech. So the first word in a region starts there when the two are less than
    EDGE_SHIFT_S apart; the segment then starts with its first word.
    """
    words = sorted(
        ((i, j, w) for i, seg in enumerate(segments) for j, w in enumerate(seg.words)), key=lambda x: x[2]["start"]
    )
    starts = [float(r["start"]) for r in speech]  # VAD regions come in time order and do not overlap
    first_in: dict[int, int] = {}  # region -> index in `words` of its first word (the region holding most of it)
    for k, (_, _, word) in enumerate(words):
        near = range(max(0, bisect_right(starts, word["end"]) - 2), bisect_right(starts, word["end"]))
        shares = {r: min(word["end"], speech[r]["end"]) - max(word["start"], speech[r]["start"]) for r in near}
        best = max(shares, key=shares.__getitem__, default=None)
        if best is not None and shares[best] > 0:
            first_in.setdefault(best, k)
    moved: dict[tuple[int, int], float] = {}
    for r, at in first_in.items():
        i, j, word = words[at]
        edge = float(speech[r]["start"])
        if abs(word["start"] - edge) > EDGE_SHIFT_S:
            continue
        earliest = words[at - 1][2]["end"] if at > 0 else 0.0  # never over the word before
        moved[i, j] = round(min(max(edge, earliest), float(word["end"]) - 0.01), 3)
    out = []
    for i, seg in enumerate(segments):
        if any((i, j) in moved for j in range(len(seg.words))):
            words_now = [w | {"start": moved[i, j]} if (i, j) in moved else w for j, w in enumerate(seg.words)]
            seg = replace(seg, words=words_now, start=words_now[0]["start"])
        out.append(seg)
    return out


def ends_in_speech(segments: list[Decoded], speech: list[dict[str, float]]) -> list[Decoded]:
    """No word ends in the silence after its VAD speech region: it ends on the region's edge.

    Whisper often stretches the last word of an utterance over the pause after it ("in." held from
    52.03 to 53.33 s where the speech ended at 52.48 and the next speaker began at 53.39, on a bench
    film): the pause is then invisible to the subtitle layout, which put both speakers' sentences in
    one event that came up 3.5 s before the second was said. A word belongs to the region it starts
    in; words starting outside every region are left alone.
    """
    starts = [float(r["start"]) for r in speech]  # VAD regions come in time order and do not overlap
    out = []
    for seg in segments:
        words = []
        for word in seg.words:
            at = bisect_right(starts, float(word["start"])) - 1
            edge = float(speech[at]["end"]) if at >= 0 else math.inf
            if float(word["start"]) < edge < float(word["end"]):
                word = word | {"end": round(max(edge, float(word["start"]) + 0.01), 3)}
            words.append(word)
        if words != seg.words:
            seg = replace(seg, words=words, end=max(float(w["end"]) for w in words))
        out.append(seg)
    return out


def fit_words(seg: Decoded) -> Decoded:
    """Words made monotonic inside the segment; the segment then spans its words."""
    if not seg.words:
        return seg
    words = monotonic_words(seg.words, seg.start, seg.end)
    return replace(seg, words=words, start=words[0]["start"], end=max(words[-1]["end"], words[0]["start"]))


# Alignment ------------------------------------------------------------------------------


def nltk_data_path() -> list[str]:
    """Where NLTK looks for its data: `nltk.data.path`, built here as NLTK builds it (the NLTK_DATA
    variable, ~/nltk_data, then the prefix's and the system's folders) so that checking costs no
    import of NLTK, which took 1.4 s of each run (scipy.stats, sklearn)."""
    if "nltk.data" in sys.modules or os.name == "nt":
        import nltk.data

        return list(nltk.data.path)
    roots = [os.path.expanduser(d) for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    roots.append(os.path.expanduser("~/nltk_data"))
    roots += [os.path.join(sys.prefix, *sub, "nltk_data") for sub in ((), ("share",), ("lib",))]
    system = ("/usr/share", "/usr/local/share", "/usr/lib", "/usr/local/lib")
    return roots + [os.path.join(folder, "nltk_data") for folder in system]


def punkt_installed(language: str) -> bool:
    """NLTK's punkt_tab sentence data for `language`, unpacked or in its zip, in one of NLTK's data folders."""
    import zipfile

    for root in nltk_data_path():
        tokenizers = Path(root) / "tokenizers"
        if (tokenizers / "punkt_tab" / language).is_dir():
            return True
        archive = tokenizers / "punkt_tab.zip"
        if archive.is_file():
            with zipfile.ZipFile(archive) as bundle:
                if any(name.startswith(f"punkt_tab/{language}/") for name in bundle.namelist()):
                    return True
    return False


@dataclass(frozen=True)
class AlignerSource:
    name: str  # torchaudio bundle name or local folder of a Hugging Face wav2vec2 model
    model_dir: str | None  # torchaudio checkpoint folder


def aligner_source(language: str, setting: str | None, cache_root: Path) -> tuple[AlignerSource | None, str]:
    """The cached wav2vec2 aligner for a language, or None and why (never a download).

    NLTK's sentence data is checked first: without it no aligner can run, and the check costs nothing
    where importing WhisperX's alignment module (transformers, pandas) costs three seconds or more.
    """
    from whisperx.utils import PUNKT_LANGUAGES

    if not punkt_installed(PUNKT_LANGUAGES.get(language, "english")):
        return None, (
            "NLTK's punkt_tab sentence data (which WhisperX alignment needs) is not installed; fetch it with "
            "`python -m nltk.downloader punkt_tab`"
        )
    import torchaudio
    from whisperx.alignment import DEFAULT_ALIGN_MODELS_HF, DEFAULT_ALIGN_MODELS_TORCH

    name = setting or DEFAULT_ALIGN_MODELS_TORCH.get(language) or DEFAULT_ALIGN_MODELS_HF.get(language)
    if not name:
        return None, f"no wav2vec2 aligner is known for language {language!r} (set ASR__ALIGN_MODEL)"
    if name in torchaudio.pipelines.__all__:
        bundle = getattr(torchaudio.pipelines, name)
        folder = Path(cache_root) / "torch" / "hub" / "checkpoints"
        if not (folder / Path(bundle._path).name).is_file():
            torch_home = Path(cache_root) / "torch"
            return None, (
                f"the aligner {name} is not in {folder}; fetch it with `TORCH_HOME={torch_home} "
                f'python -c "import torchaudio; torchaudio.pipelines.{name}.get_model()"`'
            )
        return AlignerSource(name=name, model_dir=str(folder)), f"torchaudio {name}"
    local = Path(name).expanduser()
    if local.is_dir():
        return AlignerSource(name=str(local.resolve()), model_dir=None), f"local {local}"
    cached = cached_snapshot(
        name,
        cache_root,
        required=("config.json", "preprocessor_config.json"),
        any_of=("model.safetensors", "pytorch_model.bin"),
    )
    if cached is None:
        return None, (
            f"the aligner {name} is not in the model cache; fetch it with "
            f"`{fetch_command(name, cache_root)}` (setting ASR__ALIGN_MODEL)"
        )
    return AlignerSource(name=str(cached), model_dir=None), f"cached {name}"


def align_segments(
    segments: list[Decoded],
    audio: Audio,
    language: str,
    source: AlignerSource,
    device: str,
    on_segment: Callable[[int, int], None] | None = None,
) -> tuple[list[Decoded], int]:
    """WhisperX forced alignment, one segment at a time (its text and scores kept); failures keep Whisper's words."""
    import whisperx

    torch_device = device if device.startswith("cuda") else "cpu"
    with loaded(
        lambda: whisperx.load_align_model(
            language, torch_device, model_name=source.name, model_dir=source.model_dir, model_cache_only=True
        )
    ) as held:
        model, metadata = held[0]
        out, failed = [], 0
        for index, seg in enumerate(segments):
            if on_segment is not None and index % 20 == 0:
                on_segment(index, len(segments))
            try:  # the segment's own audio, so times come back relative to its start
                piece = audio.window(seg.start, seg.end)
                result = whisperx.align(
                    [{"start": 0.0, "end": piece.size / SAMPLE_RATE, "text": seg.text}],
                    model,
                    metadata,
                    piece,
                    torch_device,
                )
                words = [
                    {
                        "word": w["word"],
                        "start": _shift(w.get("start"), seg.start),
                        "end": _shift(w.get("end"), seg.start),
                        "probability": w.get("score"),
                    }
                    for s in result["segments"]
                    for w in s["words"]
                ]
            except Exception:  # noqa: BLE001 - one bad segment keeps Whisper's own words
                words = []
            if words and any(w["start"] is not None for w in words):
                out.append(replace(seg, words=words))
            else:
                failed += 1
                out.append(seg)
        del model, metadata
    return out, failed


def _shift(value: float | None, offset: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value) + offset, 3)


# The stage -----------------------------------------------------------------------------


def split_at_script(seg: Decoded, min_latin_words: int = 3) -> list[Decoded]:
    """A Hindi-pass segment cut where it changes between Devanagari and a run of Latin words (an English line
    said right after a Hindi one); a Latin name or two inside Hindi stays where it is."""
    latin: list[bool] = []
    for is_latin, run in groupby(devanagari_share(w["word"]) < 0.5 for w in seg.words):
        size = len(list(run))
        latin += [is_latin and size >= min_latin_words] * size  # short Latin runs (names) stay with the Hindi
    return cut_where_labels_change(seg, latin)


NAME_PUNCTUATION = " ,.!?;:।\"'"


def names_to_english_lines(segments: list[Decoded], latin_of: dict[str, str] | None = None) -> list[Decoded]:
    """A name or two ending a Hindi segment moves to the English line right after it when it is nearer in
    time to that line's first word than to the Hindi before it.

    Whisper often closes a Hindi segment with the vocative that opens the English line ("... चलें। Simran," /
    "I will come back."), in Latin letters or, steered by the Devanagari prompt, in Devanagari ("सिमरन,").
    `split_at_script` keeps short Latin runs with the Hindi on purpose (names said inside Hindi), so the
    pause around the name decides whose it is. A name in Devanagari (`latin_of`: Devanagari spelling ->
    the cast's Latin name) is written in Latin letters in the English line.
    """
    latin_of = latin_of or {}

    def is_name(word: dict[str, Any]) -> bool:
        return devanagari_share(word["word"]) < 0.5 or word["word"].strip(NAME_PUNCTUATION) in latin_of

    def in_latin(word: dict[str, Any]) -> dict[str, Any]:
        core = word["word"].strip(NAME_PUNCTUATION)
        return word | {"word": word["word"].replace(core, latin_of[core])} if core in latin_of else word

    out = list(segments)
    for k in range(len(out) - 1):
        hindi, english = out[k], out[k + 1]
        if hindi.language is not None or english.language != "en" or not english.words or not hindi.words:
            continue
        names = [is_name(w) for w in hindi.words]
        tail = len(names) - next((i for i, name in enumerate(reversed(names)) if not name), len(names))
        if tail == len(names) or len(names) - tail > 2:
            continue
        name = hindi.words[tail:]
        previous = hindi.words[tail - 1] if tail else (out[k - 1].words[-1] if k and out[k - 1].words else None)
        said_after = name[0]["start"] - previous["end"] if previous is not None else math.inf
        if english.words[0]["start"] - name[-1]["end"] >= said_after:
            continue
        kept, moved = hindi.words[:tail], [in_latin(w) for w in name] + english.words
        out[k] = replace(hindi, words=kept, text=join_words(kept), end=kept[-1]["end"] if kept else hindi.start)
        out[k + 1] = replace(english, words=moved, text=join_words(moved), start=moved[0]["start"])
    return [seg for seg in out if seg.words or seg.text.strip()]


def label_mixed_language(segments: list[Decoded], mixed: list[str], names: list[str],
                         log: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Hindi segments not written in Devanagari, listed; labelled English when they are English words and the
    film mixes English in.

    Decoded as Hindi with a Devanagari prompt, Whisper writes Hindi in Devanagari and an English line in
    Latin letters, so the script tells the two apart where Whisper's own language guess cannot (on
    synthetic Hindi base guesses English, p(hi) near 0). Romanised Hindi is in Latin letters too, but not
    in English words: it stays Hindi (and is translated), flagged.
    """
    flags: list[dict[str, Any]] = []
    words_of_names = name_words(names)
    for seg in segments:
        share = devanagari_share(seg.text)
        if share >= 0.5:
            continue
        latin = latin_share(seg.text) >= 0.5  # Urdu script is no English
        english = latin and english_share(seg.text, words_of_names) >= ENGLISH_WORDS
        said = "en" if "en" in mixed and english else None
        seg.language = said
        what = " (taken as said in English)" if said else " (romanised Hindi)" if latin else ""
        log.warning("Hindi segment [%.2f-%.2f] is %.0f%% Devanagari%s: %r", seg.start, seg.end, 100 * share, what,
                    seg.text)  # fmt: skip
        reason = f"script: {100 * share:.0f}% Devanagari" + (", taken as English" if said else "")
        flags.append({"start": seg.start, "end": seg.end, "text": seg.text, "action": "flagged", "reason": reason})
    return flags


def asr_preflight(settings: AsrSettings, device: StageDevice, cache_root: Path, _secrets: dict) -> str:
    """The model must be on disk before the run starts (nothing is downloaded during a run)."""
    choice = resolve_model(settings.model, device.device, cache_root, MODEL_SETTING, settings.language)
    return f"Whisper model {choice.spec} ({choice.path}){': ' + choice.reason if choice.reason else ''}"


@stage("asr", version="22", gpu=True, preflight=asr_preflight)
def asr(
    ctx: StageContext,
    settings: AsrSettings,
    demux: StageResult,
    silero_vad: StageResult,
    diarization: StageResult,
    pre_ner: StageResult,
) -> dict:
    audio = read_audio(ctx.file(demux, ctx.read(demux, MediaInfo).audio))
    speech = [r.model_dump() for r in ctx.read(silero_vad, SpeechRegions).segments]
    turns = [t.model_dump() for t in ctx.read(diarization, SpeakerTurns).turns]
    glossary = ctx.read(pre_ner, Glossary)
    terms = glossary.prompt_terms if settings.use_glossary else []
    wanted = (settings.language or AUTO).strip().lower()
    hindi = wanted == "hi"
    request = PassRequest(
        model=settings.model,
        setting=MODEL_SETTING,
        task="transcribe",
        language=None if wanted == AUTO else wanted,
        decoding=settings.decoding(),
        terms=devanagari_terms(terms, glossary.entries) if hindi else terms,
        prompt_budget=settings.prompt_max_tokens,
        initial_prompt=settings.initial_prompt or (DEVANAGARI_SEED if hindi else ""),
        hotword_share=HOTWORD_SHARE if settings.hotwords else 0.0,
        check=english_check(terms, "romanised Hindi", latin_only=True) if hindi else None,
    )

    def choose_language(whisper: LoadedWhisper, first_speech: np.ndarray) -> tuple[str, float | None]:
        language = check_language(wanted, is_multilingual(whisper), settings.model)
        return recorded_language(whisper, language, first_speech, ctx.log)

    out = whisper_pass(request, audio, speech, ctx.device, ctx.cache_root, ctx.log, ctx.progress, choose_language)
    kept = out.kept
    if hindi:
        kept = [piece for seg in kept for piece in split_at_script(seg)]
        out.filtered += label_mixed_language(kept, settings.mixed_languages, terms, ctx.log)
        kept = names_to_english_lines(kept, latin_spellings(terms, glossary.entries))
    mode = "whisper"
    source, why = aligner_source(out.language, settings.align_model, ctx.cache_root) if kept else (None, "no text")
    if source is not None:
        ctx.log.info("aligning words with %s on %s", why, ctx.device.device)
        try:
            kept, failed = align_segments(
                kept,
                audio,
                out.language,
                source,
                ctx.device.device,
                lambda i, n: ctx.progress(0.85 + 0.1 * i / n, f"aligned {i}/{n} segments"),
            )
            mode = "aligned"
            if failed:
                ctx.log.warning(
                    "alignment failed for %d of %d segments: Whisper's word times kept there", failed, len(kept)
                )
        except (OSError, ValueError, RuntimeError) as exc:  # a broken cached aligner must not lose the transcript
            ctx.log.warning(
                "the aligner %s failed to load or run (%s): word times fall back to Whisper's own", why, exc
            )
    else:
        ctx.log.warning("word times fall back to Whisper's own word timestamps: %s", why)
    ctx.progress(0.95, "word times")
    kept = ends_in_speech([fit_words(seg) for seg in kept], speech)
    pieces = on_speech_edges([piece for seg in kept for piece in split_at_speakers(seg, turns)], speech)
    segments = [segment_record(i, seg, turns, out.language) for i, seg in enumerate(pieces)]

    ctx.write(
        Transcript(
            language=out.language,
            language_probability=out.language_probability,
            model=out.choice.spec,
            word_timestamps=mode,
            segments=[Segment.model_validate(s) for s in segments],
        )
    )
    covered = covered_seconds(speech, pieces)
    regions = [CoveredRegion(**r, covered_s=round(c, 3)) for r, c in zip(speech, covered, strict=True)]
    ctx.write(DecodeReport(records=[GuardRecord.model_validate(r) for r in out.filtered], regions=regions))
    ctx.progress(1.0, "done")
    return {
        "language": out.language,
        "language_probability": out.language_probability,
        "model": out.choice.spec,
        "model_reason": out.choice.reason,
        "device": ctx.device.device,
        "compute_type": out.compute_type,
        "batch_size": out.batch_size,
        "model_load_s": out.load_s,
        "windows": out.windows,
        "redecoded_windows": out.redecoded,
        "segments": len(segments),
        "words": sum(len(s["words"]) for s in segments),
        "filtered": len(out.filtered),
        "word_timestamps": mode,
        "prompt_terms": len(out.prompt.terms),
        "prompt_tokens": out.prompt.tokens,
        "speakers": bool(turns),
        "languages": dict(Counter(s["language"] for s in segments)),
    }
