"""mux: a copy of the film with the subtitles as tracks, checked with ffprobe.

Video and audio are copied (no re-encoding); the target-language track (English) comes
first and is the default, the source-language track follows. Tracks carry ISO 639-2 tags
(`en` -> `eng`, `hi` -> `hin`) and a title. MKV by default (SRT tracks), MP4 with
`mov_text` when asked; audio with no video (an `.m4a`, a `.wav`) becomes `.mka` or `.m4a`.
A track with no events (a silent film) is left out, and with none left the stage is skipped
with a note, since ffmpeg cannot read an empty SRT and a copy without subtitles helps nobody.
The file is written to a temporary name in the job's `output/` and renamed only after
ffprobe has confirmed it; the input film is only read.

Overwriting: an existing `<stem>.subtitled.<ext>` is replaced only when MUX__OVERWRITE is
true, or when it is this job's own previous output: the stage keeps `mux.json` in its folder
with the name, size and fingerprint (settings.jobs.fingerprint) of what it last wrote, and a
file that still matches it is ours (a re-run after a cache miss or a changed setting). Any
other file is left alone and the stage fails with a PermanentError saying what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from settings.jobs import fingerprint
from settings.stages import MuxSettings
from tasks.contract import PermanentError, StageContext, StageResult
from tasks.documents import SubtitleFormat, SubtitleSet
from tasks.kernel import StageSkipped, stage
from tasks.media import MediaError, media_arg, probe, require_tool, video_streams

RECORD = "mux.json"

# ISO 639-1 -> (ISO 639-2/B, English name). Matroska and MP4 both take 639-2 codes.
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("eng", "English"),
    "hi": ("hin", "Hindi"),
    "ur": ("urd", "Urdu"),
    "pa": ("pan", "Punjabi"),
    "ta": ("tam", "Tamil"),
    "te": ("tel", "Telugu"),
    "ml": ("mal", "Malayalam"),
    "kn": ("kan", "Kannada"),
    "mr": ("mar", "Marathi"),
    "bn": ("ben", "Bengali"),
    "gu": ("guj", "Gujarati"),
    "or": ("ori", "Odia"),
    "as": ("asm", "Assamese"),
    "ne": ("nep", "Nepali"),
    "sa": ("san", "Sanskrit"),
    "fr": ("fre", "French"),
    "de": ("ger", "German"),
    "es": ("spa", "Spanish"),
    "it": ("ita", "Italian"),
    "pt": ("por", "Portuguese"),
    "ja": ("jpn", "Japanese"),
    "zh": ("chi", "Chinese"),
    "ko": ("kor", "Korean"),
    "ar": ("ara", "Arabic"),
    "ru": ("rus", "Russian"),
    "fa": ("per", "Persian"),
    "tr": ("tur", "Turkish"),
    "nl": ("dut", "Dutch"),
}
_THREE = {three: two for two, (three, _) in LANGUAGES.items()}
# What ffprobe reports for each container's subtitle codec, and the encoder that makes it.
SUBTITLE_CODEC = {
    "mkv": {"srt": "subrip", "ass": "ass", "vtt": "webvtt"},
    "mp4": {"srt": "mov_text", "ass": "mov_text", "vtt": "mov_text"},
}
ENCODER = {"subrip": "srt", "ass": "ass", "webvtt": "webvtt", "mov_text": "mov_text"}
# Audio with no video: the names players expect for the same containers.
AUDIO_ONLY_EXTENSION = {"mkv": "mka", "mp4": "m4a"}
# MP4 keeps no per-track title; players show the handler name instead.
TITLE_TAG = {"mkv": "title", "mp4": "handler_name"}


def iso639_2(code: str) -> str:
    """`en` -> `eng`; a known three-letter code stays; anything else is `und`."""
    value = (code or "").strip().lower().split("-")[0].split("_")[0]
    if value in LANGUAGES:
        return LANGUAGES[value][0]
    if value in _THREE or (len(value) == 3 and value.isalpha()):
        return value
    return "und"


def language_name(code: str) -> str:
    value = (code or "").strip().lower().split("-")[0]
    two = value if value in LANGUAGES else _THREE.get(value)
    return LANGUAGES[two][1] if two else value or "Unknown"


@dataclass(frozen=True)
class Track:
    language: str  # as subtitle_gen named it (en, hi)
    path: Path
    fmt: str  # srt, ass, vtt

    @property
    def tag(self) -> str:
        return iso639_2(self.language)

    @property
    def title(self) -> str:
        return language_name(self.language)


def choose_format(files: dict[SubtitleFormat, str]) -> SubtitleFormat:
    """The subtitle format to mux: SRT first (plays everywhere), then ASS, then WebVTT."""
    for fmt in ("srt", "ass", "vtt"):
        if fmt in files:
            return fmt
    raise PermanentError(
        f"subtitle_gen wrote no SRT, ASS or WebVTT file ({sorted(files)}); set SUBTITLE_GEN__FORMATS to include srt."
    )


def output_extension(container: str, info: dict[str, Any]) -> str:
    """The container's own extension for a film; `mka` / `m4a` for audio alone (cover art is no video)."""
    return container if video_streams(info) else AUDIO_ONLY_EXTENSION[container]


def output_name(input_path: Path, extension: str) -> str:
    return f"{input_path.stem}.subtitled.{extension}"


def streams_of(info: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [s for s in info.get("streams", []) if s.get("codec_type") == kind]


def mux_command(source: Path, tracks: list[Track], target: Path, container: str, info: dict[str, Any]) -> Any:
    """The ffmpeg-python graph: copy video and audio, add the tracks, tag them, English default."""
    film = ffmpeg.input(media_arg(source))
    subs = [ffmpeg.input(media_arg(track.path)) for track in tracks]
    first_sub = len(streams_of(info, "video")) + len(streams_of(info, "audio"))
    codec = SUBTITLE_CODEC[container]
    options: dict[str, Any] = {"c:v": "copy", "c:a": "copy", "map_metadata": 0, "map_chapters": 0}
    for i, track in enumerate(tracks):
        options[f"c:s:{i}"] = ENCODER[codec[track.fmt]]
        options[f"metadata:s:s:{i}"] = f"language={track.tag}"
        options[f"metadata:s:{first_sub + i}"] = f"{TITLE_TAG[container]}={track.title}"
        options[f"disposition:s:{i}"] = "default" if i == 0 else "0"
    if container == "mp4":
        options["movflags"] = "+faststart"
    streams = [film["v?"], film["a"]] + [sub["s"] for sub in subs]
    command = ffmpeg.output(*streams, media_arg(target), **options)
    return command.global_args("-nostdin", "-hide_banner", "-v", "error").overwrite_output()


def verify(info_in: dict[str, Any], info_out: dict[str, Any], tracks: list[Track], container: str) -> list[str]:
    """What is wrong with the muxed file (empty when it is right): tracks, codecs, languages, default flag."""
    problems: list[str] = []
    for kind in ("video", "audio"):
        before = [s.get("codec_name") for s in streams_of(info_in, kind)]
        after = [s.get("codec_name") for s in streams_of(info_out, kind)]
        if before != after:
            problems.append(f"{kind} streams {after} differ from the input's {before}")
    subs = streams_of(info_out, "subtitle")
    if len(subs) != len(tracks):
        problems.append(f"{len(subs)} subtitle tracks instead of {len(tracks)}")
    for i, (stream, track) in enumerate(zip(subs, tracks, strict=False)):
        expected = SUBTITLE_CODEC[container][track.fmt]
        if stream.get("codec_name") != expected:
            problems.append(f"subtitle track {i} has codec {stream.get('codec_name')}, expected {expected}")
        tags = stream.get("tags") or {}
        if tags.get("language") != track.tag:
            problems.append(f"subtitle track {i} has language {tags.get('language')}, expected {track.tag}")
        if tags.get(TITLE_TAG[container]) != track.title:
            problems.append(f"subtitle track {i} has title {tags.get(TITLE_TAG[container])}, expected {track.title}")
        default = int((stream.get("disposition") or {}).get("default", 0))
        if default != (1 if i == 0 else 0):
            problems.append(f"subtitle track {i} default flag is {default}, expected {1 if i == 0 else 0}")
    return problems


def own_previous_output(target: Path, record_path: Path) -> bool:
    """True when `target` is what this job's mux stage wrote last (name, size and fingerprint match)."""
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False
    return (
        record.get("name") == target.name
        and record.get("size") == target.stat().st_size
        and record.get("fingerprint") == fingerprint(target)
    )


def subtitle_tracks(ctx: StageContext, subtitles: StageResult) -> list[Track]:
    """The tracks of subtitle_gen's subtitle set that have events, in its order (the target language first).

    A track without events is left out (ffmpeg cannot read an empty SRT); with none left the
    stage is skipped, with the reason as its note.
    """
    entries = ctx.read(subtitles, SubtitleSet).tracks
    if not entries:
        raise PermanentError("subtitle_gen listed no subtitle tracks; run it again.")
    tracks = []
    for entry in entries:
        if entry.events == 0:
            ctx.log.info("%s track has no events: not muxed", entry.language)
            continue
        fmt = choose_format(entry.files)
        tracks.append(Track(language=entry.language, path=ctx.file(subtitles, entry.files[fmt]), fmt=fmt))
    if not tracks:
        raise StageSkipped("no subtitle events (no speech was found), so no subtitled copy was made")
    return tracks


@stage("mux", version="3")
def mux(ctx: StageContext, settings: MuxSettings, subtitle_gen: StageResult) -> dict:
    require_tool("ffmpeg")
    source = Path(ctx.job_file.input_path)
    if not source.is_file():
        raise PermanentError(f"the input film {source} is missing; put it back or prepare the job again.")
    container = settings.container
    tracks = subtitle_tracks(ctx, subtitle_gen)
    try:
        info_in = probe(source)
    except MediaError as exc:
        raise PermanentError(str(exc)) from exc
    name = output_name(source, output_extension(container, info_in))
    target = ctx.job.output_dir / name
    record_path = ctx.out_dir / RECORD
    if target.exists():
        if settings.overwrite:
            ctx.log.info("replacing %s (MUX__OVERWRITE=true)", target)
        elif own_previous_output(target, record_path):
            ctx.log.info("replacing %s: this job's own previous output (matches %s)", target, RECORD)
        else:
            raise PermanentError(
                f"{target} already exists and is not this job's previous mux output; move it away "
                f"or set MUX__OVERWRITE=true to replace it."
            )
    ctx.log.info(
        "muxing on cpu (stream copy) into %s: %s",
        container,
        ", ".join(f"{t.tag} {t.fmt}{' default' if i == 0 else ''}" for i, t in enumerate(tracks)),
    )
    with ctx.output(name, final=True) as tmp:
        command = mux_command(source, tracks, tmp, container, info_in)
        try:
            command.run(capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
            hint = " Try MUX__CONTAINER=mkv, which holds any codec." if container == "mp4" else ""
            raise PermanentError(f"ffmpeg could not mux {source}: {' | '.join(detail)}.{hint}") from exc
        info_out = probe(tmp)
        problems = verify(info_in, info_out, tracks, container)
        if problems:
            raise PermanentError(f"the muxed file is wrong, so it was not kept: {'; '.join(problems)}")
        ctx.progress(0.9, "muxed and checked")
        size = tmp.stat().st_size  # the record goes first, so a stop between the two never orphans our own file
        ctx.write_json(
            RECORD,
            {
                "name": name,
                "size": size,
                "fingerprint": fingerprint(tmp),
                "container": container,
                "tracks": [{"language": t.tag, "title": t.title, "format": t.fmt} for t in tracks],
            },
        )
    subs = streams_of(info_out, "subtitle")
    return {
        "output": f"output/{name}",
        "container": container,
        "size": size,
        "video_streams": len(streams_of(info_out, "video")),
        "audio_streams": len(streams_of(info_out, "audio")),
        "subtitle_tracks": [
            {
                "language": (s.get("tags") or {}).get("language"),
                "codec": s.get("codec_name"),
                "default": bool((s.get("disposition") or {}).get("default")),
            }
            for s in subs
        ],
    }
