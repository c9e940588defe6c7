"""Names Whisper misheard, put right by Whisper itself listening again.

A run of up to two words that Whisper was unsure of and that is spelt like a glossary name
("Noya" for Zoya, "my song" for Mysore, "Androha" for Rohan), or that sounds like one (espeak-ng's phonemes,
`tasks.phonetics`: "origin" for Arjun, "Bruna" for Pune), is a candidate; so is a made-up word that
starts with an English word, as that word and the name ("tellish on" for "tell Ishaan"). Whisper then reads
the segment's audio twice with the pass's prompt, forced through its own text and through the
text with the name in place of the run (`WhisperDecoder` scores both from the encoder output it
already has), and the name goes in when that text is at most `BONUS_NATS` less likely (`SOUND_BONUS_NATS`
for English words that only sound like the name).

Why a bonus and not "the likelier text wins": the names are what the film is known to contain, so
a small loss of likelihood is worth a name, the way contextual biasing weights a known list. On the
bench films (tiny.en), the true corrections scored from -2.0 to +4.2 nats against the decoded text;
a word turned into a name that was not said scored -3.0 (a misheard name taken for another name)
and mostly -10 to -25. Spelling alone cannot tell these apart ("Moira" is as close to Meera as to
Zoya, which was said), and post_ner, which has only the text, keeps refusing such distant matches.

The plain functions here choose candidates and apply the winners; `WhisperDecoder.check_names`
does the listening.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz

from tasks.glossary import is_ordinary_word, is_stop_word, romanisation_key
from tasks.phonetics import sound_likeness
from tasks.subtitle_layout import SENTENCE_END

UNSURE = 0.5  # a word below this probability is one Whisper was unsure of
# ... and a word that is no English word ("tellish", "Natarjan") below this one: Whisper making up a word where
# the film has a name it does not know (0.51-0.59 on the 30-minute bench film) is unsure too.
UNSURE_MADE_UP = 0.75
MIN_LEAD = 3  # letters of an English word a made-up word may start with ("tell" of "tellish on": tell Ishaan)
LEAD_SIMILARITY = 70.0  # what is left after the lead must look much like the name ("Shingla" is not Shin Shimla)
_CLITIC = re.compile(r"(?:n't|'s|'m|'re|'ve|'ll|'d)$", re.IGNORECASE)
BONUS_NATS = 3.0  # how much less likely the text with the name may be and still win
AMBIGUOUS_NATS = 1.0  # two names within this of each other for the same words: neither
# ... and a name spelt much less like the words than another (by LIKENESS_MARGIN of 100) must beat it by more:
# "Maranasi" scored 1.9 nats likelier as Madurai than as Varanasi, which was said (a fresh bench film).
LIKENESS_MARGIN = 15.0
SPELLING_NATS = 3.0
MAX_WORDS = 2  # "my song" for Mysore: a name heard as two words
# Letters (of the romanisation key) the words may have per letter of the name: "The teacher" is not Tara
# (Whisper scored that 2.1-2.7 nats down on the 10- and 30-minute bench films, inside the bonus).
MAX_LENGTH_RATIO = 1.75
MIN_SIMILARITY = 50.0  # rapidfuzz ratio of the romanisation keys, 0-100
ORDINARY_SIMILARITY = 70.0  # a single ordinary English word must look much more like it ("teacher" is not Tara)
# Words spelt unlike the name that sound like it (coarse sounds, `tasks.phonetics`, 0-100): "origin" for Arjun
# (73), "Bruna" for Pune. Under 65 come runs with a common word ("the song" and Arjun 60, "the letter" and
# Tara 55); function words alone ("for the" and Tara, 67) never count.
SOUND_SIMILARITY = 65.0
# English words that only sound like a name must be nearly as likely with it: "my mother" scored 1.6-2.7 nats
# below "my Munnar" on three fresh bench films (inside BONUS_NATS), where "court" for Coorg scored -0.6 and
# "origin" for Arjun +1.6.
SOUND_BONUS_NATS = 1.0

_LETTERS = re.compile(r"^[^\w']+|[^\w']+$")
_OPENING = re.compile(r"^\s*[^\w\s']*")  # a word's leading space and opening quote
_CLOSING = re.compile(r"[^\w\s']*\s*$")  # its closing punctuation
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


@dataclass(frozen=True)
class Candidate:
    first: int  # index of the first word replaced
    last: int  # one past the last
    name: str
    lead: str = ""  # the English word the first word starts with, kept before the name ("tell" of "tellish")
    likeness: float = field(default=0.0, compare=False)  # how much the words look like the name (`likeness`)
    bonus: float = field(default=BONUS_NATS, compare=False)  # how much less likely its text may be and win

    @property
    def text(self) -> str:
        return f"{self.lead} {self.name}" if self.lead else self.name


def core(word: str) -> str:
    """A word without the punctuation around it ("Noya," -> "Noya")."""
    return _LETTERS.sub("", word.strip())


def name_forms(terms: Sequence[str]) -> list[str]:
    """The names a run of words may turn into: each Latin-script term, and each word of one that has several
    ("Baldev Singh" -> also Baldev, Singh), since a film says first names alone."""
    forms: list[str] = []
    for term in terms:
        words = term.split()
        if not term or not all(_WORD.fullmatch(w) and w.isascii() for w in words):
            continue  # a Devanagari prompt seed or a term with digits: not a name to hear in Latin letters
        forms.append(term)
        forms.extend(w for w in words if len(words) > 1 and len(w) >= 3 and not is_ordinary_word(w))
    return list(dict.fromkeys(forms))


def _key(text: str) -> str:
    return romanisation_key(text).replace(" ", "")


def likeness(span: list[str], name: str, needed: float = MIN_SIMILARITY) -> float | None:
    """How much words look like the name (rapidfuzz ratio of the romanisation keys, 0-100), when they could be
    the name misheard: spelt at least `needed` alike, of a like length, and not one function word ("you" is
    never Zoya) nor one ordinary word only loosely alike; else None."""
    needed_here = _needed(span, name, needed)
    if needed_here is None:
        return None
    score = float(fuzz.ratio(_key(" ".join(span)), _key(name)))
    return score if score >= needed_here else None


def sound_likeness_of(span: list[str], name: str, sounds: Mapping[str, str],
                      needed: float = MIN_SIMILARITY) -> float | None:  # fmt: skip
    """How much words spelt unlike the name sound like it (`tasks.phonetics`), under the same conditions as
    `likeness` and at least SOUND_SIMILARITY alike; else None. Never for function words alone ("in the")."""
    needed_here = _needed(span, name, needed)
    if needed_here is None or all(is_stop_word(w) for w in span):
        return None
    score = sound_likeness(span, name, sounds)
    return score if score is not None and score >= max(needed_here, SOUND_SIMILARITY) else None


def _needed(span: list[str], name: str, needed: float) -> float | None:
    """The likeness words need to be the name; None when they cannot be (length, a function word alone)."""
    key, target = _key(" ".join(span)), _key(name)
    if not key or not 0.5 * len(target) <= len(key) <= MAX_LENGTH_RATIO * len(target):
        return None
    if len(span) == 1:
        if is_stop_word(span[0]):
            return None
        if is_ordinary_word(span[0]):
            return max(needed, ORDINARY_SIMILARITY)
    return needed


def made_up(word: str) -> bool:
    """A word that is no English word, its clitic aside ("aren't" and "I'm" are English, "Natishan's" is not)."""
    return not is_ordinary_word(word) and not is_ordinary_word(_CLITIC.sub("", word))


def unsure(word: dict[str, Any]) -> bool:
    """Whether Whisper was unsure of a word: a low probability, or a made-up word it was not sure of."""
    probability = float(word.get("probability", 1.0))
    return probability < UNSURE or (probability < UNSURE_MADE_UP and made_up(core(str(word["word"]))))


def lead_of(word: str) -> tuple[str, str] | None:
    """A made-up word as the English word it starts with and the rest ("tellish" -> tell, ish): Whisper ran
    a word into the name after it. The longest such word of at least MIN_LEAD letters, leaving two."""
    if not made_up(word):
        return None
    for cut in range(len(word) - 2, MIN_LEAD - 1, -1):
        if is_ordinary_word(word[:cut]) and not is_stop_word(word[:cut]):
            return word[:cut], word[cut:]
    return None


def name_candidates(words: list[dict[str, Any]], names: Sequence[str],
                    sounds: Mapping[str, str] | None = None) -> list[Candidate]:  # fmt: skip
    """Runs of words in a segment that may be a misheard name: at least one word Whisper was unsure of,
    no name among them, no punctuation inside the run, spelt like the name or (given `sounds`, see
    `tasks.phonetics`) sounding like it. A run whose first word is made up and starts with an English word
    may also be that word and the name ("tellish on": tell Ishaan)."""
    known = {n.casefold() for n in names}
    cores = [core(str(w.get("word") or "")) for w in words]
    out: list[Candidate] = []
    for first in range(len(words)):
        lead = lead_of(cores[first]) if _WORD.fullmatch(cores[first]) else None
        for last in range(first + 1, min(first + MAX_WORDS, len(words)) + 1):
            span = cores[first:last]
            if not all(_WORD.fullmatch(c) for c in span):
                break  # a number, a dash, a word of no letters
            if any(str(w["word"]).strip() != c for w, c in zip(words[first : last - 1], span, strict=False)):
                break  # punctuation inside the run: a comma ends a name
            if any(c.casefold() in known or c.casefold().removesuffix("'s") in known for c in span):
                break
            if not any(unsure(w) for w in words[first:last]):
                continue
            readings = [("", span, MIN_SIMILARITY)]
            if lead is not None:
                readings.append((lead[0], [lead[1], *span[1:]], LEAD_SIMILARITY))
            for before, heard, needed in readings:
                for name in names:
                    alike = likeness(heard, name, needed)
                    if alike is not None:
                        out.append(Candidate(first, last, name, before, alike))
                        continue
                    alike = sound_likeness_of(heard, name, sounds, needed) if sounds else None
                    if alike is not None:
                        english = all(is_ordinary_word(w) for w in heard)
                        out.append(Candidate(first, last, name, before, alike,
                                             SOUND_BONUS_NATS if english else BONUS_NATS))  # fmt: skip
    return out


def sentences(words: list[dict[str, Any]]) -> list[range]:
    """Word indices of each sentence (as subtitle layout ends one): the text the check reads."""
    out, first = [], 0
    for index, word in enumerate(words):
        if SENTENCE_END.search(str(word.get("word") or "").rstrip()):
            out.append(range(first, index + 1))
            first = index + 1
    if first < len(words):
        out.append(range(first, len(words)))
    return out


def with_name(words: list[dict[str, Any]], candidate: Candidate) -> list[dict[str, Any]]:
    """The words with the run replaced by the name, as one word over the run's time, its punctuation kept;
    a lead goes before it as a word of its own, timed by its share of the first word's letters."""
    run = words[candidate.first : candidate.last]
    opening = _OPENING.match(str(run[0]["word"]))
    closing = _CLOSING.search(str(run[-1]["word"]))
    before = opening.group(0) if opening else ""
    word = dict(run[0]) | {
        "word": f"{' ' if candidate.lead else before}{candidate.name}{closing.group(0) if closing else ''}",
        "end": run[-1]["end"],
        "probability": min(float(w.get("probability", 1.0)) for w in run),
    }
    if not candidate.lead:
        return [*words[: candidate.first], word, *words[candidate.last :]]
    start, end = float(run[0]["start"]), float(run[0]["end"])
    cut = round(start + (end - start) * len(candidate.lead) / max(1, len(core(str(run[0]["word"])))), 3)
    lead = dict(run[0]) | {"word": f"{before}{candidate.lead}", "end": cut}
    return [*words[: candidate.first], lead, word | {"start": cut}, *words[candidate.last :]]


def chosen(candidates: list[Candidate], gains: list[float]) -> list[tuple[Candidate, float]]:
    """The respellings to make: within their bonus, clearly ahead of any other name for the same words (further
    ahead of one spelt much more like them), and not overlapping a better one; in word order."""
    best: dict[tuple[int, int], list[tuple[float, Candidate]]] = {}
    for candidate, gain in zip(candidates, gains, strict=True):
        best.setdefault((candidate.first, candidate.last), []).append((gain, candidate))
    ranked: list[tuple[float, Candidate]] = []
    for options in best.values():
        options.sort(key=lambda item: item[0], reverse=True)
        gain, candidate = options[0]
        # other names only: the same name with and without a lead is one reading
        others = [(other, option) for other, option in options[1:] if option.name != candidate.name]
        if gain < -candidate.bonus or (others and others[0][0] >= gain - AMBIGUOUS_NATS):
            continue
        if any(o.likeness >= candidate.likeness + LIKENESS_MARGIN and g >= gain - SPELLING_NATS for g, o in others):
            continue  # Whisper's score says one name, the spelling another: neither
        ranked.append((gain, candidate))
    taken: list[tuple[Candidate, float]] = []
    for gain, candidate in sorted(ranked, key=lambda item: item[0], reverse=True):
        if all(candidate.last <= other.first or candidate.first >= other.last for other, _ in taken):
            taken.append((candidate, gain))
    return sorted(taken, key=lambda item: item[0].first)


def respelt(words: list[dict[str, Any]], taken: list[tuple[Candidate, float]]) -> list[dict[str, Any]]:
    """The words with every chosen respelling made (from the last, so earlier indices hold)."""
    for candidate, _gain in sorted(taken, key=lambda item: item[0].first, reverse=True):
        words = with_name(words, candidate)
    return words
