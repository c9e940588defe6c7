"""Subtitle files (SRT, WebVTT, ASS through pysubs2) and the QC table, from planned events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pysubs2

from tasks.subtitle_layout import Event

FORMATS = ("srt", "vtt", "ass")


def subtitle_file(events: Sequence[Event], fps: float, *, language: str, title: str | None = None) -> pysubs2.SSAFile:
    """A pysubs2 file; lyrics in italics (ASS override tags, which pysubs2 writes as <i> in SRT/WebVTT)."""
    subs = pysubs2.SSAFile()
    subs.info["Title"] = title or f"Subtitles ({language})"
    subs.info["PlayResX"], subs.info["PlayResY"] = "1920", "1080"
    style = subs.styles["Default"]
    style.fontname, style.fontsize, style.outline, style.shadow, style.marginv = "Arial", 56, 3, 1, 60
    for event in events:
        text = r"\N".join(event.lines)
        if event.lyric:
            text = r"{\i1}" + text + r"{\i0}"
        subs.append(pysubs2.SSAEvent(start=_ms(event.start_frame, fps), end=_ms(event.end_frame, fps), text=text))
    return subs


def _ms(frame: int, fps: float) -> int:
    return int(round(frame * 1000.0 / fps))


def render(subs: pysubs2.SSAFile, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown subtitle format {fmt!r}; use one of {FORMATS}")
    return subs.to_string(fmt)


def qc_markdown(report: dict[str, Any]) -> str:
    """A Markdown table of the QC counts per track, then the events over the reading speed."""
    tracks = report["tracks"]
    languages = list(tracks)
    rules = list(next(iter(tracks.values()))["counts"]) if tracks else []
    lines = [
        "# Subtitle QC",
        "",
        "| rule | " + " | ".join(languages) + " |",
        "| --- | " + " | ".join("---:" for _ in languages) + " |",
    ]
    for rule in rules:
        lines.append(f"| {rule} | " + " | ".join(str(tracks[lang]["counts"][rule]) for lang in languages) + " |")
    if tracks:
        limits = next(iter(tracks.values()))["limits"]
        lines += ["", "Limits: " + ", ".join(f"{k} {v}" for k, v in limits.items())]
    for lang in languages:
        over = tracks[lang]["over_reading_speed"]
        if not over:
            continue
        lines += [
            "",
            f"## {lang}: events over the reading speed",
            "",
            "| # | start | end | cps | limited by | text |",
            "| ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for item in over:
            text = item["text"].replace("|", "\\|")
            lines.append(
                f"| {item['index']} | {item['start']:.2f} | {item['end']:.2f} | {item['cps']} | "
                f"{item['limited_by']} | {text} |"
            )
    if report.get("segment_languages"):
        said = ", ".join(f"{code} {n}" for code, n in report["segment_languages"].items())
        lines += ["", f"Transcript segments by the language they were said in: {said}"]
    if "speech_coverage" in report:
        lines += ["", f"Speech covered by words (VAD speech outside songs): {100 * report['speech_coverage']:.1f} %"]
        for region in report.get("uncovered", []):
            lines.append(f"- no words over the speech at {region['start']:.2f}-{region['end']:.2f} s")
    titles = {
        "decode_records": "What the ASR pass dropped, changed or decoded again",
        "translation_records": "What the translate pass dropped, decoded again or flagged",
    }
    for key, title in titles.items():
        records = report.get(key, [])
        if not records:
            continue
        lines += ["", f"## {title}", "",
                  "| start | end | action | reason | text |", "| ---: | ---: | --- | --- | --- |"]  # fmt: skip
        for rec in records:
            text = str(rec["text"]).replace("|", "\\|")[:120]
            lines.append(f"| {rec['start']:.2f} | {rec['end']:.2f} | {rec['action']} | {rec['reason']} | {text} |")
    return "\n".join(lines) + "\n"
