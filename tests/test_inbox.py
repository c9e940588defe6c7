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


def grow(path: Path, data: bytes = b"g" * 10) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def test_a_film_still_being_copied_waits_until_it_holds_still(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    film = touch(inbox / "film.mkv", b"a" * 10)
    ledger = Ledger(inbox=str(inbox))
    assert stable_files(inbox, ledger) == []  # first sight: only noted
    grow(film)
    assert stable_files(inbox, ledger) == []  # grew since the last scan
    assert ledger.seen[str(film)].changes == 1
    assert stable_files(inbox, ledger) == [film]  # same size and mtime as the scan before
    assert ledger.unsettled == {}


def test_a_file_that_never_settles_is_recorded_and_not_taken(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    film = touch(inbox / "endless.mkv", b"a")
    ledger = Ledger(inbox=str(inbox))
    stable_files(inbox, ledger, max_changes=3)
    for scan in range(1, 6):
        grow(film)
        assert stable_files(inbox, ledger, max_changes=3) == []
        assert (str(film) in ledger.unsettled) == (scan > 3), scan
    unsettled = ledger.unsettled[str(film)]
    assert unsettled.changes == 5 and unsettled.size == film.stat().st_size
    assert "still changing after 5 scans" in unsettled.note
    # Once it holds still it is taken after all, and no longer listed as unsettled.
    assert stable_files(inbox, ledger, max_changes=3) == [film]
    assert ledger.unsettled == {}


def test_the_watch_flow_reports_a_file_that_never_settles(prefect_server: str, tmp_path: Path, out_root: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.inbox import ledger_path
    from flows.watch import watch_folder

    inbox = tmp_path / "inbox"
    film = touch(inbox / "Growing Film (2026).mkv", b"a")
    states = []
    for _ in range(3):  # seen, changed once, changed twice: past the limit of one
        states.append(watch_folder(str(inbox), max_unsettled_scans=1, return_state=True))
        grow(film)
    counts = [state.result() for state in states]
    assert [c["unsettled"] for c in counts] == [0, 0, 1] and all(c["started"] == 0 for c in counts)
    ledger = Ledger.model_validate_json(ledger_path(out_root, inbox).read_text())
    assert list(ledger.unsettled) == [str(film)] and ledger.films == {}
    assert not list(out_root.glob("[0-9]*/*/*/*/*")) and film.exists()  # no job prepared

    APILogHandler().flush()
    run_id = states[-1].state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert any("Growing Film (2026).mkv: still changing after 2 scans" in log.message for log in logs), logs
