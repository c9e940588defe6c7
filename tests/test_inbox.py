"""The watch folder's file rules: stable files only, media only, no hidden, temp or escaping links."""

from __future__ import annotations

import os
from pathlib import Path

from flows.inbox import Entry, Ledger, candidates, needs_run, stable_files


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_only_media_files_that_are_not_hidden_temporary_or_escaping(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "elsewhere"
    film = touch(inbox / "Film (2001).mkv")
    touch(inbox / "season" / "song.MP3")
    touch(inbox / ".hidden.mkv")
    touch(inbox / ".partial" / "copying.mkv")
    touch(inbox / "film.mkv.part")
    touch(inbox / "notes.txt")
    secret = touch(outside / "secret.mkv")
    (inbox / "link-out.mkv").symlink_to(secret)
    (inbox / "link-in.mkv").symlink_to(film)
    names = sorted(p.relative_to(inbox).as_posix() for p in candidates(inbox))
    assert names == ["Film (2001).mkv", "link-in.mkv", "season/song.MP3"]


def test_a_file_is_taken_only_when_unchanged_on_two_scans(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    film = touch(inbox / "film.mkv", b"a" * 10)
    ledger = Ledger(inbox=str(inbox))
    assert stable_files(inbox, ledger) == []
    with film.open("ab") as fh:  # still being copied
        fh.write(b"b" * 10)
    assert stable_files(inbox, ledger) == []
    assert stable_files(inbox, ledger) == [film]
    os.utime(film, ns=(1, 1))
    assert stable_files(inbox, ledger) == []


def test_failed_films_run_again_only_when_changed(tmp_path: Path) -> None:
    film = touch(tmp_path / "film.mkv")
    stat = film.stat()
    assert needs_run(None, film)
    done = Entry(path=str(film), size=stat.st_size, mtime_ns=stat.st_mtime_ns, state="done")
    assert not needs_run(done, film)
    failed = done.model_copy(update={"state": "failed"})
    assert not needs_run(failed, film)
    os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert needs_run(failed, film)


def test_a_file_that_is_not_a_film_is_noted_and_left_in_place(
    prefect_server: str, tmp_path: Path, out_root: Path
) -> None:
    from flows.inbox import ledger_path
    from flows.watch import watch_folder

    inbox = tmp_path / "inbox"
    bad = touch(inbox / "broken.mkv", b"not a film at all")
    first, second = watch_folder(str(inbox)), watch_folder(str(inbox))
    assert first["started"] == second["started"] == 0
    ledger = Ledger.model_validate_json(ledger_path(out_root, inbox).read_text())
    (entry,) = ledger.films.values()
    assert entry.state == "failed" and "not a usable film" in entry.note and entry.path == str(bad)
    assert bad.exists()
    assert watch_folder(str(inbox))["started"] == 0  # unchanged: not tried again
