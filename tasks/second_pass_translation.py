"""second_pass_translation: English text for the transcript, by Whisper's translate task or an NMT model.

Backends (SECOND_PASS_TRANSLATION__BACKEND):
- `whisper`: Whisper decodes the same speech windows again with task `translate` (the model the
  asr stage used unless SECOND_PASS_TRANSLATION__WHISPER_MODEL says otherwise) through the same
  Whisper pass as asr (`tasks.whisper_pass`: ASR__* decoding settings and thresholds, the glossary
  names as prompt, the same guards). Each English segment lists the transcript
  segments it covers by time (`source_ids`); one that covers none is dropped.
- `nmt`: a Hugging Face sequence-to-sequence model from the cache (NLLB or M2M100 with their
  language codes, hin_Deva -> eng_Latn; IndicTrans2 with its tag prefix; any other seq2seq
  model as is). Segments are translated in batches, each inside a window of its neighbours
  (`context_segments` either side) joined by a separator; when the model does not keep the
  separators, that segment is translated on its own. Glossary names are replaced by numbered
  placeholders before translation and restored (in their canonical spelling) after; a segment
  whose placeholders the model lost is translated again without them.
- `none`: no translation (an empty segment list).
Source already English: the transcript passes through unchanged and `passthrough` says so. In a Hinglish
film, the segments the asr stage labelled English pass through as said (`said_in_english` counts them) and
only the rest is translated: Whisper's translate task would only paraphrase them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import regex

from settings.stages import TranslationSettings
from tasks.asr import read_audio
from tasks.contract import PermanentError, StageContext, StageResult
from tasks.documents import Glossary, GuardRecord, MediaInfo, SpeechRegions, Transcript, TranslatedSegment, Translation
from tasks.glossary import spelling_targets
from tasks.kernel import stage
from tasks.memory import loaded
from tasks.whisper_models import (
    Decoded,
    LoadedWhisper,
    cached_snapshot,
    fetch_command,
    is_multilingual,
)
from tasks.whisper_pass import PassRequest, english_check, whisper_pass

TARGET = "en"
WHISPER_SETTING = "SECOND_PASS_TRANSLATION__WHISPER_MODEL"
NMT_SETTING = "SECOND_PASS_TRANSLATION__NMT_MODEL"
PROMPT_TOKENS = 120  # names only: English text needs fewer tokens than the source transcript
SEPARATOR = " | "
_SEPARATOR_SPLIT = regex.compile(r"\s*\|+\s*")
_PLACEHOLDER = regex.compile(r"\[\s*(\d+)\s*\]")
_WORD = r"[\p{L}\p{M}\p{N}]"
# FLORES-200 codes (NLLB, IndicTrans2) for the ISO 639-1 codes Whisper reports.
FLORES = {
    "hi": "hin_Deva",
    "en": "eng_Latn",
    "ur": "urd_Arab",
    "bn": "ben_Beng",
    "pa": "pan_Guru",
    "mr": "mar_Deva",
    "gu": "guj_Gujr",
    "ta": "tam_Taml",
    "te": "tel_Telu",
    "kn": "kan_Knda",
    "ml": "mal_Mlym",
    "or": "ory_Orya",
    "as": "asm_Beng",
    "ne": "npi_Deva",
    "sa": "san_Deva",
}


def is_english(language: str | None) -> bool:
    return (language or "").lower().split("-")[0] in ("en", "eng")


def passthrough_segments(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Segments already in English, as said: the English track takes them unchanged."""
    return [
        {
            "id": s["id"],
            "start": s["start"],
            "end": s["end"],
            "text": s["text"],
            "speaker": s.get("speaker"),
            "words": s.get("words", []),
            "source_ids": [s["id"]],
        }
        for s in segments
    ]


def speech_outside(speech: list[dict[str, Any]], spans: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """The speech regions minus the spans (English lines of a Hinglish film): only the rest is translated."""
    out: list[dict[str, Any]] = []
    for region in speech:
        pieces = [(float(region["start"]), float(region["end"]))]
        for lo, hi in spans:
            pieces = [p for a, b in pieces for p in ((a, min(b, lo)), (max(a, hi), b)) if p[1] - p[0] > 0.05]
        out += [{**region, "start": a, "end": b} for a, b in pieces]
    return out


def in_time_order(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Translated and as-said segments in one list, numbered again in time order."""
    ordered = sorted(segments, key=lambda s: (s["start"], s["end"]))
    return [{**s, "id": i} for i, s in enumerate(ordered)]


# Whisper translate ------------------------------------------------------------------------


def covered_ids(start: float, end: float, segments: list[dict[str, Any]], min_share: float = 0.5) -> list[int]:
    """Transcript segments an English segment covers: at least min_share of each, else the one it overlaps most."""
    shares = []
    for seg in segments:
        shared = min(end, seg["end"]) - max(start, seg["start"])
        duration = max(seg["end"] - seg["start"], 1e-6)
        if shared > 0:
            shares.append((shared / duration, shared, seg["id"]))
    ids = [i for share, _, i in shares if share >= min_share]
    if not ids and shares:
        ids = [max(shares, key=lambda s: s[1])[2]]
    return sorted(ids)


def map_to_transcript(
    english: list[Decoded], transcript: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Decoded]]:
    """English segments with source_ids and the speaker of their sources; those over no transcript text apart."""
    by_id = {s["id"]: s for s in transcript}
    out: list[dict[str, Any]] = []
    orphans: list[Decoded] = []
    for seg in sorted(english, key=lambda s: s.start):
        ids = covered_ids(seg.start, seg.end, transcript)
        if not ids:
            orphans.append(seg)
            continue
        speaker_time: dict[Any, float] = {}
        for i in ids:
            src = by_id[i]
            shared = max(0.0, min(seg.end, src["end"]) - max(seg.start, src["start"]))
            speaker_time[src.get("speaker")] = speaker_time.get(src.get("speaker"), 0.0) + shared
        out.append(
            {
                "id": len(out),
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "text": seg.text.strip(),
                "speaker": max(speaker_time, key=speaker_time.__getitem__),
                "words": [],
                "source_ids": ids,
            }
        )
    return out, orphans


def whisper_translate(
    ctx: StageContext,
    settings: TranslationSettings,
    transcript: dict[str, Any],
    terms: list[str],
    demux: StageResult,
    silero_vad: StageResult,
    said_in_english: list[tuple[float, float]],
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Whisper's translate task over the same speech windows (less the lines said in English), decoded and guarded
    as the asr pass is."""
    audio = read_audio(ctx.file(demux, ctx.read(demux, MediaInfo).audio))
    regions = [r.model_dump() for r in ctx.read(silero_vad, SpeechRegions).segments]
    speech = speech_outside(regions, said_in_english)
    model = transcript["model"] if settings.whisper_model == "asr" else settings.whisper_model
    language = transcript["language"]
    request = PassRequest(
        model=model,
        setting=WHISPER_SETTING,
        task="translate",
        language=language,
        decoding=settings.decoding,
        terms=terms,
        prompt_budget=PROMPT_TOKENS,
        drop_repeats_across=True,
        check=english_check(terms, "not English"),
    )

    def choose_language(whisper: LoadedWhisper, _speech: np.ndarray) -> tuple[str, float | None]:
        if not is_multilingual(whisper):
            raise PermanentError(
                f"the Whisper model {model} is English-only and cannot translate from "
                f"{language!r}; set {WHISPER_SETTING} to a multilingual model (large-v3, small), or "
                "SECOND_PASS_TRANSLATION__BACKEND=nmt."
            )
        return language, None

    out = whisper_pass(
        request,
        audio,
        speech,
        ctx.device,
        ctx.cache_root,
        ctx.log,
        lambda f, m: ctx.progress(0.9 * f / 0.85, m),
        choose_language,
    )
    segments, orphans = map_to_transcript(out.kept, transcript["segments"])
    for seg in orphans:
        ctx.log.info("dropped English over no transcript text [%.2f-%.2f]: %r", seg.start, seg.end, seg.text)
    covered = {i for s in segments for i in s["source_ids"]}
    missing = [s["id"] for s in transcript["segments"] if s["id"] not in covered]
    if missing:
        ctx.log.warning("%d transcript segments have no English segment over them: %s", len(missing), missing[:20])
    flagged = sum(r["action"] == "flagged" for r in out.filtered)
    if flagged:
        ctx.log.warning("%d English segments are flagged (listed in the QC report)", flagged)
    summary = {
        "model": out.choice.spec,
        "filtered": len(out.filtered),
        "flagged": flagged,
        "orphans": len(orphans),
        "untranslated_segments": len(missing),
    }
    return segments, summary, [dict(r) for r in out.filtered]


# NMT ------------------------------------------------------------------------------------


@dataclass
class Seq2Seq:
    tokenizer: Any
    model: Any
    family: str  # nllb | m2m100 | indictrans | plain
    device: str


def model_folder(value: str, cache_root: Path) -> Path:
    """A local folder, or the cached snapshot of a hub id; never a download."""
    local = Path(value).expanduser()
    if local.is_dir():
        return local.resolve()
    if value.startswith((".", "/", "~")):
        raise PermanentError(f"the NMT model folder {value} (setting {NMT_SETTING}) does not exist.")
    cached = cached_snapshot(
        value,
        cache_root,
        required=("config.json",),
        any_of=(
            "model.safetensors",
            "pytorch_model.bin",
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ),
    )
    if cached is None:
        raise PermanentError(
            f"the NMT model {value} is not in the model cache and is never downloaded during a run. "
            f"Fetch it with `{fetch_command(value, cache_root)}`, or set {NMT_SETTING} to a local "
            "folder, or SECOND_PASS_TRANSLATION__BACKEND=whisper."
        )
    return cached


def load_seq2seq(value: str, cache_root: Path, device: str) -> Seq2Seq:
    """Tokenizer and model from a local folder or the cache, on `device`, in eval mode."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = model_folder(value, cache_root)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    remote = "indictrans" in str(config.get("model_type", "")).lower()  # IndicTrans2 ships its own model code
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=remote)
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), local_files_only=True, trust_remote_code=remote)
    except (OSError, ValueError, ImportError) as exc:
        raise PermanentError(f"cannot load the NMT model {value} from {folder} ({exc}); check {NMT_SETTING}.") from exc
    torch_device = device if device.startswith("cuda") else "cpu"
    model = model.to(torch_device).eval()
    return Seq2Seq(
        tokenizer=tokenizer, model=model, family=model_family(type(tokenizer).__name__, config), device=torch_device
    )


def model_family(tokenizer_class: str, config: dict[str, Any]) -> str:
    name = tokenizer_class.lower()
    if "indictrans" in str(config.get("model_type", "")).lower() or "indictrans" in name:
        return "indictrans"
    if name.startswith("nllb"):
        return "nllb"
    if name.startswith("m2m100"):
        return "m2m100"
    return "plain"


def flores(language: str) -> str:
    if language not in FLORES:
        raise PermanentError(
            f"no FLORES-200 code known for language {language!r}; use SECOND_PASS_TRANSLATION__BACKEND=whisper for it."
        )
    return FLORES[language]


def language_setup(family: str, source: str, target: str, tokenizer: Any) -> tuple[str, dict[str, Any]]:
    """(prefix for each input, extra generate() arguments) for a model family's language codes."""
    if family == "nllb":
        tokenizer.src_lang = flores(source)
        return "", {"forced_bos_token_id": tokenizer.convert_tokens_to_ids(flores(target))}
    if family == "m2m100":
        tokenizer.src_lang = source
        return "", {"forced_bos_token_id": tokenizer.get_lang_id(target)}
    if family == "indictrans":
        return f"{flores(source)} {flores(target)} ", {}
    return "", {}


# Names -----------------------------------------------------------------------------------


def name_table(glossary: dict[str, Any] | None) -> dict[str, str]:
    """Every spelling of a protected name -> what it should read: the part of the name it spells
    ("Raaj" -> "Raj", not "Raj Malhotra"), from the glossary's own spelling targets."""
    if not glossary:
        return {}
    protected = [str(n) for n in glossary.get("protected_names", []) if str(n).strip()]
    table = {name: name for name in protected}
    wanted = {n.lower() for n in protected}
    for entry in glossary.get("entries", []):
        if str(entry.get("canonical", "")).lower() in wanted:
            for spelling, target in spelling_targets(entry):
                if spelling.strip():
                    table.setdefault(spelling, target)
    return table


def protect(text: str, names: dict[str, str], first: int = 1) -> tuple[str, dict[int, str]]:
    """Names replaced by `[n]` placeholders (longest spelling first, whole words, any case)."""
    mapping: dict[int, str] = {}
    if not names:
        return text, mapping
    spellings = sorted(names, key=len, reverse=True)
    alternatives = "|".join(regex.escape(s) for s in spellings)
    pattern = regex.compile(rf"(?<!{_WORD})({alternatives})(?!{_WORD})", regex.IGNORECASE)
    lower = {s.lower(): names[s] for s in spellings}
    counter = [first]

    def swap(match: Any) -> str:
        number = counter[0]
        counter[0] += 1
        mapping[number] = lower[match.group(1).lower()]
        return f"[{number}]"

    return pattern.sub(swap, text), mapping


def restore(text: str, mapping: dict[int, str]) -> tuple[str, set[int]]:
    """Placeholders put back as names; returns the text and the placeholders that were found."""
    found: set[int] = set()

    def back(match: Any) -> str:
        number = int(match.group(1))
        if number in mapping:
            found.add(number)
            return mapping[number]
        return match.group(0)

    return " ".join(_PLACEHOLDER.sub(back, text).split()), found


def windows(texts: list[str], context: int) -> list[tuple[list[int], int]]:
    """For each segment: the indices of its window (neighbours either side) and its position in it."""
    out = []
    for i in range(len(texts)):
        lo, hi = max(0, i - context), min(len(texts), i + context + 1)
        out.append((list(range(lo, hi)), i - lo))
    return out


def split_window(text: str, parts: int) -> list[str] | None:
    pieces = [p.strip() for p in _SEPARATOR_SPLIT.split(text.strip())]
    return pieces if len(pieces) == parts else None


def generate(
    nmt: Seq2Seq,
    inputs: list[str],
    batch_size: int,
    max_new_tokens: int,
    num_beams: int,
    extra: dict[str, Any],
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Translations of `inputs`, batch_size at a time."""
    import torch

    out: list[str] = []
    for first in range(0, len(inputs), batch_size):
        batch = inputs[first : first + batch_size]
        encoded = nmt.tokenizer(batch, return_tensors="pt", padding=True, truncation=True)
        model_inputs = {k: encoded[k].to(nmt.device) for k in ("input_ids", "attention_mask") if k in encoded}
        with torch.inference_mode():
            tokens = nmt.model.generate(**model_inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, **extra)
        out += [t.strip() for t in nmt.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        if on_batch is not None:
            on_batch(len(batch))
    return out


def nmt_translate_texts(
    nmt: Seq2Seq,
    texts: list[str],
    source: str,
    names: dict[str, str],
    settings: TranslationSettings,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """English for each text: in context windows where the model keeps the separators, alone otherwise,
    with protected names restored (or, where the model lost a placeholder, translated without protection)."""
    prefix, extra = language_setup(nmt.family, source, TARGET, nmt.tokenizer)
    protected: list[tuple[str, dict[int, str]]] = []
    counter = 1
    for text in texts:  # placeholders numbered across the film, so windows never reuse a number
        masked, mapping = protect(text, names, counter)
        counter += len(mapping)
        protected.append((masked, mapping))
    stats = {"context_windows": 0, "alone": 0, "names_protected": sum(len(m) for _, m in protected), "names_lost": 0}
    done = [0]
    total = max(1, len(texts))

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(min(0.9, 0.9 * done[0] / (2 * total)), f"translated {done[0]} inputs")

    results: list[str | None] = [None] * len(texts)
    spans = windows(texts, settings.context_segments)
    if settings.context_segments > 0 and len(texts) > 1:
        inputs = [prefix + SEPARATOR.join(protected[j][0] for j in span) for span, _ in spans]
        outputs = generate(nmt, inputs, settings.batch_size, settings.max_new_tokens, settings.beam_size, extra, tick)
        for i, ((span, position), output) in enumerate(zip(spans, outputs, strict=True)):
            parts = split_window(output, len(span))
            if parts is not None:
                results[i] = parts[position]
                stats["context_windows"] += 1
    alone = [i for i, r in enumerate(results) if r is None]
    if alone:
        outputs = generate(
            nmt,
            [prefix + protected[i][0] for i in alone],
            settings.batch_size,
            settings.max_new_tokens,
            settings.beam_size,
            extra,
            tick,
        )
        for i, output in zip(alone, outputs, strict=True):
            results[i] = output
        stats["alone"] = len(alone)
    final: list[str] = []
    lost: list[int] = []
    for i, result in enumerate(results):
        restored, found = restore(result or "", protected[i][1])
        if found != set(protected[i][1]):
            lost.append(i)
        final.append(restored)
    if lost:  # the model dropped or mangled a placeholder: translate the plain text instead
        outputs = generate(
            nmt,
            [prefix + texts[i] for i in lost],
            settings.batch_size,
            settings.max_new_tokens,
            settings.beam_size,
            extra,
            tick,
        )
        for i, output in zip(lost, outputs, strict=True):
            final[i] = output
        stats["names_lost"] = len(lost)
    return final, stats


def nmt_translate(
    ctx: StageContext, settings: TranslationSettings, transcript: dict[str, Any], glossary: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    source = transcript["language"]
    segments = transcript["segments"]
    ctx.log.info(
        "NMT translation with %s on %s, %s -> en, %d segments, batch %d, context %d",
        settings.nmt_model,
        ctx.device.device,
        source,
        len(segments),
        settings.batch_size,
        settings.context_segments,
    )
    with loaded(lambda: load_seq2seq(settings.nmt_model, ctx.cache_root, ctx.device.device)) as held:
        nmt = held[0]
        ctx.log.info("model family %s", nmt.family)
        texts, stats = nmt_translate_texts(
            nmt, [s["text"] for s in segments], source, name_table(glossary), settings, ctx.progress
        )
        del nmt
    out = [
        {
            "id": s["id"],
            "start": s["start"],
            "end": s["end"],
            "text": text,
            "speaker": s.get("speaker"),
            "words": [],
            "source_ids": [s["id"]],
        }
        for s, text in zip(segments, texts, strict=True)
    ]
    return out, {"model": settings.nmt_model} | stats


# The stage -----------------------------------------------------------------------------


def english_already(ctx: StageContext, inputs: dict[str, Any]) -> bool:
    """An English transcript only passes through: it need not wait for a CPU slot or the GPU limit."""
    return is_english(ctx.read(inputs["asr"], Transcript).language)


@stage("second_pass_translation", version="16", gpu=True, light_when=english_already)
def second_pass_translation(
    ctx: StageContext,
    settings: TranslationSettings,
    demux: StageResult,
    silero_vad: StageResult,
    asr: StageResult,
    pre_ner: StageResult,
) -> dict:
    transcript = ctx.read(asr, Transcript).model_dump()
    glossary = ctx.read(pre_ner, Glossary).model_dump()
    source = transcript["language"]
    started = time.monotonic()
    passthrough = is_english(source)
    as_said: list[dict[str, Any]] = []
    to_translate: list[dict[str, Any]] = []
    for seg in transcript["segments"]:
        (as_said if passthrough or is_english(seg.get("language")) else to_translate).append(seg)
    rest = {**transcript, "segments": to_translate}
    extra: dict[str, Any] = {"said_in_english": len(as_said)}
    records: list[dict[str, Any]] = []
    if as_said and not passthrough:
        ctx.log.info("%d segments said in English go into the English track as said", len(as_said))
    if passthrough:
        ctx.log.info("source language %s is already English: the transcript passes through", source)
        segments = passthrough_segments(as_said)
    elif settings.backend == "none" or not rest["segments"]:
        ctx.log.info("no translation: %s", "backend none" if settings.backend == "none" else "nothing to translate")
        segments = []
    elif settings.backend == "whisper":
        spans = [(float(s["start"]), float(s["end"])) for s in as_said]
        segments, found, records = whisper_translate(
            ctx, settings, rest, glossary["prompt_terms"], demux, silero_vad, spans
        )
        extra |= found
    else:
        segments, found = nmt_translate(ctx, settings, rest, glossary)
        extra |= found
    if not passthrough and settings.backend != "none":
        segments = in_time_order(segments + passthrough_segments(as_said))
    ctx.write(
        Translation(
            backend=settings.backend,
            source_language=source,
            target_language=TARGET,
            passthrough=passthrough,
            segments=[TranslatedSegment.model_validate(s) for s in segments],
            records=[GuardRecord.model_validate(r) for r in records],
        )
    )
    ctx.progress(1.0, "done")
    return {
        "backend": settings.backend,
        "source_language": source,
        "passthrough": passthrough,
        "segments": len(segments),
        "device": ctx.device.device,
        "seconds": round(time.monotonic() - started, 1),
    } | extra
