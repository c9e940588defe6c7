"""Devanagari for the Hindi track: how much of a text is in it, and Latin names written in it.

Whisper writes Hindi in whatever script its prompt is in (Latin or Urdu without one), so the
Hindi pass is prompted in Devanagari: the film's names, transliterated by indic-transliteration
where the glossary has no Devanagari spelling, after a short Devanagari sentence.
"""

from __future__ import annotations

import unicodedata

from tasks.glossary import Entry

# Whisper continues in the script of its prompt; a plain sentence is enough to set it.
SEED = "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।"
VIRAMA = "\u094d"


def is_devanagari(char: str) -> bool:
    return "\u0900" <= char <= "\u097f" or "\ua8e0" <= char <= "\ua8ff"


def devanagari_share(text: str) -> float:
    """The share of the letters (and vowel signs) of `text` that are Devanagari; 1.0 for a text without any."""
    letters = [c for c in text if unicodedata.category(c)[0] in "LM"]
    return sum(map(is_devanagari, letters)) / len(letters) if letters else 1.0


def latin_share(text: str) -> float:
    """The share of the letters of `text` that are Latin (English said in a Hindi film, or romanised Hindi)."""
    letters = [c for c in text if unicodedata.category(c)[0] in "LM"]
    return sum(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in letters) / len(letters) if letters else 0.0


def to_devanagari(name: str) -> str:
    """A Latin name in Devanagari (`Simran` -> `सिम्रन`), by indic-transliteration's ITRANS reading.

    Romanised Hindi names drop the schwa at the end of a word, so a final virama is dropped too.
    """
    from indic_transliteration import sanscript

    if devanagari_share(name) == 1.0:
        return name
    words = [sanscript.transliterate(w.lower(), sanscript.ITRANS, sanscript.DEVANAGARI) for w in name.split()]
    return " ".join(w.removesuffix(VIRAMA) for w in words)


def devanagari_terms(terms: list[str], entries: list[Entry]) -> list[str]:
    """Each prompt term in Devanagari: the glossary's own Devanagari spelling when it has one."""
    spelt = {e.canonical: next((v for v in e.variants if devanagari_share(v) == 1.0), None) for e in entries}
    return [spelt.get(term) or to_devanagari(term) for term in terms]


def latin_spellings(terms: list[str], entries: list[Entry]) -> dict[str, str]:
    """Each name's Devanagari spellings (the glossary's, and the transliteration) -> its Latin spelling."""
    glossary = dict(zip(devanagari_terms(terms, entries), terms, strict=True))
    return {to_devanagari(term): term for term in terms} | glossary
