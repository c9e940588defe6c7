"""The output volume: a run needs its job folder writable and room for what it will write.

Checked before a run starts (a read-only or nearly full volume is refused in a second, naming the
folder), and again when a write fails in the middle of a run (another job filled the disk): the
error then says which folder and what to do, and the stages finished before it are kept.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

SAMPLE_RATE = 16_000  # demux writes the dialogue as 16 kHz mono 16-bit PCM
HEADROOM_BYTES = 16 * 2**20  # documents, logs, Prefect's result records
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
DISK_WORDS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


class OutputVolumeError(OSError):
    """The job folder cannot take the run's files; says which folder and what to do."""


def bytes_a_run_needs(duration_s: float | None, input_size: int, to_run: Iterable[str]) -> int:
    """What the stages still to run will write: the dialogue audio (demux), a copy of the film (mux)."""
    stages = set(to_run)
    audio = int((duration_s or 0.0) * SAMPLE_RATE * 2) if "demux" in stages else 0
    film = input_size if "mux" in stages else 0
    return audio + film + HEADROOM_BYTES


def writable_with_room(folder: Path, needed: int) -> None:
    """OutputVolumeError unless a file can be made in `folder` and `needed` bytes are free there."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputVolumeError(
            exc.errno,
            f"the job folder {folder} is not writable ({exc.strerror}); make it writable or move OUT_ROOT, "
            "then run the job again",
        ) from exc
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OutputVolumeError(
            errno.ENOSPC,
            f"the job folder {folder} has {_mib(free)} free, this run needs about {_mib(needed)} (the dialogue "
            "audio and a copy of the film); free some space or move OUT_ROOT, then run the job again",
        )


def disk_failure(exc: BaseException, folder: Path) -> str | None:
    """A clear message when `exc` (or what caused it) is the volume refusing a write; None otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OutputVolumeError):
            return str(seen.strerror)
        text = str(seen)
        if (isinstance(seen, OSError) and seen.errno in DISK_ERRNOS) or any(w in text for w in DISK_WORDS):
            reason = seen.strerror if isinstance(seen, OSError) and seen.strerror else _disk_words(text)
            return (
                f"writing under {folder} failed: {reason}; free some space (or make the folder writable) and run "
                "the job again: the stages that finished are kept"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_words(text: str) -> str:
    return next((w for w in DISK_WORDS if w in text), text[:200])


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"
