"""The live progress board of `python -m flows.subtitle JOB_ID`: one line per stage, instead of Prefect's log lines.

On a terminal the lines are redrawn in place (stage, state or percent, elapsed, estimated time left,
the stage's last message); on a pipe or in CI each change is a plain line of its own (and progress
only every quarter), so a log file stays readable. `--verbose` keeps Prefect's console log as well.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from tasks.kernel import StageEvent

REDRAW_S = 0.25  # a terminal is redrawn at most this often
PLAIN_STEP = 0.25  # a pipe gets a progress line each time a stage passes another quarter


@dataclass
class Row:
    state: str = "pending"
    fraction: float = 0.0
    message: str = ""
    started: float | None = None
    ended: float | None = None


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def row_text(name: str, row: Row, now: float) -> str:
    """One stage's line: `asr   62%  0:41  ~0:25 left  decoded 3/5 windows`."""
    elapsed = ((row.ended or now) - row.started) if row.started is not None else None
    if row.state == "running":
        status = f"{100 * row.fraction:3.0f}%"
        left = ""
        if elapsed is not None and row.fraction >= 0.05:
            left = f"~{clock(elapsed * (1 - row.fraction) / row.fraction)} left"
        tail = f"{clock(elapsed or 0):>6}  {left:<11} {row.message}"
    else:
        status = row.state
        tail = f"{clock(elapsed):>6}" if elapsed is not None and row.state in ("done", "failed") else ""
        if row.message and row.state in ("failed", "skipped"):
            tail += f"  {row.message}"
    return f"  {name:<24} {status:<8}{tail}".rstrip()


class ProgressBoard:
    """Follows the stages through `tasks.kernel.watch_stages` and draws them on `stream`."""

    def __init__(self, stages: list[str], stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.rows = {name: Row() for name in stages}
        self.lock = threading.Lock()
        self.drawn = 0  # lines on the terminal from the last redraw
        self.last_draw = 0.0
        self.told: dict[str, float] = {}  # plain mode: the last quarter reported per stage

    def __call__(self, event: StageEvent) -> None:
        with self.lock:
            row = self.rows.setdefault(event.stage, Row())
            now = time.monotonic()
            if event.state == "progress":
                row.state, row.fraction, row.message = "running", event.fraction or 0.0, event.message
                row.started = row.started or now
            else:
                # A stage whose part has run (lyrics_detection after its music features) goes on, not over.
                going_on = event.state == "running" and row.state == "running" and row.ended is None
                if going_on:
                    return
                row.state, row.message = event.state, event.message
                if event.state == "running":
                    row.started, row.ended, row.fraction = now, None, 0.0
                elif row.started is not None:
                    row.ended = now
            if self.live:
                if event.state != "progress" or now - self.last_draw >= REDRAW_S:
                    self._redraw(now)
            else:
                self._plain(event, row, now)

    def _redraw(self, now: float) -> None:
        lines = [row_text(name, row, now) for name, row in self.rows.items()]
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self.drawn, self.last_draw = len(lines), now

    def _plain(self, event: StageEvent, row: Row, now: float) -> None:
        if event.state == "progress":
            quarter = int((event.fraction or 0.0) / PLAIN_STEP) * PLAIN_STEP
            if quarter <= self.told.get(event.stage, 0.0) or quarter >= 1.0:
                return
            self.told[event.stage] = quarter
        elif event.state == "running":
            self.told[event.stage] = 0.0
        self.stream.write(row_text(event.stage, row, now).strip() + "\n")
        self.stream.flush()


def quiet_prefect_console() -> None:
    """Prefect's console log shows warnings and errors only; its API log and the stage log files keep everything."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.WARNING)


@contextmanager
def followed(stages: list[str], verbose: bool, stream: TextIO | None = None) -> Iterator[ProgressBoard]:
    """The board follows the run inside this block; without `verbose`, Prefect's console log is quiet."""
    from tasks.kernel import watch_stages

    board = ProgressBoard(stages, stream)
    if not verbose:
        quiet_prefect_console()
    unwatch = watch_stages(board)
    try:
        yield board
    finally:
        unwatch()
