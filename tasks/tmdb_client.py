"""A small TMDB v3 HTTP client: settable base URL, retries that honour Retry-After, a disk cache.

Why not tmdbv3api (checked at version 1.10): it keeps the API key in `os.environ` (process-wide,
visible to every child process), hard-codes `https://api.themoviedb.org/3` in `TMDb.__init__`
(only a private attribute overrides it), shares one class-level session, parses every answer as
JSON without looking at the status code (a 500 with an HTML body raises a JSONDecodeError, a 429
is only noticed through `X-RateLimit-Remaining`, `Retry-After` is ignored, 5xx is never retried)
and caches answers only in memory. So the HTTP lives here, on `requests` (a dependency of
tmdbv3api), and is injectable: the default base URL is the real TMDB API, tests point it at a
local server. The API key never reaches a log line, an error message or the cache.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

TMDB_API = "https://api.themoviedb.org/3"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class TmdbError(RuntimeError):
    """Base of the client's errors; messages never contain the API key."""


class TmdbAuthError(TmdbError):
    """401: the key is wrong or revoked. Retrying does not help."""


class TmdbNotFound(TmdbError):
    """404: no such resource."""


class TmdbUnavailable(TmdbError):
    """Network failure, or 429/5xx after every attempt: may heal later."""


class TmdbCacheError(TmdbError):
    """The answer cache folder cannot be written: a setting to fix, not a network problem."""


class AnswerCache:
    """JSON answers on disk, one file per request (base URL, path, params; never the key).

    A second job of the same film reads everything from here and sends no request.
    """

    def __init__(self, folder: Path, max_age_s: float | None) -> None:
        self.folder = folder
        self.max_age_s = max_age_s

    def _path(self, base_url: str, path: str, params: Mapping[str, Any]) -> Path:
        key = json.dumps([base_url.rstrip("/"), path, sorted((k, str(v)) for k, v in params.items())])
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def get(self, base_url: str, path: str, params: Mapping[str, Any]) -> Any | None:
        file = self._path(base_url, path, params)
        try:
            if self.max_age_s is not None and time.time() - file.stat().st_mtime > self.max_age_s:
                return None
            return json.loads(file.read_text(encoding="utf-8"))["body"]
        except (OSError, ValueError, KeyError):
            return None

    def put(self, base_url: str, path: str, params: Mapping[str, Any], body: Any) -> None:
        file = self._path(base_url, path, params)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{file.stem}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as fh:
                    json.dump({"path": path, "params": dict(params), "body": body}, fh)
                os.replace(tmp, file)  # atomic: a concurrent job reads the old file or the new one
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            raise TmdbCacheError(
                f"cannot write the TMDB answer cache {self.folder} ({exc}); set TMDB__CACHE_DIR to a writable folder"
            ) from exc


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class TmdbClient:
    """GET TMDB v3 resources as JSON, cached on disk, retrying 429/5xx and network errors with backoff.

    `api_key` may be a v3 key (sent as the `api_key` parameter) or a v4 read-access token (a JWT,
    sent as a Bearer header); TMDB v3 endpoints accept both.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = TMDB_API,
        language: str = "en-US",
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        cache: AnswerCache | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: logging.Logger | None = None,
    ) -> None:
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self.language = language
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.cache = cache
        self.session = session or requests.Session()
        self.sleep = sleep
        self.log = log or logging.getLogger(__name__)
        self.requests_sent = 0
        self.cache_hits = 0

    def close(self) -> None:
        self.session.close()

    def _auth(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._key.startswith("eyJ") and self._key.count(".") == 2:
            return {}, {"Authorization": f"Bearer {self._key}"}
        return {"api_key": self._key}, {}

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def get(self, path: str, **params: Any) -> Any:
        """The JSON answer for `path` (e.g. "/movie/19404/credits"), from the cache when it holds it."""
        params = {"language": self.language, **{k: v for k, v in params.items() if v is not None}}
        if self.cache is not None:
            cached = self.cache.get(self.base_url, path, params)
            if cached is not None:
                self.cache_hits += 1
                return cached
        body = self._fetch(path, params)
        if self.cache is not None:
            self.cache.put(self.base_url, path, params, body)
        return body

    def _fetch(self, path: str, params: dict[str, Any]) -> Any:
        auth_params, headers = self._auth()
        headers = {"Accept": "application/json", **headers}
        url = f"{self.base_url}/{path.lstrip('/')}"
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            wait: float | None = None
            try:
                self.requests_sent += 1
                answer = self.session.get(
                    url, params={**params, **auth_params}, headers=headers, timeout=self.timeout_s
                )
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__} talking to {self.base_url}: {self._redact(str(exc))[:200]}"
            else:
                if answer.status_code == 200:
                    try:
                        return answer.json()
                    except ValueError as exc:
                        raise TmdbError(f"{path}: TMDB answered 200 with a body that is not JSON") from exc
                message = _status_message(answer)
                if answer.status_code == 401:
                    raise TmdbAuthError(f"TMDB refused the API key (401: {message}); check TMDB_API_KEY")
                if answer.status_code == 404:
                    raise TmdbNotFound(f"{path}: not found on TMDB (404: {message})")
                if answer.status_code not in RETRY_STATUSES:
                    raise TmdbError(f"{path}: TMDB answered {answer.status_code} ({message})")
                problem = f"{path}: TMDB answered {answer.status_code} ({message})"
                wait = retry_after_s(answer.headers.get("Retry-After"))
            if attempt == self.max_attempts:
                break
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1) * (1 + 0.1 * random.random())
            if wait > self.max_wait_s:
                problem += f"; asked to wait {wait:.0f} s, more than TMDB__MAX_WAIT_S={self.max_wait_s:g}"
                break
            self.log.warning("%s; attempt %d of %d, retrying in %.1f s", problem, attempt, self.max_attempts, wait)
            self.sleep(wait)
        raise TmdbUnavailable(f"{problem} (after {attempt} attempt(s))")


def _status_message(answer: requests.Response) -> str:
    """TMDB's own `status_message` when the body has one, else the reason phrase."""
    try:
        body = answer.json()
    except ValueError:
        return answer.reason or "no message"
    if isinstance(body, dict):
        return str(body.get("status_message") or body.get("errors") or answer.reason)
    return answer.reason or "no message"
