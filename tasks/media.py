"""ffprobe facts about a media file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import ffmpeg

SAMPLE_RATE = 16000  # what Whisper, Silero and the speaker encoders take: the demuxed audio's rate


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


def probe(path: Path) -> dict[str, Any]:
    require_tool("ffprobe")
    try:
        return ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise MediaError(f"{path} is not readable media: {detail[-1] if detail else 'ffprobe failed'}") from exc


def audio_streams(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
