"""subtitle_gen: timed English and source-language subtitles (SRT, WebVTT, ASS) and a QC report.

English comes from post_ner's named translation, the source language from the ASR's
transcript; songs (lyrics_detection) are set in italics with a note sign, or left out with
SUBTITLE_GEN__SUBTITLE_SONGS=false. Layout and timing follow DESIGN.md "Subtitles" (see
tasks.subtitle_layout); the files go into the job's `output/` as
`<film stem>.<lang>.<srt|vtt|ass>` and are listed in the subtitle set that mux reads; `qc.json`
/ `qc.md` go into the stage folder. Times are shifted by the demux clip start, so they match
the film, not the clip.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from settings.model import FilmSettings
from settings.stages import SubtitleSettings
from tasks.contract import StageContext, StageResult
from tasks.documents import (
    DecodeReport,
    MediaInfo,
    NamedTranslation,
    Songs,
    SubtitleSet,
    SubtitleTrack,
    Transcript,
)
from tasks.kernel import stage
from tasks.lyrics_detection import mostly_sung
from tasks.subtitle_formats import qc_markdown, render, subtitle_file
from tasks.subtitle_layout import (
    HARD_RULES,
    SENTENCE_END,
    Event,
    Rules,
    Tagger,
    Unit,
    Word,
    check_hard_limits,
    plan_events,
    spacy_tagger,
    timed_words,
)


def rules_for(settings: SubtitleSettings, fps: float | None, audience: str = "adult", language: str = "en") -> Rules:
    """The layout rules for one track: the language's and audience's reading speed, the film's frame rate."""
    children = audience == "children"
    if language == "hi":
        max_cps = settings.hindi_children_max_cps if children else settings.hindi_max_cps
    else:
        max_cps = settings.children_max_cps if children else settings.max_cps
    return Rules(
        max_line_chars=settings.max_line_chars,
        max_lines=settings.max_lines,
        max_cps=max_cps,
        min_duration_s=settings.min_duration_s,
        max_duration_s=settings.max_duration_s,
        min_gap_frames=settings.min_gap_frames,
        chain_gap_frames=settings.chain_gap_frames,
        fps=float(fps) if fps and fps > 0 else settings.default_fps,
        max_linger_s=settings.max_linger_s,
        merge_gap_s=settings.merge_gap_s,
    )


def speech_coverage(report: DecodeReport, songs: list[dict[str, Any]], min_fraction: float = 0.3) -> dict[str, Any]:
    """Seconds of VAD speech outside songs under recognised words, over all such seconds; the regions left bare."""
    spoken = [r for r in report.regions if not in_regions(r.start, r.end, songs)]
    total = sum(r.end - r.start for r in spoken)
    covered = sum(min(r.covered_s, r.end - r.start) for r in spoken)
    bare = [r for r in spoken if r.end - r.start >= 0.5 and r.covered_s < min_fraction * (r.end - r.start)]
    return {"speech_coverage": round(covered / total, 3) if total else 1.0,
            "uncovered": [{"start": r.start, "end": r.end} for r in bare]}  # fmt: skip


def empty_notes(tracks: list[SubtitleTrack], report: DecodeReport) -> list[str]:
    """Why the subtitles have no events, when they have none: a silent film must say so, not look broken."""
    if any(track.events for track in tracks):
        return []
    speech = sum(r.end - r.start for r in report.regions)
    if speech <= 0:
        return ["no speech found: voice activity detection found none in the audio, so the subtitles have no events"]
    return [f"no words recognised in the {speech:.1f} s of detected speech, so the subtitles have no events"]


def with_notes(markdown: str, notes: list[str]) -> str:
    """The QC report with the notes right under its title, where a reader sees them first."""
    if not notes:
        return markdown
    title, _, rest = markdown.partition("\n\n")
    return "\n\n".join([title, *(f"**Note:** {note}." for note in notes), rest])


def in_regions(start: float, end: float, regions: list[dict[str, Any]]) -> bool:
    middle = (start + end) / 2
    return any(float(r["start"]) <= middle <= float(r["end"]) for r in regions)


def sung_runs(words: list[Word], regions: list[dict[str, Any]], sung: bool) -> list[tuple[list[Word], bool]]:
    """A segment's words in runs of whole sentences, each sung when at least half its time lies in a song.

    Whisper can join the line said just before a song to the song's first lines in one segment, which
    then lies mostly in the song (30-minute bench film: "We need more chairs for the guests in the
    garden." shown as lyrics). The rule is the lyrics stage's own for whole segments
    (`tasks.lyrics_detection.mostly_sung`); a segment that meets no song keeps that stage's word for it.
    """
    start, end = words[0].start, words[-1].end
    if not any(float(r["start"]) < end and start < float(r["end"]) for r in regions):
        return [(words, sung)]
    sentences: list[list[Word]] = [[]]
    for word in words:
        sentences[-1].append(word)
        if SENTENCE_END.search(word.text):
            sentences.append([])
    runs: list[tuple[list[Word], bool]] = []
    for sentence in filter(None, sentences):
        lyric = mostly_sung(sentence[0].start, sentence[-1].end, regions)
        if runs and runs[-1][1] == lyric:
            runs[-1][0].extend(sentence)
        else:
            runs.append((list(sentence), lyric))
    return runs


def speech_units(
    segments: list[dict[str, Any]], songs: dict[str, Any] | None, *, id_keys: tuple[str, ...], keep_songs: bool = True
) -> list[Unit]:
    """One unit per segment with text; lyric when the lyrics stage marked it (by id or by region).

    `id_keys` name the fields holding transcript segment ids ("id" for the transcript,
    "source_ids" for translated segments). Lyrics are dropped when songs are not subtitled.
    """
    lyric_ids = {str(i) for i in (songs or {}).get("lyric_segment_ids", [])}
    regions = (songs or {}).get("regions", [])
    units: list[Unit] = []
    for index, segment in enumerate(segments):
        start, end = float(segment.get("start", 0.0)), float(segment.get("end", 0.0))
        ids: set[str] = set()
        for key in id_keys:
            value = segment.get(key)
            ids |= {str(v) for v in value} if isinstance(value, list) else {str(value)} if value is not None else set()
        lyric = bool(ids & lyric_ids) or in_regions(start, end, regions)
        words = timed_words(str(segment.get("text", "")), segment.get("words") or [], start, end)
        runs = sung_runs(words, regions, lyric) if words and segment.get("words") else [(words, lyric)]
        for run, sung in runs:
            if run and not (sung and not keep_songs):
                units.append(
                    Unit(id=str(segment.get("id", index)), words=tuple(run), speaker=segment.get("speaker"), lyric=sung)
                )
    return units


def build_track(
    segments: list[dict[str, Any]],
    songs: dict[str, Any] | None,
    rules: Rules,
    *,
    id_keys: tuple[str, ...],
    tagger: Tagger | None,
    keep_songs: bool = True,
) -> list[Event]:
    return plan_events(speech_units(segments, songs, id_keys=id_keys, keep_songs=keep_songs), rules, tagger)


def shift(events: list[Event], frames: int) -> list[Event]:
    for event in events:
        event.start_frame += frames
        event.end_frame += frames
    return events


@stage("subtitle_gen", version="7")
def subtitle_gen(
    ctx: StageContext,
    settings: SubtitleSettings,
    demux: StageResult,
    asr: StageResult,
    post_ner: StageResult,
    lyrics_detection: StageResult,
    film: FilmSettings,
) -> dict:
    media = ctx.read(demux, MediaInfo)
    english = ctx.read(post_ner, NamedTranslation)
    transcript = ctx.read(asr, Transcript)
    decoding = ctx.read(asr, DecodeReport)
    songs = ctx.read(lyrics_detection, Songs).model_dump()
    rules = rules_for(settings, media.fps, film.audience)
    offset = round((media.clip.start if media.clip else 0.0) * rules.fps)
    stem = Path(ctx.job_file.input_path).stem
    target_lang, source_lang = english.target_language, transcript.language
    ctx.log.info(
        "layout on cpu: %s, %.3f fps, %.0f cps (%s audience), songs %s",
        target_lang,
        rules.fps,
        rules.max_cps,
        film.audience,
        "subtitled" if settings.subtitle_songs else "left out",
    )

    tracks: list[tuple[str, Literal["target", "source"], list[dict[str, Any]], tuple[str, ...], Tagger | None]] = [
        (
            target_lang,
            "target",
            english.segment_dicts(),
            ("source_ids",),
            spacy_tagger(settings.spacy_model) if target_lang == "en" else None,
        ),
    ]
    if settings.source_subtitles:
        if source_lang == target_lang:
            ctx.log.info("source language is %s too: no separate source-language track", source_lang)
        else:
            tracks.append(
                (
                    source_lang,
                    "source",
                    transcript.segment_dicts(),
                    ("id",),
                    spacy_tagger(settings.spacy_model) if source_lang == "en" else None,
                )
            )

    qc: dict[str, Any] = {"fps": rules.fps, "audience": film.audience, "tracks": {}}
    subtitle_set = SubtitleSet()
    for n, (lang, role, segments, id_keys, tagger) in enumerate(tracks):
        track_rules = rules_for(settings, media.fps, film.audience, lang)
        events = build_track(
            segments, songs, track_rules, id_keys=id_keys, tagger=tagger, keep_songs=settings.subtitle_songs
        )
        report = check_hard_limits(events, track_rules)
        shift(events, offset)
        qc["tracks"][lang] = report.as_dict() | {"role": role}
        subs = subtitle_file(events, rules.fps, language=lang, title=film.title or stem)
        track = SubtitleTrack(language=lang, role=role, events=len(events), lyric_events=sum(e.lyric for e in events))
        for fmt in settings.formats:
            track.files[fmt] = ctx.relative(ctx.write_text(f"{stem}.{lang}.{fmt}", render(subs, fmt), final=True))
        subtitle_set.tracks.append(track)
        ctx.log.info("%s: %d events, QC %s", lang, len(events), report.counts)
        ctx.progress((n + 1) / len(tracks), f"{lang} subtitles written")
    qc["hard_violations"] = sum(data["counts"][rule] for data in qc["tracks"].values() for rule in HARD_RULES)
    qc |= speech_coverage(decoding, songs.get("regions", []))
    qc["decode_records"] = [r.model_dump() for r in decoding.records]
    qc["translation_records"] = [r.model_dump() for r in english.records]
    qc["segment_languages"] = dict(Counter(s.language or transcript.language for s in transcript.segments))
    qc["notes"] = empty_notes(subtitle_set.tracks, decoding)
    for note in qc["notes"]:
        ctx.log.warning("%s", note)
    ctx.write(subtitle_set)
    ctx.write_json("qc.json", qc)
    ctx.report(
        "qc.md",
        with_notes(qc_markdown(qc), qc["notes"]),
        f"Subtitle QC of job {ctx.job.job_id}: events breaking each rule",
    )
    return {
        "fps": rules.fps,
        "tracks": [
            {"language": t.language, "role": t.role, "events": t.events, "lyric_events": t.lyric_events}
            for t in subtitle_set.tracks
        ],
        "qc": {lang: data["counts"] for lang, data in qc["tracks"].items()},
        "hard_violations": qc["hard_violations"],
        "speech_coverage": qc["speech_coverage"],
        "uncovered_regions": len(qc["uncovered"]),
        "over_reading_speed": {lang: len(data["over_reading_speed"]) for lang, data in qc["tracks"].items()},
        "notes": qc["notes"],
    }
