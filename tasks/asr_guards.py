"""Hallucination guards on decoded Whisper segments: each a plain function, each change recorded.

Whisper invents text where there is none (silence, music), loops on a phrase, ends a clip
with "thanks for watching", and, given hotwords, may recite the hotword list at the end of
the audio. Every guard takes a segment and returns it (possibly changed) or None (dropped),
with a record `{"start","end","text","reason","action"}` (and `"after"` for a change) for
the asr stage's decode report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import regex
from rapidfuzz import fuzz

from tasks.subtitle_layout import SENTENCE_END
from tasks.whisper_models import Decoded

Record = dict[str, Any]
_NOT_WORD = regex.compile(r"[^\p{L}\p{M}\p{N}\s]+")
_SENTENCE_END = regex.compile(r"(?<=[.!?।])\s+")


def normalise(text: str) -> str:
    """Lower case, punctuation removed (Devanagari vowel signs kept), single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.lower().replace("'", "").replace("’", "")).split())


def record(seg: Decoded, reason: str, action: str, after: Decoded | None = None) -> Record:
    out: Record = {"start": seg.start, "end": seg.end, "text": seg.text, "reason": reason, "action": action}
    if after is not None:
        out["after"] = after.text
    return out


# Tokens: the segment's words when it has them, else its text split at spaces ------------------


def tokens_of(seg: Decoded) -> list[str]:
    if seg.words:
        return [w["word"] for w in seg.words]
    return [" " + t for t in seg.text.split()]


def with_tokens(seg: Decoded, keep: list[int], replaced: dict[int, str] | None = None) -> Decoded:
    """The segment keeping only the tokens at `keep` (some with new text); times follow the words."""
    replaced = replaced or {}
    if seg.words:
        words = [dict(seg.words[i], word=replaced.get(i, seg.words[i]["word"])) for i in keep]
        text = "".join(w["word"] for w in words).strip()
        if not words:
            return replace(seg, words=[], text="")
        start = seg.start if keep[0] == 0 else words[0]["start"]
        end = seg.end if keep[-1] == len(seg.words) - 1 else words[-1]["end"]
        return replace(seg, words=words, text=text, start=start, end=max(start, end))
    toks = tokens_of(seg)
    return replace(seg, text="".join(replaced.get(i, toks[i]) for i in keep).strip())


# Silence ------------------------------------------------------------------------------


def overlap(start: float, end: float, regions: list[dict[str, float]]) -> float:
    return sum(max(0.0, min(end, r["end"]) - max(start, r["start"])) for r in regions)


def distance(start: float, end: float, regions: list[dict[str, float]]) -> float:
    """Seconds from [start, end] to the nearest region (0 when they touch)."""
    if not regions:
        return float("inf")
    return min(max(0.0, r["start"] - end, start - r["end"]) for r in regions)


def speech_fraction(seg: Decoded, speech: list[dict[str, float]]) -> float:
    duration = seg.end - seg.start
    if duration <= 0:
        return 1.0 if distance(seg.start, seg.end, speech) == 0 else 0.0
    return overlap(seg.start, seg.end, speech) / duration


def guard_silence(
    seg: Decoded, speech: list[dict[str, float]], min_fraction: float = 0.2, word_margin_s: float = 0.5
) -> tuple[Decoded | None, Record | None]:
    """Drop a segment lying mostly where the VAD heard no speech; drop words far inside silence."""
    if speech_fraction(seg, speech) < min_fraction:
        return None, record(seg, "silent_region", "dropped")
    if seg.words:
        keep = [i for i, w in enumerate(seg.words) if distance(w["start"], w["end"], speech) <= word_margin_s]
        if not keep:
            return None, record(seg, "silent_region", "dropped")
        if len(keep) < len(seg.words):
            changed = with_tokens(seg, keep)
            return changed, record(seg, "words_in_silence", "changed", changed)
    return seg, None


# Whisper's thresholds -----------------------------------------------------------------


def guard_no_speech(
    seg: Decoded, no_speech_threshold: float, log_prob_threshold: float
) -> tuple[Decoded | None, Record | None]:
    """Whisper's silence rule: likely no speech and low confidence together."""
    if seg.no_speech_prob > no_speech_threshold and seg.avg_logprob < log_prob_threshold:
        return None, record(seg, "no_speech", "dropped")
    return seg, None


def compression_ratio(text: str) -> float:
    from faster_whisper.transcribe import get_compression_ratio

    return get_compression_ratio(text) if text else 0.0


def guard_compression(seg: Decoded, threshold: float) -> tuple[Decoded | None, Record | None]:
    """Text that compresses too well is a loop Whisper could not escape (measured after collapsing repeats)."""
    if compression_ratio(seg.text) > threshold:
        return None, record(seg, "compression_ratio", "dropped")
    return seg, None


# Repeats ------------------------------------------------------------------------------


def repeat_spans(words: list[str], min_repeats: int = 3, max_ngram: int = 8) -> list[tuple[int, int, int]]:
    """(start, size, repeats) for each phrase of `size` words said `repeats` >= min_repeats times in a row."""
    spans, i, n = [], 0, len(words)
    while i < n:
        best: tuple[int, int] | None = None  # (size, repeats)
        for size in range(1, min(max_ngram, (n - i) // min_repeats) + 1):
            phrase = words[i : i + size]
            if not any(phrase):
                continue
            reps = 1
            while words[i + reps * size : i + (reps + 1) * size] == phrase:
                reps += 1
            if reps >= min_repeats and (best is None or reps * size > best[0] * best[1]):
                best = (size, reps)
        if best:
            spans.append((i, best[0], best[1]))
            i += best[0] * best[1]
        else:
            i += 1
    return spans


def guard_repeats(seg: Decoded, min_repeats: int = 3) -> tuple[Decoded | None, Record | None]:
    """A phrase repeated three or more times in a row is kept once."""
    toks = tokens_of(seg)
    spans = repeat_spans([normalise(t) for t in toks], min_repeats)
    if not spans:
        return seg, None
    drop = {j for start, size, reps in spans for j in range(start + size, start + size * reps)}
    changed = with_tokens(seg, [i for i in range(len(toks)) if i not in drop])
    return changed, record(seg, "repeated_phrase", "changed", changed)


# Prompt echo ----------------------------------------------------------------------------


def echo_start(toks: list[str], terms: list[str]) -> tuple[int, str | None] | None:
    """Where a trailing recital of prompt terms begins, or None.

    A recital is a comma-separated run of at least three prompt terms, or two that follow
    each other in the prompt list (its last word may be cut off). The first may be glued to the last real word
    ("ChandigarhVikramaditya,"): then (index of that token, its text without the term).
    """
    term_words = {w for t in terms for w in normalise(t).split()}
    order = [normalise(t) for t in terms]
    norm = [normalise(t) for t in toks]
    r = len(toks)
    if r and norm[-1] and norm[-1] not in term_words and any(w.startswith(norm[-1]) for w in term_words):
        r -= 1  # a recital cut off mid-word by the token limit ("..., Shubhankar, J")
    while r > 0 and norm[r - 1] and all(w in term_words for w in norm[r - 1].split()):
        r -= 1
    glued: str | None = None
    glued_term: str | None = None
    if r > 0 and norm[r - 1]:
        for term in sorted(order, key=len, reverse=True):
            squashed, word = term.replace(" ", ""), norm[r - 1].replace(" ", "")
            if squashed and word.endswith(squashed) and word != squashed:
                glued_term = term
                raw = toks[r - 1]
                cut = _find_suffix(raw, squashed)
                glued = raw[:cut] if cut is not None else None
                break
    items = _items(toks[r:], norm[r:])
    if glued_term is not None and glued is not None:
        items = [glued_term] + items
    if len(items) >= 3 or (len(items) == 2 and _consecutive(items, order)):
        if glued_term is not None and glued is not None:
            return r - 1, glued
        return r, None
    return None


def inner_recital(toks: list[str], terms: list[str]) -> range | None:
    """The tokens of a recital inside the text to cut (all of its names but the first), or None.

    Inside a text, a list of names can be real ("I invited Zoya, Kabir, Meera and Veer"), so only a run that
    says a prompt name again after another name is taken for a recital: at least three one-word items, each
    ending with a comma, in which a prompt name comes back after a different item ("and Nandini, Neha,
    Nandini, Ransas, the phone" for "Nandini never answers the phone" on a fresh bench film; "Arjun, Meer,
    Stone, Arjun, Leem," for "Arjun, the bus to Darjeeling" on the 10-minute one). The run's last item may
    end its sentence instead ("from Diya, Ninhashi, Kunal, Diya." for "from the hills in Nashik is
    beautiful." on another fresh film). A name called twice in a row ("Raj, Raj, wake up") is no recital.
    The run's first item is kept: it is where the recital began, mostly on a name that was said.
    """
    term_words = {w for t in terms for w in normalise(t).split()}
    norm = [normalise(t) for t in toks]
    i = 0
    while i < len(toks):
        j = i
        while j < len(toks) and toks[j].rstrip().endswith(",") and len(norm[j].split()) == 1:
            j += 1
        end = j + 1 if j < len(toks) and j > i and sentence_ending(toks[j]) and len(norm[j].split()) == 1 else j
        items = norm[i:end]
        if len(items) >= 3 and any(
            items[a] in term_words and items[a] in items[a + 2 :] and items[a + 1] != items[a]
            for a in range(len(items))
        ):
            return range(i + 1, end)
        i = max(j, i + 1)
    return None


def sentence_ending(token: str) -> str:
    """The punctuation that ends a sentence at the end of a token (subtitle layout's `SENTENCE_END`: "Diya."
    -> ".", 'go?"' -> '?"'), or ""."""
    found = SENTENCE_END.search(token.rstrip())
    return found.group(0) if found else ""


def recites(segments: list[Decoded], terms: list[str]) -> bool:
    """Whether a recital of prompt terms (as `echo_start` finds one) ends anywhere in the text, not only at
    its end: a window Whisper began by reciting the names ("Simran, Amritsar, Imrits. I know, Raj, ...")."""
    if not terms:
        return False
    for seg in segments:
        toks = tokens_of(seg)
        if any(echo_start(toks[:end], terms) is not None for end in range(2, len(toks) + 1)):
            return True
    return False


def _find_suffix(raw: str, squashed: str) -> int | None:
    """Index in raw where the letters of `squashed` begin, matching from the end (case and punctuation ignored)."""
    letters = [(i, ch.lower()) for i, ch in enumerate(raw) if not _NOT_WORD.match(ch) and not ch.isspace()]
    if len(letters) < len(squashed):
        return None
    tail = letters[len(letters) - len(squashed) :]
    if "".join(ch for _, ch in tail) != squashed:
        return None
    return tail[0][0]


def _items(toks: list[str], norm: list[str]) -> list[str]:
    """Comma-separated items of a run of tokens, normalised."""
    items, current = [], []
    for raw, word in zip(toks, norm, strict=True):
        current.append(word)
        if raw.rstrip().endswith((",", "،", "、", ";")):
            items.append(" ".join(current))
            current = []
    if current:
        items.append(" ".join(current))
    return items


def _consecutive(items: list[str], order: list[str]) -> bool:
    try:
        return order.index(items[1]) == order.index(items[0]) + 1
    except ValueError:
        return False


def intro_start(toks: list[str], intro: str) -> int | None:
    """The token where the prompt's intro ("Names in this film") begins, or None."""
    wanted = normalise(intro).split()
    norm = [normalise(t) for t in toks]
    for i in range(len(norm)):
        joined = " ".join(w for w in norm[i : i + len(wanted) + 2] if w).split()
        if joined[: len(wanted)] == wanted:
            return i
    return None


def echoed_share(text: str, prompt: str) -> float:
    """The share of the words of `text` in sentences (two words or more) that repeat a sentence of the prompt,
    when at least two do: one alone may be a line of the film ("आप कैसे हैं?" is said in films too)."""
    said = [normalise(x) for x in _SENTENCE_END.split(text) if normalise(x)]
    given = [normalise(x) for x in _SENTENCE_END.split(prompt) if len(normalise(x).split()) >= 2]
    echoes = [x for x in said if len(x.split()) >= 2 and any(fuzz.partial_ratio(x, g) >= 90 for g in given)]
    total = sum(len(x.split()) for x in said)
    return sum(len(x.split()) for x in echoes) / total if total and len(echoes) >= 2 else 0.0


def guard_prompt_echo(
    seg: Decoded, terms: list[str], prompt: str | None, intro: str | None = None
) -> tuple[Decoded | None, Record | None]:
    """Drop a segment that is the prompt or hotword list recited; cut such a recital off a segment's end, and
    out of its middle where a name comes back (`inner_recital`)."""
    text = normalise(seg.text)
    if not text:
        return seg, None
    if prompt and len(text.split()) >= 3 and fuzz.ratio(text, normalise(prompt)) >= 90:
        return None, record(seg, "prompt_echo", "dropped")
    if prompt and echoed_share(seg.text, prompt) >= 0.5:  # the prompt's sentences said again ("आप कैसे हैं?")
        return None, record(seg, "prompt_echo", "dropped")
    at = intro_start(tokens_of(seg), intro) if intro else None
    if at is not None:  # "... Names in this film, ...": the prompt's own words, and whatever follows them
        if at == 0:
            return None, record(seg, "prompt_echo", "dropped")
        changed = with_tokens(seg, list(range(at)))
        return changed, record(seg, "prompt_echo", "changed", changed)
    if not terms:
        return seg, None
    toks = tokens_of(seg)
    found = echo_start(toks, terms)
    changed = seg
    if found is not None:
        cut, glued = found
        if glued is not None and normalise(glued):
            changed = with_tokens(seg, list(range(cut + 1)), {cut: glued})
        else:
            changed = with_tokens(seg, list(range(cut)))
    left = tokens_of(changed)
    inner = inner_recital(left, terms)
    if inner is not None:
        first, ending = inner.start - 1, sentence_ending(left[inner.stop - 1])
        # the recital's first item, kept, ends the sentence where the recital did
        ended = {first: left[first].rstrip().rstrip(",") + ending} if ending else None
        changed = with_tokens(changed, [i for i in range(len(left)) if i not in inner], ended)
    if changed is seg:
        return seg, None
    if not normalise(changed.text):
        return None, record(seg, "prompt_echo", "dropped")
    return changed, record(seg, "prompt_echo", "changed", changed)


# Stock phrases ----------------------------------------------------------------------------


def weak_evidence(
    seg: Decoded, speech: list[dict[str, float]], no_speech_threshold: float, log_prob_threshold: float
) -> bool:
    """The audio barely supports the text: low confidence, likely no speech, or little VAD speech under it."""
    return (
        seg.avg_logprob < log_prob_threshold
        or seg.no_speech_prob > no_speech_threshold / 2
        or speech_fraction(seg, speech) < 0.5
    )


def guard_stock_phrase(seg: Decoded, phrases: list[str], weak: bool) -> tuple[Decoded | None, Record | None]:
    """Drop "thanks for watching", "subscribe"... when the audio evidence for the segment is weak."""
    if not weak:
        return seg, None
    text = f" {normalise(seg.text)} "
    for phrase in phrases:
        if f" {normalise(phrase)} " in text:
            return None, record(seg, f"stock_phrase: {phrase}", "dropped")
    return seg, None


# All of them ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardSettings:
    no_speech_threshold: float
    log_prob_threshold: float
    compression_ratio_threshold: float
    stock_phrases: tuple[str, ...] = ()
    prompt_terms: tuple[str, ...] = ()
    prompt: str | None = None
    prompt_intro: str | None = None  # the words before the names in the prompt


def apply_guards(
    seg: Decoded, speech: list[dict[str, float]], cfg: GuardSettings
) -> tuple[Decoded | None, list[Record]]:
    """All guards in order: silence, no-speech, prompt echo, repeats, compression ratio, stock phrases."""
    records: list[Record] = []
    steps = (
        lambda s: guard_silence(s, speech),
        lambda s: guard_no_speech(s, cfg.no_speech_threshold, cfg.log_prob_threshold),
        lambda s: guard_prompt_echo(s, list(cfg.prompt_terms), cfg.prompt, cfg.prompt_intro),
        guard_repeats,
        lambda s: guard_compression(s, cfg.compression_ratio_threshold),
        lambda s: guard_stock_phrase(
            s, list(cfg.stock_phrases), weak_evidence(s, speech, cfg.no_speech_threshold, cfg.log_prob_threshold)
        ),
    )
    current = seg
    for step in steps:
        if not normalise(current.text):
            records.append(record(current, "empty", "dropped"))
            return None, records
        guarded, rec = step(current)
        if rec is not None:
            records.append(rec)
        if guarded is None:
            return None, records
        current = guarded
    return current, records


def repeated_across(segments: list[Decoded], window: int = 2) -> tuple[list[Decoded], list[Record]]:
    """Segments whose every sentence one of the `window` segments before already said: dropped.

    The translate pass of a small model loops this way (one invented sentence over several
    windows). Not for transcripts: a song's chorus is really sung again.
    """
    kept: list[Decoded] = []
    records: list[Record] = []
    for seg in segments:
        sentences = {normalise(s) for s in _SENTENCE_END.split(seg.text)} - {""}
        earlier = {normalise(s) for before in kept[-window:] for s in _SENTENCE_END.split(before.text)}
        if sentences and sentences <= earlier:
            records.append(record(seg, "repeated_across_segments", "dropped"))
            continue
        kept.append(seg)
    return kept, records
