"""The progress board: live lines redrawn in place on a terminal, plain lines on a pipe."""

from __future__ import annotations

import io

from flows.progress import ProgressBoard, Row, row_text
from tasks.kernel import StageEvent

STAGES = ["demux", "asr"]


def events(board: ProgressBoard) -> None:
    board(StageEvent("demux", "cached"))
    board(StageEvent("asr", "running"))
    for fraction in (0.1, 0.3, 0.35, 0.6, 0.9):
        board(StageEvent("asr", "progress", fraction, f"decoded {fraction:.0%}"))
    board(StageEvent("asr", "done"))


def test_a_pipe_gets_a_line_per_change_and_per_quarter() -> None:
    out = io.StringIO()
    events(ProgressBoard(STAGES, out, live=False))
    lines = [line.split()[:2] for line in out.getvalue().splitlines()]
    assert lines == [
        ["demux", "cached"],
        ["asr", "0%"],
        ["asr", "30%"],
        ["asr", "60%"],
        ["asr", "90%"],
        ["asr", "done"],
    ]
    assert "\x1b" not in out.getvalue()


def test_a_stage_that_goes_on_after_its_part_keeps_its_line() -> None:
    """lyrics_detection's music features report under its name; its text half then starts: one stage, one count."""
    out = io.StringIO()
    board = ProgressBoard(["lyrics_detection"], out, live=False)
    board(StageEvent("lyrics_detection", "running"))
    board(StageEvent("lyrics_detection", "progress", 0.9, "music features done"))
    board(StageEvent("lyrics_detection", "running"))
    assert board.rows["lyrics_detection"].fraction == 0.9
    board(StageEvent("lyrics_detection", "done"))
    lines = [line.split()[:2] for line in out.getvalue().splitlines()]
    assert lines == [["lyrics_detection", "0%"], ["lyrics_detection", "90%"], ["lyrics_detection", "done"]]


def test_a_terminal_gets_one_line_per_stage_redrawn_in_place() -> None:
    out = io.StringIO()
    board = ProgressBoard(STAGES, out, live=True)
    events(board)
    frames = out.getvalue().split("\x1b[2F")  # each redraw goes back up over the two stage lines
    assert len(frames) >= 3
    last = [line.replace("\x1b[2K", "") for line in frames[-1].splitlines()]
    assert len(last) == 2 and last[0].split()[:2] == ["demux", "cached"] and last[1].split()[:2] == ["asr", "done"]


def test_a_running_stage_shows_percent_elapsed_and_time_left() -> None:
    row = Row(state="running", fraction=0.25, message="decoded 2/8 windows", started=100.0)
    assert row_text("asr", row, now=130.0).split() == ["asr", "25%", "0:30", "~1:30", "left", "decoded", "2/8",
                                                       "windows"]  # fmt: skip
    assert row_text("tmdb", Row(state="skipped", message="no TMDB key"), 0.0).split()[:2] == ["tmdb", "skipped"]
