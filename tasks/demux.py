"""demux: the film's chosen audio track as a 16 kHz mono PCM WAV, plus `media.json` (ffprobe facts).

ffmpeg decodes and resamples in a stream straight into the output file, so memory stays
bounded whatever the film's length; the ffmpeg child's peak RSS is sampled and reported.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import ffmpeg

from settings.stages import DemuxSettings
from tasks.contract import PermanentError, StageContext
from tasks.documents import AudioStream, MediaInfo, Span
from tasks.kernel import stage
from tasks.media import (
    SAMPLE_RATE,
    MediaError,
    audio_streams,
    media_arg,
    media_duration,
    probe,
    require_tool,
    video_streams,
)

PREFERRED_LANGUAGE = "hi"  # with no default-flagged track, the first Hindi one is taken
GUESS_LAYOUT_FROM = 5  # channels: an unlabelled stream with at least this many is read in ffmpeg's default order

# ISO 639-1 code -> other tags seen in films (639-2/B and /T codes, English names).
_LANGUAGE_ALIASES: dict[str, tuple[str, ...]] = {
    "hi": ("hin", "hindi"),
    "en": ("eng", "english"),
    "ur": ("urd", "urdu"),
    "pa": ("pan", "panjabi", "punjabi"),
    "ta": ("tam", "tamil"),
    "te": ("tel", "telugu"),
    "ml": ("mal", "malayalam"),
    "kn": ("kan", "kannada"),
    "mr": ("mar", "marathi"),
    "bn": ("ben", "bengali", "bangla"),
    "gu": ("guj", "gujarati"),
    "or": ("ori", "odia", "oriya"),
    "fr": ("fre", "fra", "french"),
    "de": ("ger", "deu", "german"),
    "es": ("spa", "spanish"),
    "it": ("ita", "italian"),
    "ja": ("jpn", "japanese"),
    "zh": ("chi", "zho", "chinese"),
    "ar": ("ara", "arabic"),
    "ru": ("rus", "russian"),
}
_TO_ISO1 = {alias: code for code, aliases in _LANGUAGE_ALIASES.items() for alias in (code, *aliases)}


def normalise_language(tag: str | None) -> str | None:
    """A language tag as its ISO 639-1 code where known ('hin' -> 'hi'), else lower-cased; None for und/empty."""
    if not tag:
        return None
    value = tag.strip().lower().replace("_", "-").split("-")[0]
    if value in {"", "und", "unk", "mis", "zxx"}:
        return None
    return _TO_ISO1.get(value, value)


def stream_facts(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every audio stream as {index, position, codec, channels, layout, language, default}."""
    facts = []
    for position, stream in enumerate(audio_streams(info)):
        tags = {k.lower(): v for k, v in (stream.get("tags") or {}).items()}
        facts.append(
            {
                "index": int(stream["index"]),
                "position": position,
                "codec": stream.get("codec_name"),
                "channels": stream.get("channels"),
                "layout": stream.get("channel_layout"),
                "language": tags.get("language"),
                "default": bool((stream.get("disposition") or {}).get("default", 0)),
            }
        )
    return facts


def video_fps(info: dict[str, Any]) -> float | None:
    """Frame rate of the first real video stream (cover art is not one), or None."""
    for stream in video_streams(info):
        for key in ("avg_frame_rate", "r_frame_rate"):
            num, _, den = str(stream.get(key, "0/0")).partition("/")
            try:
                rate = float(num) / float(den or 1)
            except (ValueError, ZeroDivisionError):
                continue
            if rate > 0:
                return round(rate, 3)
    return None


@functools.lru_cache(maxsize=1)
def standard_layouts() -> dict[str, tuple[str, ...]]:
    """ffmpeg's named channel layouts ('5.1' -> FL, FR, FC, LFE, BL, BR), from `ffmpeg -layouts`."""
    listing = subprocess.run(
        [require_tool("ffmpeg"), "-hide_banner", "-layouts"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    _, _, table = listing.partition("Standard channel layouts:")
    layouts = {}
    for line in table.splitlines()[1:]:
        name, _, channels = line.strip().partition(" ")
        if name and channels.strip():
            layouts[name] = tuple(channels.strip().split("+"))
    return layouts


def layout_channels(layout: str | None) -> tuple[str, ...]:
    """The channels of an ffprobe channel layout ('5.1(side)', or spelled out as 'FL+FR+FC'); () when unknown."""
    if not layout:
        return ()
    if "+" in layout:
        return tuple(layout.split("+"))
    return standard_layouts().get(layout, ())


def stream_layout(stream: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The stream's layout, named, and its channels in order.

    A surround stream without a layout (an AAC 5.1(side), some WAVs) is taken in ffmpeg's own
    default order for its channel count, as ffmpeg itself does: 6 channels as 5.1, 8 as 7.1.
    Fewer channels are ambiguous (quad or 4.0?) and stay unknown.
    """
    layout = stream.get("layout")
    channels = layout_channels(layout)
    if channels:
        return str(layout), channels
    count = int(stream.get("channels") or 0)
    if count >= GUESS_LAYOUT_FROM:
        for name, names in standard_layouts().items():
            if len(names) == count:
                return f"{count} channels taken as {name}", names
    return f"{count} channels", ()


def dialogue_channel(stream: dict[str, Any], settings: DemuxSettings) -> int | None:
    """The index of the centre channel (FC) when the dialogue should come from it alone, else None (all mixed).

    A surround mix (3.0, 5.1, 7.1...) puts the dialogue in the centre channel; the other
    channels carry music and effects, which only make it harder to recognise.
    """
    if settings.dialogue_channel != "centre" or int(stream.get("channels") or 0) < 3:
        return None
    channels = stream_layout(stream)[1]
    return channels.index("FC") if "FC" in channels else None


def channel_note(stream: dict[str, Any], channel: int | None) -> str:
    """What the mono WAV was made of, for the log and the summary ('FC of 5.1', 'mix of stereo', 'mono')."""
    layout = stream_layout(stream)[0]
    if channel is not None:
        return f"FC of {layout}"
    return "mono" if stream.get("channels") == 1 else f"mix of {layout}"


def select_stream(streams: list[dict[str, Any]], settings: DemuxSettings) -> tuple[dict[str, Any], str]:
    """The audio stream to use and why: the setting's position or language, else default, else Hindi, else first."""
    listing = ", ".join(
        f"{s['position']}:{s['language'] or 'und'}{' (default)' if s['default'] else ''}" for s in streams
    )
    if settings.audio_track is not None:
        if settings.audio_track >= len(streams):
            raise PermanentError(
                f"DEMUX__AUDIO_TRACK={settings.audio_track} but the film has {len(streams)} audio stream(s) "
                f"(position:language {listing}); set DEMUX__AUDIO_TRACK to one of those positions."
            )
        return streams[settings.audio_track], f"position {settings.audio_track} (setting audio_track)"
    if settings.audio_language:
        wanted = normalise_language(settings.audio_language)
        for stream in streams:
            if normalise_language(stream["language"]) == wanted:
                return stream, f"first stream in language {settings.audio_language!r} (setting audio_language)"
        raise PermanentError(
            f"DEMUX__AUDIO_LANGUAGE={settings.audio_language} but no audio stream has that language "
            f"(position:language {listing}); set DEMUX__AUDIO_LANGUAGE or DEMUX__AUDIO_TRACK accordingly."
        )
    for stream in streams:
        if stream["default"]:
            return stream, "the default-flagged stream"
    for stream in streams:
        if normalise_language(stream["language"]) == PREFERRED_LANGUAGE:
            return stream, "the first Hindi stream (none is flagged default)"
    return streams[0], "the first stream (none is flagged default or Hindi)"


def clip_range(settings: DemuxSettings, duration: float | None) -> dict[str, float] | None:
    """The checked (start, end) of the clip setting, end clamped to the film; None for the whole film."""
    if settings.clip_start is None and settings.clip_end is None:
        return None
    start = settings.clip_start or 0.0
    end = settings.clip_end if settings.clip_end is not None else duration
    if duration is not None and start >= duration:
        raise PermanentError(f"DEMUX__CLIP_START={start} is past the end of the film ({duration:.1f} s).")
    if end is None:
        raise PermanentError("DEMUX__CLIP_START is set but the film's duration is unknown; set DEMUX__CLIP_END too.")
    if duration is not None:
        end = min(end, duration)
    if end <= start:
        raise PermanentError(f"DEMUX__CLIP_END={settings.clip_end} must be after DEMUX__CLIP_START={start}.")
    return {"start": float(start), "end": float(end)}


def ffmpeg_args(
    source: Path,
    target: Path,
    position: int,
    sample_rate: int,
    clip: dict[str, float] | None,
    channel: int | None = None,
) -> list[str]:
    """The ffmpeg command: one audio stream, as one channel (by index) or all downmixed, resampled into a PCM WAV.

    An argument list with absolute paths: no shell, and a name beginning with `-` is no option.
    """
    input_options: dict[str, Any] = {"ss": clip["start"]} if clip and clip["start"] > 0 else {}
    output_options: dict[str, Any] = {"ac": 1, "ar": sample_rate, "acodec": "pcm_s16le", "f": "wav"}
    if channel is not None:  # by index: works also where the stream has no layout for ffmpeg to name FC by
        output_options["af"] = f"pan=mono|c0=c{channel}"
    if clip:
        output_options["t"] = round(clip["end"] - clip["start"], 6)
    stream = ffmpeg.input(media_arg(source), **input_options)[f"a:{position}"]
    command = (
        ffmpeg.output(stream, media_arg(target), **output_options)
        .global_args(
            "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-progress", "pipe:1", "-stats_period", "0.2"
        )
        .overwrite_output()
    )
    return command.compile(cmd=require_tool("ffmpeg"))


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a running process since its exec (Linux VmHWM), else its current RSS; None once gone.

    Not wait4's ru_maxrss: a child forked from a large parent (a worker with torch loaded)
    reports the parent's pages there, not what ffmpeg itself used.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - the process may have exited between two reads
        return None


def run_ffmpeg(args: list[str], expected_s: float | None, progress: Any = None) -> float:
    """Run ffmpeg, reporting progress; returns its peak RSS in MiB, sampled at each progress report."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        reported, peak = 0.0, 0.0
        for line in proc.stdout:
            peak = max(peak, peak_rss_mb(proc.pid) or 0.0)
            key, _, value = line.strip().partition("=")
            if key in {"out_time_us", "out_time_ms"} and value.isdigit() and expected_s and progress:
                fraction = min(1.0, int(value) / 1e6 / expected_s)
                if fraction - reported >= 0.1:
                    reported = fraction
                    progress(fraction, f"demuxed {int(value) / 1e6:.0f} s")
        if proc.wait() != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip().splitlines()
            raise PermanentError(f"ffmpeg could not decode the audio: {detail[-1] if detail else proc.returncode}")
    return peak


def wav_duration(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


AUDIO_FILE = "audio.wav"


@stage("demux", version="3")
def demux(ctx: StageContext, settings: DemuxSettings) -> dict:
    source = Path(ctx.job_file.input_path)
    if not source.is_file():
        raise PermanentError(f"the input film {source} does not exist; prepare the job again with the right path.")
    try:
        info = probe(source)
    except MediaError as exc:
        raise PermanentError(str(exc)) from exc
    streams = stream_facts(info)
    if not streams:
        raise PermanentError(f"{source} has no audio stream; there is nothing to subtitle.")
    selected, reason = select_stream(streams, settings)
    ctx.log.info("audio streams: %s", streams)
    ctx.log.info(
        "selected audio stream %d (position %d, %s, language %s): %s",
        selected["index"],
        selected["position"],
        selected["codec"],
        selected["language"] or "und",
        reason,
    )
    duration = media_duration(info)
    clip = clip_range(settings, duration)
    if clip:
        ctx.log.info("clip %.2f-%.2f s", clip["start"], clip["end"])
    expected = (clip["end"] - clip["start"]) if clip else duration
    channel = dialogue_channel(selected, settings)
    downmix = channel_note(selected, channel)
    ctx.log.info("decoding on cpu with ffmpeg to %d Hz mono PCM: %s", SAMPLE_RATE, downmix)
    with ctx.output(AUDIO_FILE) as tmp:
        args = ffmpeg_args(source, tmp, selected["position"], SAMPLE_RATE, clip, channel)
        peak_mb = run_ffmpeg(args, expected, ctx.progress)
        audio_s = wav_duration(tmp)
        if audio_s <= 0:
            raise PermanentError(f"audio stream {selected['index']} of {source} decoded to no samples.")
    ctx.log.info("ffmpeg peak RSS %.1f MiB for %.1f s of audio", peak_mb, audio_s)
    ctx.write(
        MediaInfo(
            audio=ctx.relative(ctx.out_dir / AUDIO_FILE),
            duration_s=round(audio_s, 3),
            source_duration_s=duration,
            fps=video_fps(info),
            audio_streams=[AudioStream(**s) for s in streams],
            selected=AudioStream(**selected),
            selection_reason=reason,
            clip=Span(**clip) if clip else None,
            source=str(source),
        )
    )
    return {
        "duration_s": round(audio_s, 3),
        "stream_index": selected["index"],
        "language": selected["language"],
        "streams": len(streams),
        "clip": clip,
        "channels": downmix,
        "ffmpeg_peak_rss_mb": round(peak_mb, 1),
    }
