"""A local fake of TMDB's v3 API for tests: real response shapes, real error bodies, request counts.

    from tests.tmdb_server import DDLJ, serve_tmdb

    with serve_tmdb(films=[DDLJ]) as tmdb:
        settings = TmdbSettings(base_url=tmdb.base_url)
        ... run the stage with secrets={"tmdb_api_key": SecretStr(tmdb.api_key)} ...
        assert tmdb.count("/search/movie") == 1

Serves search/movie, movie/{id}, movie/{id}/credits, movie/{id}/keywords and
movie/{id}/alternative_titles on 127.0.0.1 (a free port), under the path /3 like the real API.
A wrong key gets TMDB's 401 body, an unknown id its 404 body; `fail(path, status, ...)` makes
the next answers of a path a 429 (with Retry-After), a 500 or any other status.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "test-tmdb-key"

ERRORS: dict[int, dict[str, Any]] = {
    401: {"status_code": 7, "status_message": "Invalid API key: You must be granted a valid key.", "success": False},
    404: {"status_code": 34, "status_message": "The resource you requested could not be found.", "success": False},
    429: {
        "status_code": 25,
        "status_message": "Your request count (41) is over the allowed limit of (40).",
        "success": False,
    },
    500: {"status_code": 11, "status_message": "Internal error: Something went wrong, contact TMDb.", "success": False},
    503: {
        "status_code": 9,
        "status_message": "Service offline: This service is temporarily offline, try again later.",
        "success": False,
    },
}


@dataclass
class FakeFilm:
    """One film as TMDB knows it. cast: (actor, character); crew: (name, job, department)."""

    id: int
    title: str
    original_title: str
    release_date: str
    overview: str = ""
    tagline: str = ""
    popularity: float = 10.0
    original_language: str = "hi"
    cast: list[tuple[str, str]] = field(default_factory=list)
    crew: list[tuple[str, str, str]] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    alternative_titles: list[tuple[str, str]] = field(default_factory=list)  # (country, title)

    def summary(self) -> dict[str, Any]:
        """As in search results."""
        return {
            "adult": False,
            "backdrop_path": f"/{self.id}b.jpg",
            "genre_ids": [35, 18, 10749],
            "id": self.id,
            "original_language": self.original_language,
            "original_title": self.original_title,
            "overview": self.overview,
            "popularity": self.popularity,
            "poster_path": f"/{self.id}p.jpg",
            "release_date": self.release_date,
            "title": self.title,
            "video": False,
            "vote_average": 8.5,
            "vote_count": 4321,
        }

    def details(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "belongs_to_collection": None,
            "budget": 0,
            "genres": [{"id": 18, "name": "Drama"}],
            "homepage": "",
            "imdb_id": f"tt{self.id:07d}",
            "origin_country": ["IN"],
            "production_companies": [{"id": 1569, "logo_path": None, "name": "Yash Raj Films", "origin_country": "IN"}],
            "production_countries": [{"iso_3166_1": "IN", "name": "India"}],
            "revenue": 0,
            "runtime": 189,
            "spoken_languages": [{"english_name": "Hindi", "iso_639_1": "hi", "name": "हिन्दी"}],
            "status": "Released",
            "tagline": self.tagline,
        }

    def credits(self) -> dict[str, Any]:
        cast = [
            {
                "adult": False,
                "gender": 2,
                "id": 1000 + i,
                "known_for_department": "Acting",
                "name": actor,
                "original_name": actor,
                "popularity": 5.0,
                "profile_path": None,
                "cast_id": i + 1,
                "character": character,
                "credit_id": f"c{self.id}{i:03d}",
                "order": i,
            }
            for i, (actor, character) in enumerate(self.cast)
        ]
        crew = [
            {
                "adult": False,
                "gender": 0,
                "id": 5000 + i,
                "known_for_department": department,
                "name": name,
                "original_name": name,
                "popularity": 1.0,
                "profile_path": None,
                "credit_id": f"k{self.id}{i:03d}",
                "department": department,
                "job": job,
            }
            for i, (name, job, department) in enumerate(self.crew)
        ]
        return {"id": self.id, "cast": cast, "crew": crew}

    def keyword_list(self) -> dict[str, Any]:
        return {"id": self.id, "keywords": [{"id": 100 + i, "name": k} for i, k in enumerate(self.keywords)]}

    def titles(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "titles": [{"iso_3166_1": c, "title": t, "type": ""} for c, t in self.alternative_titles],
        }


DDLJ = FakeFilm(
    id=19404,
    title="Dilwale Dulhania Le Jayenge",
    original_title="दिलवाले दुल्हनिया ले जायेंगे",
    release_date="1995-10-20",
    overview=(
        "Raj and Simran meet on a trip across Europe and fall in love. But Simran's father, who runs a "
        "shop in London, has promised her hand to the son of a friend in Punjab, and the family flies "
        "to India for the wedding. Raj follows them to win over her family."
    ),
    tagline="Come... Fall In Love, All Over Again..",
    popularity=25.3,
    cast=[
        ("Shah Rukh Khan", "Raj Malhotra"),
        ("Kajol", "Simran Singh"),
        ("Amrish Puri", "Chaudhry Baldev Singh"),
        ("Anupam Kher", "Dharamvir Malhotra"),
        ("Farida Jalal", "Lajwanti 'Lajjo' Singh"),
        ("Parmeet Sethi", "Kuljeet Singh"),
        ("Mandira Bedi", "Preeti Singh"),
        ("Satish Shah", "Ajit Singh"),
        ("Himani Shivpuri", "Kammo"),
        ("Pooja Ruparel", "Rajeshwari 'Chutki' Singh"),
        ("Achala Sachdev", "Simran's Grandmother"),
        ("Karan Johar", "Rocky"),
        ("Arjun Sablok", "Dancer (uncredited)"),
    ],
    crew=[
        ("Aditya Chopra", "Director", "Directing"),
        ("Aditya Chopra", "Screenplay", "Writing"),
        ("Javed Siddiqui", "Dialogue", "Writing"),
        ("Jatin Pandit", "Original Music Composer", "Sound"),
        ("Lalit Pandit", "Original Music Composer", "Sound"),
        ("Anand Bakshi", "Lyricist", "Writing"),
        ("Yash Chopra", "Producer", "Production"),
        ("Manmohan Singh", "Director of Photography", "Camera"),
    ],
    keywords=["london, england", "punjab", "arranged marriage", "interrail", "bollywood"],
    alternative_titles=[("IN", "DDLJ"), ("US", "The Brave-Hearted Will Take the Bride"), ("IN", "DDLJ")],
)

KAL_HO_NAA_HO = FakeFilm(
    id=4254,
    title="Kal Ho Naa Ho",
    original_title="कल हो ना हो",
    release_date="2003-11-28",
    overview=(
        "Naina, a serious young woman in New York, meets Aman, her new neighbour, who teaches her to "
        "enjoy life. She falls for him, but Aman hides a secret and pushes her towards her friend Rohit."
    ),
    tagline="A story of a lifetime... in a heartbeat.",
    popularity=18.0,
    cast=[
        ("Shah Rukh Khan", "Aman Mathur"),
        ("Saif Ali Khan", "Rohit Patel"),
        ("Preity Zinta", "Naina Catherine Kapur"),
        ("Jaya Bachchan", "Jennifer 'Jenny' Kapur"),
        ("Sushma Seth", "Lajjo Kapur"),
    ],
    crew=[
        ("Nikhil Advani", "Director", "Directing"),
        ("Karan Johar", "Screenplay", "Writing"),
        ("Shankar-Ehsaan-Loy", "Original Music Composer", "Sound"),
        ("Javed Akhtar", "Lyricist", "Writing"),
    ],
    keywords=["new york city", "heart disease"],
    alternative_titles=[("US", "Tomorrow May Never Come")],
)

# A made-up film whose characters are also English words (Prem, Raj, Rose, Sunny, Pooja): the
# glossary of post_ner's sentence set (tests/data/name_sentences.tsv).
PREM_FILM = FakeFilm(
    id=777001,
    title="Prem Ki Kahani",
    original_title="प्रेम की कहानी",
    release_date="2005-06-10",
    overview=(
        "Prem, a music teacher in London, returns to Punjab for his sister's wedding and meets Simran, "
        "whose father has other plans. A summer in Shimla changes everything."
    ),
    tagline="Love finds its way home.",
    cast=[
        ("Actor One", "Prem Kapoor"),
        ("Actor Two", "Simran Singh"),
        ("Actor Three", "Raj Malhotra"),
        ("Actor Four", "Rose D'Souza"),
        ("Actor Five", "Sunny"),
        ("Actor Six", "Pooja Sharma"),
        ("Actor Seven", "Chaudhry Baldev Singh"),
        ("Actor Eight", "Kuljeet Singh"),
        ("Actor Nine", "Preeti Singh"),
        ("Actor Ten", "Lajwanti 'Lajjo' Singh"),
        ("Actor Eleven", "Dharamvir Malhotra"),
        ("Actor Twelve", "Vikram Rathore"),
        ("Actor Thirteen", "Shashi Khanna"),
        ("Actor Fourteen", "Dr. Kapoor"),
        ("Actor Fifteen", "Party Guest"),
        ("Actor Sixteen", "Simran's Grandmother"),
    ],
    crew=[
        ("Director Person", "Director", "Directing"),
        ("Writer Person", "Screenplay", "Writing"),
        ("Composer Person", "Original Music Composer", "Sound"),
    ],
    keywords=["wedding", "punjab"],
)

# A later film of a similar name, so that the year decides.
DDLJ_REMAKE = FakeFilm(
    id=999001,
    title="Dilwale Dulhania Le Jayenge",
    original_title="Dilwale Dulhania Le Jayenge",
    release_date="2021-05-01",
    popularity=90.0,
    cast=[("Someone Else", "Another Hero")],
)


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.findall(r"\w+", text)


class FakeTmdb:
    """The running server: its base URL, the key it accepts, the requests it saw, faults to inject."""

    def __init__(self, films: list[FakeFilm], api_key: str) -> None:
        self.films = {f.id: f for f in films}
        self.api_key = api_key
        self.base_url = ""
        self.requests: list[str] = []  # paths after /3, e.g. "/search/movie"
        self.queries: list[dict[str, str]] = []
        self._faults: list[tuple[str, int, str | None, str | None]] = []
        self._lock = threading.Lock()

    def count(self, prefix: str = "") -> int:
        """Requests whose path starts with `prefix` ("" counts all)."""
        with self._lock:
            return sum(1 for p in self.requests if p.startswith(prefix))

    def fail(
        self, path_prefix: str, status: int, times: int = 1, retry_after: str | None = None, body: str | None = None
    ) -> None:
        """The next `times` requests under `path_prefix` answer `status` (with TMDB's error body unless `body`)."""
        with self._lock:
            self._faults += [(path_prefix, status, retry_after, body)] * times

    def _take_fault(self, path: str) -> tuple[str, int, str | None, str | None] | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if path.startswith(fault[0]):
                    return self._faults.pop(index)
        return None

    def answer(self, path: str, query: dict[str, str], headers: Any) -> tuple[int, dict[str, str], str]:
        with self._lock:
            self.requests.append(path)
            self.queries.append(query)
        fault = self._take_fault(path)
        if fault is not None:
            _prefix, status, retry_after, body = fault
            extra = {"Retry-After": retry_after} if retry_after is not None else {}
            if body is not None:
                return status, {"Content-Type": "text/html", **extra}, body
            return (
                status,
                extra,
                json.dumps(ERRORS.get(status, {"status_code": status, "success": False, "status_message": "error"})),
            )
        bearer = str(headers.get("Authorization") or "")
        if query.get("api_key") != self.api_key and bearer != f"Bearer {self.api_key}":
            return 401, {}, json.dumps(ERRORS[401])
        if path == "/search/movie":
            return 200, {}, json.dumps(self._search(query))
        match = re.fullmatch(r"/movie/(\d+)(/credits|/keywords|/alternative_titles)?", path)
        film = self.films.get(int(match.group(1))) if match else None
        if film is None:
            return 404, {}, json.dumps(ERRORS[404])
        body = {
            None: film.details,
            "/credits": film.credits,
            "/keywords": film.keyword_list,
            "/alternative_titles": film.titles,
        }[match.group(2)]()
        return 200, {}, json.dumps(body, ensure_ascii=False)

    def _search(self, query: dict[str, str]) -> dict[str, Any]:
        wanted = _words(query.get("query", ""))
        year = query.get("year") or query.get("primary_release_year")
        results = []
        for film in self.films.values():
            names = _words(film.title) + _words(film.original_title)
            if wanted and all(w in names for w in wanted) and (not year or film.release_date.startswith(year)):
                results.append(film.summary())
        results.sort(key=lambda r: -r["popularity"])
        return {"page": 1, "results": results, "total_pages": 1 if results else 0, "total_results": len(results)}


def _handler(fake: FakeTmdb) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            path = url.path[2:] if url.path.startswith("/3/") else url.path
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, headers, body = fake.answer(path, query, self.headers)
            data = body.encode("utf-8")
            self.send_response(status)
            headers = {"Content-Type": "application/json;charset=utf-8", **headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve_tmdb(films: list[FakeFilm] | None = None, api_key: str = API_KEY) -> Iterator[FakeTmdb]:
    """Run the fake on 127.0.0.1 (a free port) for the `with` block; yields it (use `.base_url`)."""
    fake = FakeTmdb(list(films) if films is not None else [DDLJ, KAL_HO_NAA_HO], api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/3"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-tmdb", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
