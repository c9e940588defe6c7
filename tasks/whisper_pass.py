"""One Whisper pass over the speech regions, shared by asr (transcribe) and second_pass_translation
(translate): resolve the model, merge regions into windows, build the prompt, load, decode in
batches (with temperature fallback and re-decoding of skipped speech), then apply the guards.

What differs between the two stages is only the request and which language to decode in,
which `choose_language` answers once the model is loaded (asr detects or checks it, the
translate pass insists on a multilingual model).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hardware.policy import StageDevice
from settings.stages import WhisperDecoding
from tasks.asr_guards import GuardSettings, Record, apply_guards, normalise, recites, record, repeated_across
from tasks.devanagari import latin_share
from tasks.memory import loaded
from tasks.name_check import name_forms
from tasks.phonetics import espeak_available
from tasks.whisper_models import (
    NAMES_INTRO,
    RETRY_TEMPERATURES,
    Audio,
    Decoded,
    ModelChoice,
    Prompt,
    WhisperDecoder,
    cut_at_regions,
    cut_where_labels_change,
    held_seconds,
    join_words,
    load_whisper,
    model_prompt,
    resolve_model,
    spans_over,
    speech_audio,
    speech_chunks,
    uncovered_speech,
    word_spans,
)

# (loaded model, the speech of the first windows) -> (language to decode in, its probability)
LanguageChoice = Callable[[Any, np.ndarray], tuple[str, float | None]]


@dataclass(frozen=True)
class PassRequest:
    model: str  # a model setting value (ASR__MODEL, ...)
    setting: str  # its name, for messages
    task: Literal["transcribe", "translate"]
    language: str | None  # the language the model is loaded for; None to detect
    decoding: WhisperDecoding
    terms: list[str] = field(default_factory=list)  # glossary names for the prompt
    prompt_budget: int = 160
    initial_prompt: str = ""
    hotword_share: float = 0.0
    names_intro: str = NAMES_INTRO  # in the language of the pass: a Latin intro pulls Hindi towards Latin letters
    # Drop a sentence repeated over neighbouring segments (a translate pass's loop; a transcript's chorus is real).
    drop_repeats_across: bool = False
    # A check of the pass's own: why a kept segment is wrong though it passed the guards (a translation that
    # only romanises its source), or None when it is right.
    check: Callable[[Decoded], str | None] | None = None


@dataclass
class PassResult:
    choice: ModelChoice
    prompt: Prompt
    language: str
    language_probability: float | None
    kept: list[Decoded]
    filtered: list[Record]
    windows: int
    redecoded: int
    compute_type: str
    batch_size: int
    load_s: float = 0.0  # loading the model: WhisperX's own "transcription" figure begins after it


def checks_names(decoding: WhisperDecoding, language: str, task: str) -> bool:
    """The name check runs where it is on and the pass writes English (transcribed, or translated into it):
    the names it knows are spelt in Latin letters."""
    return decoding.name_check and (task == "translate" or language == "en")


def guarded(decoded: list[Decoded], speech: list[dict[str, float]], cfg: GuardSettings,
            log: logging.Logger) -> tuple[list[Decoded], list[Record]]:  # fmt: skip
    """The segments that pass the guards, and a record of every drop or change (logged with its reason)."""
    kept, records = [], []
    for seg in sorted(decoded, key=lambda s: s.start):
        passed, found = apply_guards(seg, speech, cfg)
        records.extend(found)
        if passed is not None:
            kept.append(passed)
    for rec in records:
        log.info("guard %s %s [%.2f-%.2f]: %r", rec["action"], rec["reason"], rec["start"], rec["end"], rec["text"])
    return kept, records


# A Latin-letter text is English when at least this share of its words (names aside) are common English words
# (wordfreq Zipf frequency 3 or more: a few times per million words). On the Hindi sample the reference
# translations score 0.86 to 1.0, the base model's romanised Hindi 0.2 to 0.44.
ENGLISH_WORDS = 0.6
COMMON_ZIPF = 3.0


def name_words(names: Iterable[str]) -> set[str]:
    from wordfreq import tokenize

    return {w for name in names for w in tokenize(name, "en")}


def english_share(text: str, names: set[str]) -> float:
    """The share of the words of `text` that are common English words or words of the film's names
    (`name_words`)."""
    from wordfreq import tokenize, zipf_frequency

    words = tokenize(text, "en")
    known = sum(w in names or zipf_frequency(w, "en") >= COMMON_ZIPF for w in words)
    return known / len(words) if words else 1.0


def english_check(terms: list[str], failure: str, latin_only: bool = False) -> Callable[[Decoded], str | None]:
    """A pass's check that its Latin-letter text is English. A small model often writes the Hindi it hears in
    Latin letters, fluent and confident text that no guard sees: instead of translating it (the translate
    pass), or instead of Devanagari (the Hindi pass, where `latin_only` leaves the Devanagari text alone)."""
    names = name_words(terms)

    def check(seg: Decoded) -> str | None:
        if latin_only and latin_share(seg.text) < 0.5:
            return None
        share = english_share(seg.text, names)
        return f"{failure} ({share:.0%} English words)" if share < ENGLISH_WORDS else None

    return check


def retry_prompt(request: PassRequest) -> dict[str, Any]:
    """The prompt without the names: only its script-setting part."""
    return {"initial_prompt": request.initial_prompt or None, "hotwords": None}


def lone_options(decoder: WhisperDecoder) -> dict[str, Any]:
    """How a lone retry decodes: no names in the prompt, temperature fallback (a name list can make Whisper
    recite instead of listen)."""
    return decoder.options() | decoder.unprompted | {"temperature": RETRY_TEMPERATURES}


def rechecked(decoder: WhisperDecoder, audio: Audio, speech: list[dict[str, float]], kept: list[Decoded],
              request: PassRequest, cfg: GuardSettings,
              log: logging.Logger) -> tuple[list[Decoded], list[Record]]:  # fmt: skip
    """The kept segments with those the request's check rejects decoded again on their own (prompt off,
    temperature fallback); a segment still rejected after that stays, flagged, so no line is lost."""
    assert request.check is not None
    options = lone_options(decoder)
    out: list[Decoded] = []
    records: list[Record] = []
    for number, seg in enumerate(kept):
        reason = request.check(seg)
        if reason is None:
            out.append(seg)
            continue
        again, _ = guarded(decoder.decode_alone(audio, {"start": seg.start, "end": seg.end}, 20_000 + number,
                                                options), speech, cfg, log)  # fmt: skip
        again, _ = confident(again, cfg, log)
        fixed = bool(again) and all(request.check(s) is None for s in again)
        out += again if fixed else [seg]
        text = " ".join(s.text for s in again) if fixed else seg.text
        log.info("%s [%.2f-%.2f] %r: decoded again on its own: %s", reason, seg.start, seg.end, seg.text,
                 repr(text) if fixed else "no better; kept and flagged")  # fmt: skip
        action = "redecoded" if fixed else "flagged"
        records.append({"start": seg.start, "end": seg.end, "text": text, "action": action, "reason": reason})
    return out, records


RETRY_MARGIN = 0.5  # a retried segment is kept down to this much under Whisper's log-probability threshold,
RETRY_FLOOR = 1.5  # kept and flagged down to this much under it, and dropped below


def confident(decoded: list[Decoded], cfg: GuardSettings, log: logging.Logger) -> tuple[list[Decoded], list[Record]]:
    """The retried segments, those Whisper is unsure of flagged, and those it is far from sure of dropped.

    A retry is speculative; at the higher temperatures of the fallback its text can be nonsense that no guard
    sees. Whisper's own threshold (-1.0) alone would drop real lines: on the Hindi sample base's retries of
    real speech score -1.06 to -1.7, and its worst garble -2.3 to -3.2. So a retry is kept down to
    RETRY_MARGIN under the threshold, kept and flagged (listed in the QC report) down to RETRY_FLOOR under it,
    and dropped below that.
    """
    kept, records = [], []
    for seg in decoded:
        if seg.avg_logprob < cfg.log_prob_threshold - RETRY_FLOOR:
            log.info("retry dropped [%.2f-%.2f] (log-probability %.2f): %r", seg.start, seg.end, seg.avg_logprob,
                     seg.text)  # fmt: skip
            records.append(record(seg, f"retry nonsense (log-probability {seg.avg_logprob:.2f})", "dropped"))
            continue
        kept.append(seg)
        if seg.avg_logprob < cfg.log_prob_threshold - RETRY_MARGIN:
            records.append(record(seg, f"retry unsure (log-probability {seg.avg_logprob:.2f})", "flagged"))
    return kept, records


REPEAT_NEAR_S = 2.0  # a retried word this close to a kept word of the same text says it again
MIN_FRESH_WORDS = 2  # a shorter run left between repeated words is an echo of them, not a lost line


def _plain(word: dict[str, Any]) -> str:
    return re.sub(r"[^\w']+", "", str(word["word"]).lower())


def said_words(segments: list[Decoded]) -> list[tuple[float, str]]:
    """Each word of the segments as (midpoint, plain text): what `repeated_words` compares a retry with."""
    return [((float(w["start"]) + float(w["end"])) / 2, _plain(w)) for s in segments for w in s.words]


def repeated_words(seg: Decoded, spans: list[tuple[float, float]], said: list[tuple[float, str]]) -> list[bool]:
    """For each word of a retried segment, whether a kept word already says it: one timed where it is
    (`spans`, stretched words left out) or one of the same text close by (`said`, from `said_words`)."""
    out = []
    for mid, text in said_words([seg]):
        held = any(a <= mid <= b for a, b in spans_over(mid, mid, spans))
        out.append(held or any(abs(m - mid) <= REPEAT_NEAR_S and t == text for m, t in said))
    return out


def pieces_unsaid(seg: Decoded, repeats: list[bool]) -> list[Decoded]:
    """The runs of the segment's words that are not repeats (`repeated_words`), each a segment of its own."""
    pieces = cut_where_labels_change(seg, repeats)
    return [piece for piece, (again, _) in zip(pieces, groupby(repeats), strict=True) if not again]


def new_speech(found: list[Decoded], kept: list[Decoded]) -> tuple[list[Decoded], list[Record]]:
    """The retried segments that say something the kept ones do not, or the parts of them that do.

    A retried segment that kept words hold more than half of (by their times, `word_spans`, so a kept
    segment stretched over speech it left out does not stand for that speech) repeats a kept line. But
    a retry window spans whatever kept speech lies between its regions, so such a segment can hold a
    lost line too ("Arjun, tell Zoya the truth before it is too late. I told Zoya that we would meet at
    the old temple.", where only the second was kept): its runs of at least MIN_FRESH_WORDS words that
    repeat no kept word (`repeated_words`) are kept.
    """
    spans, plain = word_spans(kept), word_spans(kept, stretched=False)
    said = said_words(kept)
    out, records = [], []
    for seg in found:
        if held_seconds(seg.start, seg.end, spans) <= 0.5 * max(seg.end - seg.start, 1e-3):
            out.append(seg)
            continue
        fresh: list[Decoded] = []
        if seg.words:
            unsaid = pieces_unsaid(seg, repeated_words(seg, plain, said))
            fresh = [piece for piece in unsaid if len(piece.words) >= MIN_FRESH_WORDS]
        if not fresh:
            records.append(record(seg, "retry repeats a kept segment", "dropped"))
            continue
        out += fresh
        kept_text = " / ".join(piece.text for piece in fresh)
        records.append(record(seg, f"retry repeats a kept segment in part: kept {kept_text!r}", "changed"))
    return out, records


def making_room(kept: list[Decoded], retried: list[Decoded]) -> list[Decoded]:
    """The kept segments cut around the retried ones that lie inside them, so no two segments overlap: a
    word stretched over a retried segment ends where it starts (or starts where it ends), and a kept word
    timed wholly inside a retried segment, or inside two that meet, goes (the retry says that stretch again:
    a zero-length "I" Whisper put before the stretched "told" of the line after it; an "a" across the
    boundary of two retried segments, which had become a zero-length event of its own)."""
    if not retried:
        return kept
    out: list[Decoded] = []
    for seg in kept:
        inside = [r for r in retried if r.start < seg.end and r.end > seg.start]
        if not inside or not seg.words:
            out.append(seg)
            continue
        words, labels = [], []
        for w in seg.words:
            start, end = float(w["start"]), float(w["end"])
            if any(r.start <= start and end <= r.end for r in inside):
                continue
            for r in inside:
                if start < r.start < end:
                    end = max(start, r.start)
                elif start < r.end < end or r.start <= start < r.end:
                    start = min(max(start, r.end), end)
            if end <= start and float(w["start"]) < float(w["end"]):  # retried segments that meet cover it all
                continue
            words.append(w | {"start": round(start, 3), "end": round(end, 3)})
            labels.append(sum(r.start < (start + end) / 2 for r in inside))  # how many retried segments before it
        if not words:
            continue
        if len(words) < len(seg.words):  # text and times from the words left
            seg = replace(seg, text=join_words(words), start=words[0]["start"], end=words[-1]["end"])
        out += cut_where_labels_change(replace(seg, words=words), labels)
    return out


def said_again(first: list[Decoded], alone: list[Decoded]) -> list[Decoded]:
    """The first retry's pieces less the words a lone retry over the same time says again (`repeated_words`).

    A region can be bare after the first retry although it holds a piece from it ("My grandfather grew up in",
    all the guard left of a recital of names on a fresh bench film); the lone retry then says the whole line,
    that piece included, and the piece kept as well would show it twice. Only words the lone retry says too
    go: a piece of another line that reaches into the region stays.
    """
    said = said_words(alone)
    out: list[Decoded] = []
    for seg in first:
        if seg.words and any(r.start < seg.end and r.end > seg.start for r in alone):
            out += pieces_unsaid(seg, repeated_words(seg, [], said))
        else:
            out.append(seg)
    return out


COLLAPSED_S = 0.02  # a word Whisper times shorter than this has no time of its own
COPY_SHARE = 0.6  # of a collapsed segment's words a retry near it must say for it to be a copy of that retry


def collapsed(seg: Decoded) -> bool:
    """Whether Whisper lost the segment's times: three words or more, most of them of no length (9 of 10 at
    41.86 s on a fresh bench film, whose speech was at 21.9 s)."""
    lengths = [float(w["end"]) - float(w["start"]) for w in seg.words]
    return len(lengths) >= 3 and sum(length < COLLAPSED_S for length in lengths) * 2 > len(lengths)


def misplaced_copies(kept: list[Decoded], retried: list[Decoded],
                     near_s: float) -> tuple[list[Decoded], list[Record]]:  # fmt: skip
    """The kept segments, less those Whisper put at the wrong time that a retry says again where they belong.

    A window's text can hold a line Whisper timed at the window's end, its words there of no length
    ("I am not angry. I am only a little tired." at 41.86 s; said at 21.9 s, whose region then held no
    words and was decoded again). Kept, the line shows twice, once 20 s late. So a collapsed segment
    (`collapsed`) goes when a retried segment within `near_s` (a window) says COPY_SHARE of its words.
    """
    if not retried:
        return kept, []
    out, records = [], []
    for seg in kept:
        if collapsed(seg):
            mine = [_plain(w) for w in seg.words]
            near = [r for r in retried if r.start < seg.end + near_s and r.end > seg.start - near_s]
            said = [_plain(w) for r in near for w in r.words]
            found = sum(min(mine.count(w), said.count(w)) for w in set(mine))
            if found >= COPY_SHARE * len(mine):
                records.append(record(seg, "misplaced copy of a line decoded again where it was said", "dropped"))
                continue
        out.append(seg)
    return out, records


def names_said(words: list[str], terms: list[list[str]]) -> int | None:
    """How many prompt terms the words are, one after another (longest first); None when any word is not one."""
    count, at = 0, 0
    while at < len(words):
        match = next((t for t in terms if words[at : at + len(t)] == t), None)
        if match is None:
            return None
        count, at = count + 1, at + len(match)
    return count


NAME_ALONE_S = 1.5  # seconds of speech one name said alone may take ("Farhan Khan." took 0.8 s)


def names_alone(found: list[Decoded], terms: Iterable[str]) -> tuple[list[Decoded], list[Record]]:
    """The retried pieces, less those that say nothing but two or more of the prompt's names, or one name over
    more speech than a name takes.

    A prompted retry can recite where it should listen: on a fresh bench film it wrote "Jodhpur, Jodhpur,"
    over "Keep your voice down, the baby is asleep.", and on another "Neha" over the 3 s of "Harsh laughed
    so hard that everyone turned to look." Kept, such a piece marks its region covered, so the unprompted
    retry that would hear the line never comes (and hears a name said alone again, if it was).
    """
    known = sorted((normalise(t).split() for t in terms), key=len, reverse=True)
    known = [t for t in known if t]
    out, records = [], []
    for seg in found:
        said = names_said(normalise(seg.text).split(), known) or 0
        if said >= 2 or (said == 1 and seg.end - seg.start > NAME_ALONE_S):
            records.append(record(seg, "retry said only names of the prompt", "dropped"))
            continue
        out.append(seg)
    return out, records


def decode_uncovered(decoder: WhisperDecoder, audio: Audio, speech: list[dict[str, float]], kept: list[Decoded],
                     cfg: GuardSettings, batch_size: int,
                     log: logging.Logger) -> tuple[list[Decoded], list[Record]]:  # fmt: skip
    """No speech left behind: each VAD region (over 0.5 s) that no kept word covers, and each stretch of a
    second or more inside a region that no kept word holds (`uncovered_speech`), is decoded again, and its
    words kept when they pass the guards and Whisper is sure of them. One mechanism, two tries:

    1. the bare regions in windows of their own, batched, with the pass's prompt: Whisper often ends a full
       window early and drops its last utterance, which it says when that utterance is alone (a piece that
       says only the prompt's names is a recital, not what was said: `names_alone`);
    2. what is still bare, each region on its own with temperature fallback and without the names in the
       prompt (a name list can make Whisper recite instead of listen; a loop a guard cut off is retried this
       way). Only the script-setting part of the prompt stays (Hindi's Devanagari sentence), since without
       it Hindi comes out in Latin letters.
    """
    missed = uncovered_speech(speech, kept, min_s=0.5)
    if not missed:
        return [], []
    # Windowed together, regions keep each other's context; their text is then cut back into the regions.
    windows = speech_chunks(missed, audio, decoder.chunk_s)
    first = [piece for seg in decoder.decode(audio, windows, batch_size) for piece in cut_at_regions(seg, missed)]
    found, records = guarded(first, speech, cfg, log)
    found, recited = names_alone(found, cfg.prompt_terms)
    for rec in recited:
        log.info("retry dropped [%.2f-%.2f], only names of the prompt: %r", rec["start"], rec["end"], rec["text"])
    found, unsure = confident(found, cfg, log)
    records += recited + unsure
    options = lone_options(decoder)
    alone: list[Decoded] = []
    for number, region in enumerate(uncovered_speech(missed, found, min_s=0.5, stretches=False)):
        again, dropped = guarded(decoder.decode_alone(audio, region, 10_000 + number, options), speech, cfg, log)
        again, unsure = confident(again, cfg, log)
        alone += again
        records += dropped + unsure
    found = said_again(found, alone) + alone
    found, repeats = new_speech(found, kept)
    records += repeats
    bare = {(r["start"], r["end"]) for r in uncovered_speech(missed, found, min_s=0.5, stretches=False)}
    for region in missed:
        text = " ".join(s.text for s in found if s.end > region["start"] and s.start < region["end"])
        done = (region["start"], region["end"]) not in bare
        log.info("speech [%.2f-%.2f] held no words after decoding; decoded again: %s", region["start"],
                 region["end"], repr(text) if done else "still no words")  # fmt: skip
        records.append({**region, "text": text, "action": "redecoded" if done else "uncovered",
                        "reason": "speech without words"})  # fmt: skip
    return sorted(found, key=lambda s: s.start), records


def whisper_pass(
    request: PassRequest,
    audio: Audio,
    speech: list[dict[str, float]],
    device: StageDevice,
    cache_root: Path,
    log: logging.Logger,
    progress: Callable[[float, str], None],
    choose_language: LanguageChoice,
) -> PassResult:
    """Decode the speech and guard the text; the model is released before this returns."""
    decoding = request.decoding
    compute_type = decoding.compute_type or device.compute_type
    batch_size = decoding.batch_size or device.batch_size
    choice = resolve_model(request.model, device.device, cache_root, request.setting, request.language)
    chunks = speech_chunks(speech, audio, decoding.chunk_s)
    prompt = model_prompt(
        choice.path,
        request.initial_prompt,
        request.terms,
        request.prompt_budget,
        request.setting,
        request.hotword_share,
        request.names_intro,
    )
    if choice.reason:
        log.info("%s", choice.reason)
    log.info(
        "Whisper %s on %s (compute %s, batch %d) with %s from %s; %d speech windows; prompt %d tokens, %d terms",
        request.task,
        device.device,
        compute_type,
        batch_size,
        choice.spec,
        choice.path,
        len(chunks),
        prompt.tokens,
        len(prompt.terms),
    )
    options = {
        "beam_size": decoding.beam_size,
        "initial_prompt": prompt.initial_prompt,
        "hotwords": prompt.hotwords,
        "no_speech_threshold": decoding.no_speech_threshold,
        "log_prob_threshold": decoding.log_prob_threshold,
        "compression_ratio_threshold": decoding.compression_ratio_threshold,
        "condition_on_previous_text": False,
    }
    cfg = GuardSettings(
        no_speech_threshold=decoding.no_speech_threshold,
        log_prob_threshold=decoding.log_prob_threshold,
        compression_ratio_threshold=decoding.compression_ratio_threshold,
        stock_phrases=tuple(decoding.stock_phrases),
        prompt_terms=prompt.terms,
        prompt=prompt.initial_prompt,
        prompt_intro=request.names_intro,
    )
    started = time.monotonic()
    with loaded(
        lambda: load_whisper(
            choice, device.device, compute_type, options, f"{request.setting.split('__')[0]}__COMPUTE_TYPE"
        )
    ) as held:
        whisper = held[0]
        load_s = time.monotonic() - started
        log.info("Whisper loaded in %.2f s", load_s)
        language, probability = choose_language(whisper, speech_audio(audio, chunks))
        decoder = WhisperDecoder(
            whisper,
            language,
            request.task,
            decoding.chunk_s,
            prompt.tokens,
            retry_prompt(request),
            lambda decoded: recites(decoded, list(prompt.terms)),
            names=name_forms(list(prompt.terms)) if checks_names(decoding, language, request.task) else [],
        )

        if decoder.names and not espeak_available():
            log.warning("espeak-ng is not installed: the name check compares spelling only, not sound; install "
                        "it with `bash scripts/setup.sh` (or `apt-get install espeak-ng`)")  # fmt: skip

        def on_batch(done: int, total: int) -> None:
            progress(0.85 * done / total, f"decoded {done}/{total} windows")

        decoded = decoder.decode(audio, chunks, batch_size, on_batch)
        log.info(
            "decoded %d windows in %.1f s (%d failed Whisper's checks and were decoded again)",
            len(chunks),
            time.monotonic() - started,
            decoder.redecoded,
        )
        kept, filtered = guarded(decoded, speech, cfg, log)
        if request.drop_repeats_across:
            kept, repeats = repeated_across(kept)
            for rec in repeats:
                log.info("guard dropped %s [%.2f-%.2f]: %r", rec["reason"], rec["start"], rec["end"], rec["text"])
            filtered += repeats
        retried, records = decode_uncovered(decoder, audio, speech, kept, cfg, batch_size, log)
        kept, copies = misplaced_copies(kept, retried, decoding.chunk_s)
        for rec in copies:
            log.info("dropped %s [%.2f-%.2f]: %r", rec["reason"], rec["start"], rec["end"], rec["text"])
        kept = sorted(making_room(kept, retried) + retried, key=lambda s: s.start)
        filtered += records + copies
        if request.check is not None:
            kept, records = rechecked(decoder, audio, speech, kept, request, cfg, log)
            filtered += records
        if decoder.names:
            cost = decoder.name_checks
            log.info("name check: %d sentences read again (%d texts scored) in %.1f s, %d names respelt",
                     cost.sentences, cost.texts, cost.seconds, len(decoder.respellings))  # fmt: skip
        for rec in decoder.respellings:
            log.info("%s [%.2f-%.2f]: %r -> %r", rec["reason"], rec["start"], rec["end"], rec["text"], rec["after"])
        filtered = decoder.respellings + filtered
        redecoded = decoder.redecoded + sum(r["action"] == "redecoded" for r in filtered)
        del whisper, decoder
    return PassResult(
        choice=choice,
        prompt=prompt,
        language=language,
        language_probability=probability,
        kept=kept,
        filtered=filtered,
        windows=len(chunks),
        redecoded=redecoded,
        compute_type=compute_type,
        batch_size=batch_size,
        load_s=round(load_s, 2),
    )
