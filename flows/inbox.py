"""The watch folder's plain logic: which inbox files are ready, and the ledger of what was done.

A file is ready when its size and modification time are the same on two scans in a row (a
film still being copied is left alone). A file still changing after `max_changes` scans in a
row is recorded as unsettled, to be reported; it is never run while it changes. The ledger is
keyed by the film's fingerprint, so the same film never runs twice, whatever its name or
wherever it was moved.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from settings.jobs import now_iso, write_text_atomic

MEDIA_EXTENSIONS = {
    ".mkv",
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".webm",
    ".ts",
    ".m2ts",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".wav",
    ".mp3",
    ".m4a",
    ".aac",
    ".flac",
    ".ogg",
    ".opus",
    ".wma",
    ".mka",
}
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~", ".!qb", ".swp")


MAX_UNSETTLED_SCANS = 30  # at the default 60 s interval: still changing after half an hour


class Seen(BaseModel):
    size: int
    mtime_ns: int
    changes: int = 0  # scans in a row on which the file differed from the scan before
    first_seen: str = Field(default_factory=now_iso)


class Unsettled(BaseModel):
    """A file still changing after the limit: reported, not run (a stalled or endless copy)."""

    path: str
    size: int
    changes: int
    first_seen: str
    note: str
    updated: str = Field(default_factory=now_iso)


class Entry(BaseModel):
    path: str
    size: int
    mtime_ns: int
    state: Literal["submitted", "done", "failed"] = "submitted"
    job_id: str | None = None
    flow_run_id: str | None = None
    note: str | None = None
    updated: str = Field(default_factory=now_iso)


class Ledger(BaseModel):
    inbox: str
    seen: dict[str, Seen] = Field(default_factory=dict)  # path -> last scan's size and mtime
    films: dict[str, Entry] = Field(default_factory=dict)  # fingerprint -> what was done
    unsettled: dict[str, Unsettled] = Field(default_factory=dict)  # path -> file that never settled


def ledger_path(out_root: Path, inbox: Path) -> Path:
    digest = hashlib.sha256(str(inbox.resolve()).encode()).hexdigest()[:12]
    return out_root / "watch" / f"ledger-{digest}.json"


@contextmanager
def open_ledger(path: Path, inbox: Path) -> Iterator[Ledger]:
    """The ledger, locked against a second watcher, saved atomically on the way out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = Ledger.model_validate_json(path.read_text()) if path.is_file() else Ledger(inbox=str(inbox))
        yield ledger
        write_text_atomic(path, ledger.model_dump_json(indent=2))


def candidates(inbox: Path) -> list[Path]:
    """Media files in the inbox: no hidden or temporary files, no links that lead out of it."""
    root = inbox.resolve()
    out = []
    for path in sorted(inbox.rglob("*")):
        rel = path.relative_to(inbox)
        if any(part.startswith(".") for part in rel.parts) or path.name.endswith(TEMP_SUFFIXES):
            continue
        if path.suffix.lower() not in MEDIA_EXTENSIONS:
            continue
        real = path.resolve()
        if path.is_symlink() and not real.is_relative_to(root):
            continue
        if real.is_file():
            out.append(path)
    return out


def stable_files(inbox: Path, ledger: Ledger, max_changes: int = MAX_UNSETTLED_SCANS) -> list[Path]:
    """Files whose size and mtime match the previous scan; remembers this scan for the next one.

    A file that changed on more than `max_changes` scans in a row goes into `ledger.unsettled`
    (and stays out of the ready list); it leaves that list once it is stable, or gone.
    """
    now: dict[str, Seen] = {}
    ready = []
    for path in candidates(inbox):
        stat = path.stat()
        before = ledger.seen.get(str(path))
        seen = Seen(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        if before is not None:
            seen.first_seen = before.first_seen
            same = (before.size, before.mtime_ns) == (seen.size, seen.mtime_ns)
            seen.changes = 0 if same else before.changes + 1
            if same:
                ready.append(path)
        now[str(path)] = seen
        if seen.changes > max_changes:
            ledger.unsettled[str(path)] = _unsettled(path, seen)
    ledger.seen = now
    ledger.unsettled = {p: u for p, u in ledger.unsettled.items() if p in now and now[p].changes > 0}
    return ready


def _unsettled(path: Path, seen: Seen) -> Unsettled:
    note = (
        f"still changing after {seen.changes} scans since {seen.first_seen} (now {seen.size} bytes): "
        "not run until its size and mtime hold still"
    )
    return Unsettled(path=str(path), size=seen.size, changes=seen.changes, first_seen=seen.first_seen, note=note)


def needs_run(entry: Entry | None, path: Path) -> bool:
    """New films run; a failed one only when it changed since (or the user removed its entry)."""
    if entry is None:
        return True
    if entry.state != "failed":
        return False
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns) != (entry.size, entry.mtime_ns)
