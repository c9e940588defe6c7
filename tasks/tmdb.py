"""tmdb: the film's metadata (cast with characters, key crew, keywords, alternative titles) from TMDB.

Optional: with no key, no network or no match the stage is recorded as skipped (a network
failure as a skip that the next run retries) and the pipeline goes on; pre_ner then builds
the glossary from the user's glossary files alone. Answers are cached on disk, so a second
job of the same film sends no request.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz

from settings.model import FilmSettings
from settings.stages import TmdbSettings
from tasks.contract import PermanentError, StageContext
from tasks.documents import TmdbFilm
from tasks.kernel import StageSkipped, stage
from tasks.tmdb_client import (
    AnswerCache,
    TmdbAuthError,
    TmdbCacheError,
    TmdbClient,
    TmdbError,
    TmdbNotFound,
    TmdbUnavailable,
)

# Release-name tags that end a title in a file name ("Kal.Ho.Naa.Ho.1080p.BluRay.mkv").
_RELEASE_TAG = re.compile(
    r"\b(?:2160p|1080p|720p|576p|480p|4k|uhd|hdr|blu-?ray|brrip|bdrip|web-?dl|web-?rip|hdrip|dvdrip|dvdscr|hdtv|"
    r"x26[45]|h ?26[45]|hevc|avc|aac|ac3|dts|ddp?|10bit|remux|proper|repack|extended|unrated|uncut|"
    r"esubs?|multi|dual audio|hindi)\b",
    re.IGNORECASE,
)
_YEAR = re.compile(r"[(\[]?\b((?:18|19|20)\d{2})\b[)\]]?")

# Crew kept for the glossary: the director, the writers, the music people.
_MUSIC_WORDS = ("music", "composer", "lyric", "song", "singer")


def film_query_from_path(path: str | Path) -> tuple[str | None, int | None]:
    """Title and year from a film's file name.

    "Dilwale Dulhania Le Jayenge (1995).mkv" -> ("Dilwale Dulhania Le Jayenge", 1995);
    "Kal.Ho.Naa.Ho.2003.1080p.mkv" -> ("Kal Ho Naa Ho", 2003); "2012 (2009).mkv" -> ("2012", 2009).
    """
    text = re.sub(r"[._]+", " ", Path(path).stem).strip()
    latest = date.today().year + 2
    year: int | None = None
    cut = len(text)
    for match in _YEAR.finditer(text):
        value = int(match.group(1))
        if match.start() > 0 and 1890 <= value <= latest and text[: match.start()].strip(" -([") != "":
            year, cut = value, match.start()
    tag = _RELEASE_TAG.search(text)
    if tag is not None and tag.start() > 0:
        cut = min(cut, tag.start())
    title = re.sub(r"\s+", " ", text[:cut]).strip(" -([{")
    return (title or None), year


def film_query(film_title: str | None, film_year: int | None, input_path: str | None) -> tuple[str | None, int | None]:
    """The prepare options win; the file name fills what they leave out."""
    parsed_title, parsed_year = film_query_from_path(input_path) if input_path else (None, None)
    if film_title:
        same_film = parsed_title is not None and fuzz.token_sort_ratio(_fold(parsed_title), _fold(film_title)) >= 80
        return film_title, film_year if film_year is not None else (parsed_year if same_film else None)
    return parsed_title, film_year if film_year is not None else parsed_year


def _fold(text: str) -> str:
    """Lower case, accents off, punctuation to spaces: for comparing titles."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"[^\w]+", " ", text).strip()


def _release_year(result: dict[str, Any]) -> int | None:
    value = str(result.get("release_date") or "")[:4]
    return int(value) if value.isdigit() else None


def best_match(results: list[dict[str, Any]], title: str, year: int | None, min_score: float) -> dict[str, Any] | None:
    """The search result whose title fits best; a known year must be within one (regional releases differ)."""
    wanted = _fold(title)
    ranked: list[tuple[float, float, float, dict[str, Any]]] = []
    for result in results:
        names = [result.get("title"), result.get("original_title")]
        score = max((fuzz.token_sort_ratio(wanted, _fold(n)) for n in names if n), default=0.0)
        released = _release_year(result)
        if year is not None and released is not None and abs(released - year) > 1:
            continue
        if score < min_score:
            continue
        closeness = -abs(released - year) if year is not None and released is not None else -1.0
        ranked.append((round(score), closeness, float(result.get("popularity") or 0.0), result))
    if not ranked:
        return None
    ranked.sort(key=lambda item: item[:3], reverse=True)
    return ranked[0][3]


def find_film(client: TmdbClient, title: str, year: int | None, min_score: float) -> dict[str, Any] | None:
    """Search by title and year; with no fit, search again without the year (it may be off by one)."""
    attempts = [{"year": year}, {}] if year is not None else [{}]
    for extra in attempts:
        answer = client.get("/search/movie", query=title, include_adult="false", **extra)
        match = best_match(list(answer.get("results") or []), title, year, min_score)
        if match is not None:
            return match
    return None


def keep_crew(member: dict[str, Any]) -> bool:
    """Director, writers and music: the crew whose names may be spoken or sung."""
    job = str(member.get("job") or "")
    department = str(member.get("department") or "")
    if job == "Director" or department == "Writing":
        return True
    return department in {"Sound", "Crew"} and any(word in job.lower() for word in _MUSIC_WORDS)


def film_record(
    details: dict[str, Any], credits: dict[str, Any], keywords: dict[str, Any], alternative_titles: dict[str, Any]
) -> dict[str, Any]:
    """`tmdb.json` from the four TMDB answers."""
    cast = sorted(credits.get("cast") or [], key=lambda c: (c.get("order") is None, c.get("order") or 0))
    crew: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for member in credits.get("crew") or []:
        key = (str(member.get("name") or ""), str(member.get("job") or ""))
        if key[0] and key not in seen and keep_crew(member):
            seen.add(key)
            crew.append({"name": key[0], "job": key[1], "department": member.get("department") or ""})
    titles: list[str] = []
    for item in alternative_titles.get("titles") or []:
        name = str(item.get("title") or "").strip()
        if name and name not in titles:
            titles.append(name)
    return {
        "id": details["id"],
        "title": details.get("title") or "",
        "original_title": details.get("original_title") or "",
        "year": _release_year(details),
        "overview": details.get("overview") or "",
        "tagline": details.get("tagline") or "",
        "cast": [
            {"name": c.get("name") or "", "character": c.get("character") or "", "order": c.get("order")}
            for c in cast
            if c.get("name")
        ],
        "crew": crew,
        "keywords": [k["name"] for k in keywords.get("keywords") or [] if k.get("name")],
        "alternative_titles": titles,
    }


def fetch_film(client: TmdbClient, movie_id: int) -> dict[str, Any]:
    """Details, credits, keywords and alternative titles of one film."""
    return film_record(
        client.get(f"/movie/{movie_id}"),
        client.get(f"/movie/{movie_id}/credits"),
        client.get(f"/movie/{movie_id}/keywords"),
        client.get(f"/movie/{movie_id}/alternative_titles"),
    )


def _input_path(ctx: StageContext) -> str | None:
    try:
        return ctx.job_file.input_path
    except (OSError, ValueError):
        return None


@stage("tmdb", version="2", optional=True, secrets=("tmdb_api_key",))
def tmdb(ctx: StageContext, settings: TmdbSettings, film: FilmSettings) -> dict:
    if not settings.enabled:
        raise StageSkipped("TMDB lookup is off (TMDB__ENABLED=false)")
    secret = ctx.secrets.get("tmdb_api_key")
    api_key = secret.get_secret_value().strip() if secret is not None else ""
    if not api_key:
        raise StageSkipped("no TMDB_API_KEY: set it in the environment or in config/secrets.json")
    title, year = film_query(film.title, film.year, _input_path(ctx))
    if not title:
        raise StageSkipped(
            "no film title: give one with the prepare option --title (FILM__TITLE), or name the file 'Title (Year).mkv'"
        )
    cache_dir = settings.cache_dir or ctx.cache_root / "tmdb"
    max_age = settings.cache_max_age_days * 86400 if settings.cache_max_age_days > 0 else None
    client = TmdbClient(
        api_key,
        base_url=settings.base_url,
        language=settings.language,
        timeout_s=settings.timeout_s,
        max_attempts=settings.max_attempts,
        backoff_s=settings.backoff_s,
        max_wait_s=settings.max_wait_s,
        cache=AnswerCache(cache_dir, max_age),
        log=ctx.log,
    )
    ctx.log.info(
        "device: cpu (HTTP only); looking up %r (%s) at %s, cache %s",
        title,
        year or "any year",
        settings.base_url,
        cache_dir,
    )
    try:
        match = find_film(client, title, year, settings.min_title_score)
        if match is None:
            raise StageSkipped(
                f"no TMDB match for {title!r} ({year or 'any year'}); "
                "give the title and year with the prepare options --title/--year"
            )
        ctx.progress(0.25, f"found TMDB id {match['id']}")
        data = fetch_film(client, int(match["id"]))
    except TmdbCacheError as exc:
        raise PermanentError(str(exc)) from exc
    except TmdbAuthError as exc:
        raise StageSkipped(str(exc)) from exc
    except TmdbUnavailable as exc:
        raise StageSkipped(f"TMDB unreachable: {exc}", transient=True) from exc
    except TmdbNotFound as exc:
        raise StageSkipped(f"no TMDB match for {title!r}: {exc}") from exc
    except TmdbError as exc:
        raise StageSkipped(f"TMDB lookup failed: {exc}") from exc
    finally:
        client.close()
    ctx.write(TmdbFilm.model_validate(data))
    ctx.progress(1.0, "tmdb.json written")
    ctx.log.info(
        "TMDB %s: %r (%s), %d cast, %d crew; %d request(s), %d cache hit(s)",
        data["id"],
        data["title"],
        data["year"],
        len(data["cast"]),
        len(data["crew"]),
        client.requests_sent,
        client.cache_hits,
    )
    return {
        "id": data["id"],
        "title": data["title"],
        "year": data["year"],
        "query": {"title": title, "year": year},
        "cast": len(data["cast"]),
        "crew": len(data["crew"]),
        "requests": client.requests_sent,
        "cache_hits": client.cache_hits,
    }
