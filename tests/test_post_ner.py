"""post_ner: the sentence set (misspelt names, names that are English words, parts, possessives, titles),
and tmdb -> pre_ner -> post_ner chained on a generated job against the local fake TMDB."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from pydantic import SecretStr

from settings.model import FilmSettings
from settings.stages import PostNerSettings, PreNerSettings, TmdbSettings
from tasks.contract import StageResult, file_record
from tasks.post_ner import correct_segments
from tasks.pre_ner import build_glossary
from tasks.tmdb import film_record
from tests.support import make_job, run_stage
from tests.tmdb_server import API_KEY, DDLJ, PREM_FILM, serve_tmdb

SENTENCES = Path(__file__).parent / "data" / "name_sentences.tsv"


def sentence_set() -> list[tuple[str, str, str]]:
    with SENTENCES.open(encoding="utf-8", newline="") as fh:
        return [(r[0], r[1], r[2]) for r in csv.reader(fh, delimiter="\t") if r and not r[0].startswith("#")]


def word_changes(before: str, after: str) -> set[tuple[int, str, str]]:
    """(word position, old, new) for each word that differs; corrections never add or drop words."""
    old, new = before.split(), after.split()
    assert len(old) == len(new), (before, after)
    return {(i, a, b) for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b}


def test_sentence_set_zero_wrong_corrections_and_90_percent_fixed() -> None:
    rows = sentence_set()
    assert len(rows) >= 30 and sum(r[1] != r[2] for r in rows) >= 25
    assert {"misspelt", "possessive", "title", "partial", "ordinary", "clean"} <= {r[0] for r in rows}
    film = PREM_FILM
    entries = [
        e.model_dump()
        for e in build_glossary(
            film_record(film.details(), film.credits(), film.keyword_list(), film.titles()), [], None, PreNerSettings()
        )
    ]
    translation = {
        "backend": "test",
        "segments": [
            {"id": i, "start": float(i), "end": i + 0.9, "text": r[1], "speaker": None, "words": [], "source_ids": [i]}
            for i, r in enumerate(rows)
        ],
    }
    started = time.perf_counter()
    english, corrections = correct_segments(translation, entries, PostNerSettings())
    elapsed = time.perf_counter() - started
    expected = fixed = wrong = 0
    failures = []
    for (category, text, want), segment in zip(rows, english["segments"], strict=False):
        wanted = word_changes(text, want)
        made = word_changes(text, segment["text"])
        expected += len(wanted)
        fixed += len(made & wanted)
        wrong += len(made - wanted)
        if segment["text"] != want:
            failures.append(f"{category}: {text!r} -> {segment['text']!r} (want {want!r})")
    rate = fixed / expected
    print(
        f"post_ner sentence set: {len(rows)} sentences, {expected} misspelt names, fixed {fixed} "
        f"({100 * rate:.1f}%), wrong corrections {wrong}; {len(rows) / elapsed:.0f} segments/s"
    )
    print("\n".join(failures))
    assert wrong == 0, failures
    assert rate >= 0.9, failures
    sample = next(c for c in corrections if c["before"] == "Simren")
    assert sample["after"] == "Simran" and sample["score"] >= 85 and sample["end"] > sample["start"]


def test_threshold_and_disabled_setting() -> None:
    entries = [{"canonical": "Simran Singh", "kind": "person", "variants": ["Simran", "Singh"], "source": "t"}]
    segments = {
        "segments": [
            {
                "id": 1,
                "start": 0.0,
                "end": 1.0,
                "text": "Simrann and Simrun met Singhh.",
                "words": [{"word": " Simrann", "start": 0.0, "end": 0.4}],
            }
        ]
    }
    english, corrections = correct_segments(segments, entries, PostNerSettings(threshold=85))
    assert english["segments"][0]["text"] == "Simran and Simrun met Singh."
    assert english["segments"][0]["words"][0]["word"] == " Simran"
    assert segments["segments"][0]["text"] == "Simrann and Simrun met Singhh."  # input untouched
    strict, _ = correct_segments(segments, entries, PostNerSettings(threshold=100.0, ambiguity_margin=0))
    loose, _ = correct_segments(segments, entries, PostNerSettings(threshold=80))
    assert loose["segments"][0]["text"] == "Simran and Simran met Singh."
    assert strict["segments"][0]["text"] == "Simran and Simrun met Singh."  # equal romanisation keys score 100
    assert [c["before"] for c in corrections] == ["Simrann", "Singhh"]


def test_two_names_alike_are_left_alone() -> None:
    entries = [
        {"canonical": "Rohan", "kind": "person", "variants": [], "source": "t"},
        {"canonical": "Rohin", "kind": "person", "variants": [], "source": "t"},
    ]
    english, corrections = correct_segments(
        {"segments": [{"id": 0, "start": 0, "end": 1, "text": "Rohen left."}]}, entries, PostNerSettings(threshold=75)
    )
    assert english["segments"][0]["text"] == "Rohen left." and corrections == []


def write_translation(job, segments: list[dict]) -> StageResult:
    folder = job.dir / "07_second_pass_translation"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "translation.json"
    path.write_text(
        json.dumps(
            {
                "backend": "whisper",
                "source_language": "hi",
                "target_language": "en",
                "passthrough": False,
                "segments": segments,
            }
        )
    )
    return StageResult(
        stage="second_pass_translation", version="1", job_id=job.job_id, files=[file_record(job.dir, path)]
    )


def test_tmdb_pre_ner_post_ner_chain(tmp_path: Path) -> None:
    films = tmp_path / "films"
    films.mkdir()
    film = films / "Dilwale.Dulhania.Le.Jayenge.1995.1080p.BluRay.mkv"
    film.write_bytes(b"film")
    job = make_job(tmp_path / "jobs", film)
    with serve_tmdb(films=[DDLJ]) as server:
        tmdb = run_stage(
            "tmdb",
            job,
            TmdbSettings(base_url=server.base_url),
            film=FilmSettings(),
            secrets={"tmdb_api_key": SecretStr(API_KEY)},
            cache_root=tmp_path / "cache",
        )
    assert tmdb.skipped is None and tmdb.summary["id"] == DDLJ.id
    pre = run_stage("pre_ner", job, PreNerSettings(prompt_max_tokens=60), upstream={"tmdb": tmdb}, film=FilmSettings())
    glossary = json.loads((job.dir / pre.file("glossary.json").name).read_text())
    assert glossary["prompt_terms"][:2] == ["Raj Malhotra", "Simran Singh"]
    assert {"Raj", "Simran", "Punjab"} <= set(glossary["protected_names"])
    segments = [
        {
            "id": 0,
            "start": 1.0,
            "end": 2.5,
            "text": "Simren, your father is calling.",
            "speaker": "SPEAKER_00",
            "words": [],
            "source_ids": [0],
        },
        {
            "id": 1,
            "start": 3.0,
            "end": 4.0,
            "text": "Mr Malhotraa, I love the rose garden.",
            "speaker": "SPEAKER_01",
            "words": [],
            "source_ids": [1],
        },
        {
            "id": 2,
            "start": 5.0,
            "end": 6.0,
            "text": "Raaj will take Lajo to Punjaab.",
            "speaker": "SPEAKER_00",
            "words": [],
            "source_ids": [2],
        },
        {
            "id": 3,
            "start": 7.0,
            "end": 8.0,
            "text": "What a sunny day.",
            "speaker": None,
            "words": [],
            "source_ids": [3],
        },
    ]
    translation = write_translation(job, segments)
    post = run_stage(
        "post_ner", job, PostNerSettings(), upstream={"second_pass_translation": translation, "pre_ner": pre}
    )
    english = json.loads((job.dir / post.file("english.json").name).read_text())
    corrections = json.loads((job.dir / post.file("corrections.json").name).read_text())
    texts = [s["text"] for s in english["segments"]]
    print("corrected English:", texts)
    assert texts == [
        "Simran, your father is calling.",
        "Mr Malhotra, I love the rose garden.",
        "Raj will take Lajjo to Punjab.",
        "What a sunny day.",
    ]
    assert english["target_language"] == "en" and english["segments"][0]["speaker"] == "SPEAKER_00"
    assert [(c["segment_id"], c["before"], c["after"]) for c in corrections] == [
        (0, "Simren", "Simran"),
        (1, "Malhotraa", "Malhotra"),
        (2, "Raaj", "Raj"),
        (2, "Lajo", "Lajjo"),
        (2, "Punjaab", "Punjab"),
    ]
    assert all(set(c) == {"segment_id", "before", "after", "score", "start", "end"} for c in corrections)
    assert corrections[0]["start"] == 1.0 and corrections[0]["end"] == 2.5
    assert post.summary["corrections"] == 5 and post.summary["segments_changed"] == 3

    off = run_stage(
        "post_ner",
        job,
        PostNerSettings(enabled=False),
        upstream={"second_pass_translation": translation, "pre_ner": pre},
    )
    passthrough = json.loads((job.dir / off.file("english.json").name).read_text())
    assert [s["text"] for s in passthrough["segments"]] == [s["text"] for s in segments]
    assert off.summary["corrections"] == 0


def test_chain_with_tmdb_skipped_uses_the_user_glossary(tmp_path: Path) -> None:
    glossary_file = tmp_path / "names.tsv"
    glossary_file.write_text("Simran\tSimran\theroine\nKuljeet\tKuljeet\t\n", encoding="utf-8")
    job = make_job(tmp_path / "jobs")
    tmdb = run_stage("tmdb", job, TmdbSettings(), film=FilmSettings(), secrets={"tmdb_api_key": None})
    assert tmdb.skipped and "TMDB_API_KEY" in tmdb.skipped
    pre = run_stage("pre_ner", job, PreNerSettings(glossary_file=glossary_file), upstream={"tmdb": tmdb})
    translation = write_translation(
        job,
        [
            {
                "id": 0,
                "start": 0.0,
                "end": 1.0,
                "text": "Kuljit met Simren.",
                "speaker": None,
                "words": [],
                "source_ids": [0],
            }
        ],
    )
    post = run_stage(
        "post_ner", job, PostNerSettings(), upstream={"second_pass_translation": translation, "pre_ner": pre}
    )
    english = json.loads((job.dir / post.file("english.json").name).read_text())
    assert english["segments"][0]["text"] == "Kuljeet met Simran."
