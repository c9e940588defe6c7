"""ffprobe facts about a media file, and the cheap checks `prepare` makes before anything is created.

ffmpeg and ffprobe are always given argument lists (never a shell) and absolute paths, so a
file name with spaces, quotes, `$( )`, or one that begins with `-`, is only ever a file name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import ffmpeg

SAMPLE_RATE = 16000  # what Whisper, Silero and the speaker encoders take: the demuxed audio's rate
MIN_DURATION_S = 1.0  # shorter media hold no line worth a subtitle (an event lasts at least 5/6 s)
END_PACKETS = 400  # audio packets read near the end to see that the data is there (a few seconds' worth)
END_SLACK_S = 2.0  # how far before the stated end the last readable audio may stop in a whole file

_FFMPEG_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*")


class MediaError(ValueError):
    """The file is not usable media (unreadable, or no audio)."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed. Run `bash scripts/setup.sh` (Debian/Ubuntu: apt-get install -y ffmpeg "
            "espeak-ng sox; macOS: brew install ffmpeg espeak-ng sox)."
        )
    return path


def media_arg(path: Path) -> str:
    """The path as ffmpeg should see it: absolute, so a name beginning with `-` is never taken for an option."""
    return str(Path(path).absolute())


def ffmpeg_complaint(stderr: bytes | str | None, path: Path | None = None, lines: int = 2) -> str:
    """The last distinct lines of ffmpeg's stderr, without `[mov @ 0x..]` prefixes or the file name, on one line."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    names = {str(path), media_arg(path)} if path is not None else set()
    found: list[str] = []
    for raw in text.strip().splitlines():
        line = _FFMPEG_PREFIX.sub("", raw.strip())
        for name in names:
            line = line.removeprefix(f"{name}: ")
        if line and line not in found:
            found.append(line)
    return "; ".join(found[-lines:])


def probe(path: Path) -> dict[str, Any]:
    require_tool("ffprobe")
    try:
        return ffmpeg.probe(media_arg(path))
    except ffmpeg.Error as exc:
        detail = ffmpeg_complaint(exc.stderr, path) or "ffprobe failed"
        raise MediaError(f"{path} is not readable media ({detail})") from exc


def audio_streams(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]


def video_streams(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Real video streams: cover art (an attached picture) is not one."""
    return [
        s
        for s in info.get("streams", [])
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]


def media_duration(info: dict[str, Any]) -> float | None:
    """Seconds, from the container, else the first stream that states it; None when nothing says."""
    values = [info.get("format", {}).get("duration")] + [s.get("duration") for s in info.get("streams", [])]
    for value in values:
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except ValueError:
            continue
    return None


def _seconds(value: Any) -> float | None:
    """ffprobe's `12.5` or Matroska's `DURATION` tag `00:00:12.500000000` as seconds; None for N/A."""
    text = str(value or "").strip()
    try:
        if text.count(":") == 2:
            hours, minutes, seconds = text.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return float(text)
    except ValueError:
        return None


def audio_span(info: dict[str, Any]) -> tuple[float, float] | None:
    """(start, duration) of the first audio stream, from its own facts where stated, else the container's."""
    streams = audio_streams(info)
    if not streams:
        return None
    stream = streams[0]
    tags = {k.upper(): v for k, v in (stream.get("tags") or {}).items()}
    duration = _seconds(stream.get("duration")) or _seconds(tags.get("DURATION")) or media_duration(info)
    if not duration:
        return None
    start = _seconds(stream.get("start_time"))
    if start is None:
        start = _seconds(info.get("format", {}).get("start_time")) or 0.0
    return start, duration


def last_audio_time(path: Path, from_s: float) -> tuple[float | None, str]:
    """The latest timestamp of the first audio stream's packets read from `from_s` on, and ffprobe's complaint.

    Packets are read, not decoded, and at most END_PACKETS of them: cheap on a film of any size.
    """
    command = [require_tool("ffprobe"), "-v", "error", "-select_streams", "a:0"]
    command += ["-read_intervals", f"{from_s:.3f}%+#{END_PACKETS}", "-show_entries", "packet=pts_time,dts_time"]
    command += ["-of", "csv=p=0", media_arg(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    times = []
    for line in done.stdout.splitlines():
        for field in line.split(",")[:2]:
            try:
                times.append(float(field))
            except ValueError:
                continue
    return (max(times) if times else None), ffmpeg_complaint(done.stderr, path)


def truncation(path: Path, info: dict[str, Any]) -> str | None:
    """Why the file looks cut short (its audio stops well before the stated end), or None.

    ffprobe reads a truncated MP4 whose index comes first (`+faststart`) or a cut Matroska file
    happily, and ffmpeg then decodes what is there and exits 0: half a film would be subtitled
    without a word. Reading a few packets just before the stated end tells the two apart.
    """
    span = audio_span(info)
    if span is None:
        return None
    begin, duration = span
    end = begin + duration
    last, complaint = last_audio_time(path, max(begin, end - 1.0))
    if last is not None and last >= end - END_SLACK_S:
        return None
    found = f"stops at {last - begin:.1f} s" if last is not None else "cannot be read near its end"
    detail = f" ({complaint})" if complaint else ""
    return f"it says {duration:.1f} s but its audio {found}{detail}"
