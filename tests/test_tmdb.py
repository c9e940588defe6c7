"""tmdb: file-name parsing, matching, the stage against a local fake TMDB, retries, skips, the disk cache."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from settings.model import FilmSettings
from settings.stages import TmdbSettings
from tasks.tmdb import best_match, film_query, film_query_from_path
from tasks.tmdb_client import AnswerCache, TmdbAuthError, TmdbClient, TmdbUnavailable, retry_after_s
from tests.support import make_job, run_stage
from tests.tmdb_server import API_KEY, DDLJ, DDLJ_REMAKE, KAL_HO_NAA_HO, serve_tmdb


@pytest.mark.parametrize(
    ("name", "title", "year"),
    [
        ("Dilwale Dulhania Le Jayenge (1995).mkv", "Dilwale Dulhania Le Jayenge", 1995),
        ("Kal.Ho.Naa.Ho.2003.1080p.mkv", "Kal Ho Naa Ho", 2003),
        ("Kal_Ho_Naa_Ho_[2003]_BluRay.x264.mp4", "Kal Ho Naa Ho", 2003),
        ("2012 (2009).mkv", "2012", 2009),
        ("1942 A Love Story (1994).mkv", "1942 A Love Story", 1994),
        ("Lagaan.1080p.BluRay.mkv", "Lagaan", None),
        ("Sholay.mkv", "Sholay", None),
    ],
)
def test_title_and_year_from_file_name(name: str, title: str, year: int | None) -> None:
    assert film_query_from_path(f"/films/{name}") == (title, year)


def test_prepare_options_win_over_the_file_name() -> None:
    assert film_query("Kal Ho Naa Ho", 2003, "/x/DDLJ (1995).mkv") == ("Kal Ho Naa Ho", 2003)
    assert film_query("Kal Ho Naa Ho", None, "/x/Kal.Ho.Naa.Ho.2003.mkv") == ("Kal Ho Naa Ho", 2003)
    assert film_query("Kal Ho Naa Ho", None, "/x/Lagaan (2001).mkv") == ("Kal Ho Naa Ho", None)
    assert film_query(None, 1996, "/x/Dilwale Dulhania Le Jayenge (1995).mkv") == ("Dilwale Dulhania Le Jayenge", 1996)


def test_best_match_prefers_title_then_year() -> None:
    results = [DDLJ_REMAKE.summary(), DDLJ.summary(), KAL_HO_NAA_HO.summary()]
    assert best_match(results, "Dilwale Dulhania Le Jayenge", 1995, 70)["id"] == DDLJ.id
    assert best_match(results, "Dilwale Dulhania Le Jayenge", 2021, 70)["id"] == DDLJ_REMAKE.id
    assert best_match(results, "Dilwale Dulhania Le Jayenge", None, 70)["id"] == DDLJ_REMAKE.id  # more popular
    assert best_match(results, "Sholay", None, 70) is None
    assert best_match(results, "Kal Ho Naa Ho", 1980, 70) is None


def film_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"not really a film")
    return path


def run_tmdb(
    tmp_path: Path,
    name: str,
    base_url: str,
    *,
    key: str | None = API_KEY,
    job_id: str = "20260101-0001",
    film: FilmSettings | None = None,
    **settings,
):
    job = make_job(tmp_path / "jobs", film_file(tmp_path / "films", name), job_id=job_id)
    secrets = {"tmdb_api_key": SecretStr(key) if key is not None else None}
    result = run_stage(
        "tmdb",
        job,
        TmdbSettings(base_url=base_url, **settings),
        film=film or FilmSettings(),
        secrets=secrets,
        cache_root=tmp_path / "cache",
    )
    return job, result


def test_stage_writes_tmdb_json_and_a_second_job_sends_no_request(tmp_path: Path) -> None:
    with serve_tmdb(films=[DDLJ, DDLJ_REMAKE, KAL_HO_NAA_HO]) as tmdb:
        job, result = run_tmdb(tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url)
        first = tmdb.count()
        job2, result2 = run_tmdb(
            tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url, job_id="20260101-0002"
        )
        second = tmdb.count() - first
    print(f"requests: first job {first}, second job {second}")
    assert result.skipped is None and result2.skipped is None
    assert first == 5 and tmdb.count("/search/movie") == 1  # search, details, credits, keywords, titles
    assert second == 0 and result2.summary["cache_hits"] == 5
    data = json.loads((job.dir / result.file("tmdb.json").name).read_text())
    assert result.file("tmdb.json").sha256 == result2.file("tmdb.json").sha256
    assert set(data) == {
        "id",
        "title",
        "original_title",
        "year",
        "overview",
        "tagline",
        "cast",
        "crew",
        "keywords",
        "alternative_titles",
    }
    assert (data["id"], data["title"], data["year"]) == (19404, "Dilwale Dulhania Le Jayenge", 1995)
    assert data["cast"][:2] == [
        {"name": "Shah Rukh Khan", "character": "Raj Malhotra", "order": 0},
        {"name": "Kajol", "character": "Simran Singh", "order": 1},
    ]
    jobs = {(c["name"], c["job"]) for c in data["crew"]}
    assert ("Aditya Chopra", "Director") in jobs and ("Jatin Pandit", "Original Music Composer") in jobs
    assert ("Anand Bakshi", "Lyricist") in jobs and ("Javed Siddiqui", "Dialogue") in jobs
    assert not {"Yash Chopra", "Manmohan Singh"} & {c["name"] for c in data["crew"]}  # producer, camera
    assert data["keywords"][:2] == ["london, england", "punjab"]
    assert data["alternative_titles"] == ["DDLJ", "The Brave-Hearted Will Take the Bride"]
    assert "London" in data["overview"] and data["tagline"].startswith("Come")
    # The key is sent to TMDB but never stored in the cache.
    assert all(API_KEY not in p.read_text() for p in (tmp_path / "cache" / "tmdb").iterdir())
    assert tmdb.queries[0]["api_key"] == API_KEY


def test_release_name_and_prepare_options(tmp_path: Path) -> None:
    with serve_tmdb(films=[DDLJ, KAL_HO_NAA_HO]) as tmdb:
        _job, result = run_tmdb(tmp_path, "Kal.Ho.Naa.Ho.2003.1080p.mkv", tmdb.base_url)
        assert result.summary["id"] == KAL_HO_NAA_HO.id
        assert tmdb.queries[0]["query"] == "Kal Ho Naa Ho" and tmdb.queries[0]["year"] == "2003"
        _job, result = run_tmdb(
            tmp_path,
            "movie.mkv",
            tmdb.base_url,
            job_id="20260101-0002",
            film=FilmSettings(title="Dilwale Dulhania Le Jayenge", year=1995),
        )
        assert result.summary["id"] == DDLJ.id and result.summary["query"] == {
            "title": "Dilwale Dulhania Le Jayenge",
            "year": 1995,
        }


def test_wrong_year_falls_back_to_a_search_without_year(tmp_path: Path) -> None:
    with serve_tmdb(films=[DDLJ]) as tmdb:
        _job, result = run_tmdb(tmp_path, "Dilwale Dulhania Le Jayenge (1996).mkv", tmdb.base_url)
    assert result.summary["id"] == DDLJ.id
    assert [q.get("year") for q in tmdb.queries[:2]] == ["1996", None]


def test_no_key_no_match_and_a_wrong_key_are_skipped(tmp_path: Path) -> None:
    with serve_tmdb(films=[DDLJ]) as tmdb:
        _job, no_key = run_tmdb(tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url, key=None)
        assert tmdb.count() == 0
        _job, unknown = run_tmdb(tmp_path, "Sholay (1975).mkv", tmdb.base_url, job_id="20260101-0002")
        assert tmdb.count("/search/movie") == 2  # with the year, then without
        _job, wrong = run_tmdb(
            tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url, key="bad-key", job_id="20260101-0003"
        )
        _job, off = run_tmdb(
            tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url, enabled=False, job_id="20260101-0004"
        )
    assert "TMDB_API_KEY" in no_key.skipped and not no_key.retry_on_resume
    assert "no TMDB match for 'Sholay'" in unknown.skipped and not unknown.retry_on_resume
    assert "401" in wrong.skipped and "bad-key" not in wrong.skipped and not wrong.retry_on_resume
    assert "TMDB__ENABLED" in off.skipped
    assert not no_key.files and not unknown.files and not wrong.files


def test_server_errors_are_retried_then_recorded_as_a_transient_skip(tmp_path: Path) -> None:
    with serve_tmdb(films=[DDLJ]) as tmdb:
        tmdb.fail("/search/movie", 500, times=1)
        tmdb.fail("/movie/19404/credits", 502, times=1, body="<html>Bad Gateway</html>")
        _job, healed = run_tmdb(tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url, backoff_s=0.01)
        assert healed.skipped is None and tmdb.count() == 7
        tmdb.fail("/search/movie", 503, times=10)
        _job, down = run_tmdb(
            tmp_path, "Kal Ho Naa Ho (2003).mkv", tmdb.base_url, backoff_s=0.01, max_attempts=3, job_id="20260101-0002"
        )
    assert down.retry_on_resume and "503" in down.skipped and "3 attempt" in down.skipped
    assert API_KEY not in down.skipped


def test_no_network_is_a_transient_skip_and_the_key_stays_out_of_logs(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    job, result = run_tmdb(
        tmp_path,
        "Dilwale Dulhania Le Jayenge (1995).mkv",
        f"http://127.0.0.1:{port}/3",
        backoff_s=0.01,
        max_attempts=2,
        timeout_s=2,
    )
    assert result.retry_on_resume and "unreachable" in result.skipped
    logs = "".join(p.read_text() for p in job.logs_dir.iterdir())
    assert API_KEY not in result.skipped and API_KEY not in logs and "ConnectionError" in logs


def test_an_unwritable_cache_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with serve_tmdb(films=[DDLJ]) as tmdb:
        _job, result = run_tmdb(
            tmp_path, "Dilwale Dulhania Le Jayenge (1995).mkv", tmdb.base_url, cache_dir=blocker / "tmdb"
        )
    assert "TMDB__CACHE_DIR" in result.skipped and not result.retry_on_resume


def test_client_honours_retry_after_and_backs_off(tmp_path: Path) -> None:
    waits: list[float] = []
    with serve_tmdb(films=[DDLJ]) as tmdb:
        client = TmdbClient(API_KEY, base_url=tmdb.base_url, backoff_s=0.5, sleep=waits.append)
        tmdb.fail("/movie/19404", 429, times=1, retry_after="7")
        tmdb.fail("/movie/19404", 500, times=2)
        assert client.get("/movie/19404")["title"] == DDLJ.title
        assert client.requests_sent == 4
        assert waits[0] == 7.0 and 0.5 <= waits[1] <= 0.55 * 2 and 1.0 <= waits[2] <= 2.2
        tmdb.fail("/movie/19404", 429, times=1, retry_after="3600")
        short = TmdbClient(API_KEY, base_url=tmdb.base_url, max_wait_s=60, sleep=waits.append)
        with pytest.raises(TmdbUnavailable, match="3600"):
            short.get("/movie/19404")
        with pytest.raises(TmdbAuthError, match="401"):
            TmdbClient("nope", base_url=tmdb.base_url, sleep=waits.append).get("/movie/19404")
    assert len(waits) == 3  # no wait before giving up on a 3600 s Retry-After or a 401
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and retry_after_s("12") == 12.0


def test_client_sends_a_v4_token_as_bearer_and_caches_answers(tmp_path: Path) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"
    with serve_tmdb(films=[DDLJ], api_key=token) as tmdb:
        cache = AnswerCache(tmp_path / "c", max_age_s=None)
        client = TmdbClient(token, base_url=tmdb.base_url, cache=cache)
        assert client.get("/movie/19404/keywords")["keywords"][0]["name"] == "london, england"
        assert "api_key" not in tmdb.queries[0]
        again = TmdbClient(token, base_url=tmdb.base_url, cache=cache)
        again.get("/movie/19404/keywords")
        assert tmdb.count() == 1 and again.cache_hits == 1
        expired = TmdbClient(token, base_url=tmdb.base_url, cache=AnswerCache(tmp_path / "c", max_age_s=-1))
        expired.get("/movie/19404/keywords")
        assert tmdb.count() == 2
