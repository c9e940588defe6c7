"""Subtitles against the truth: WER, lines lost, names, start offsets, rule breaks, short events.

Plain functions on parsed SRT cues and the truth's turns (dicts with `text`, `start`, `end` and
`names`), so each figure is tested on hand-made input (tests/test_bench.py).

- WER: jiwer on everything said or sung (the truth's turns and song lyrics, in time order) against
  the text of every cue, both lower-cased with punctuation off (apostrophes dropped, so "don't" =
  "dont"). `dialogue_wer` leaves the songs out on both sides (cues at least 90 % inside a song).
- A line is lost when none of its words (its content words, when it has any) appears in the
  cues overlapping it (cue start < turn end + slack and cue end > turn start - slack).
- Name accuracy: each truth mention counts as right when the cues overlapping its turn hold the
  name spelt exactly (whole word, any case) at least as often as the turn says it.
- Start offset: for each turn, the earliest cue overlapping it by at least `min_overlap_s` and
  holding one of its (content) words: |cue start - turn speech start|. (The line before, still
  up for reading as the turn begins, is not the turn's subtitle.) The median and the 90th
  percentile over the turns that have one.
- Dialogue shown as lyrics: turns whose every cue carries a note sign (a song region that
  swallowed dialogue).
- Rule breaks: the project's own QC (tasks.subtitle_layout.qc_report with the default subtitle
  settings: 42 characters a line, 2 lines, 5/6 s to 7 s, 20 characters a second, 2 frames between
  events) run on the cues. `hard` sums the rules the project calls hard (line length, line count,
  order, overlap, minimum gap, empty duration); `short` is events under 5/6 s.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*-->\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
TAG = re.compile(r"<[^>]*>|\{[^}]*\}")
STOPWORDS = frozenset(
    "a an the and or but to of in on at for with is are was were be been am i you he she it we they me my "
    "your his her its our their this that these those do did does not no so as if then than there here".split()
)
MIN_DURATION_S = 5 / 6


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]  # as shown (tags off; note signs and speaker dashes kept)

    @property
    def lyric(self) -> bool:
        return any("\u266a" in line for line in self.lines)

    @property
    def text(self) -> str:
        """The words only: no note signs, no speaker dashes."""
        lines = [re.sub(r"^\s*[-\u2013\u2014]\s*", "", line) for line in self.lines]
        return " ".join(line.replace("\u266a", " ").strip() for line in lines).strip()


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def parse_srt(text: str) -> list[Cue]:
    """SRT cues in time order; blocks without a timing line are skipped."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\ufeff", "")):
        lines = block.strip("\n").split("\n")
        for i, line in enumerate(lines):
            match = TIME.search(line)
            if match:
                g = match.groups()
                shown = tuple(s for s in (TAG.sub("", x).strip() for x in lines[i + 1 :]) if s)
                cues.append(Cue(_seconds(*g[:4]), _seconds(*g[4:]), shown))
                break
    return sorted(cues, key=lambda c: (c.start, c.end))


def normalise(text: str) -> str:
    """Lower case, apostrophes dropped, every other non-alphanumeric character a space."""
    text = text.lower().replace("\u2019", "'").replace("'", "")
    return " ".join(re.sub(r"[^\w]+", " ", text).replace("_", " ").split())


def words(text: str) -> list[str]:
    return normalise(text).split()


def in_songs(cue: Cue, songs: Sequence[dict[str, Any]], share: float = 0.9) -> bool:
    """At least `share` of the cue lies inside a song."""
    length = max(cue.end - cue.start, 1e-3)
    inside = sum(max(0.0, min(cue.end, s["end"]) - max(cue.start, s["start"])) for s in songs)
    return inside / length >= share


def dialogue_cues(cues: Sequence[Cue], songs: Sequence[dict[str, Any]]) -> list[Cue]:
    return [c for c in cues if not in_songs(c, songs)]


def spoken_and_sung(turns: Sequence[dict[str, Any]], songs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns and the lyrics sung over the songs, in time order."""
    lyrics = [line for s in songs for line in s.get("lyrics", [])]
    return sorted([*turns, *lyrics], key=lambda x: x["start"])


@dataclass(frozen=True)
class Alignment:
    """The normalised words of the items and of the cues, and jiwer's alignment of them (None when either is
    empty): what the WER and the names put in are read from."""

    reference: list[str]
    hypothesis: list[str]
    out: Any


def alignment(reference_items: Sequence[dict[str, Any]], cues: Sequence[Cue]) -> Alignment:
    """The items' text (in time order) against the cues' text."""
    import jiwer

    reference = normalise(" ".join(t["text"] for t in reference_items)).split()
    hypothesis = normalise(" ".join(c.text for c in cues)).split()
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis)) if reference and hypothesis else None
    return Alignment(reference, hypothesis, out)


def wer_of(aligned: Alignment) -> dict[str, Any]:
    """Word error rate with jiwer's counts."""
    n = len(aligned.reference)
    if aligned.out is None:
        if not n:
            return {"wer": 0.0 if not aligned.hypothesis else 1.0, "hits": 0, "substitutions": 0, "deletions": 0,
                    "insertions": len(aligned.hypothesis), "reference_words": 0}  # fmt: skip
        return {"wer": 1.0, "hits": 0, "substitutions": 0, "deletions": n, "insertions": 0, "reference_words": n}
    out = aligned.out
    return {
        "wer": round(float(out.wer), 4),
        "hits": out.hits,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "reference_words": n,
    }


def wer(reference_items: Sequence[dict[str, Any]], cues: Sequence[Cue]) -> dict[str, Any]:
    """Word error rate of the cues' text against the items' text (both in time order), with jiwer's counts."""
    return wer_of(alignment(reference_items, cues))


def overlapping(turn: dict[str, Any], cues: Iterable[Cue], slack: float = 0.2) -> list[Cue]:
    return [c for c in cues if c.start < turn["end"] + slack and c.end > turn["start"] - slack]


def content_words(text: str) -> set[str]:
    every = set(words(text))
    content = {w for w in every if w not in STOPWORDS}
    return content or every


def lines_lost(turns: Sequence[dict[str, Any]], cues: Sequence[Cue], slack: float = 0.2) -> list[dict[str, Any]]:
    """The turns none of whose (content) words appear in the cues overlapping them."""
    lost = []
    for index, turn in enumerate(turns):
        heard = set(words(" ".join(c.text for c in overlapping(turn, cues, slack))))
        if not content_words(turn["text"]) & heard:
            lost.append({"turn": index, "start": turn["start"], "end": turn["end"], "text": turn["text"]})
    return lost


def name_accuracy(turns: Sequence[dict[str, Any]], cues: Sequence[Cue], slack: float = 0.2) -> dict[str, Any]:
    """Share of the truth's name mentions spelt right in the cues over their turn; the misses."""
    right = total = 0
    misses = []
    for index, turn in enumerate(turns):
        mentions: dict[str, int] = turn.get("names") or {}
        if not mentions:
            continue
        heard = " ".join(c.text for c in overlapping(turn, cues, slack))
        for name, count in mentions.items():
            found = len(re.findall(rf"(?<!\w){re.escape(name.lower())}(?!\w)", heard.lower()))
            total += count
            right += min(count, found)
            if found < count:
                misses.append({"turn": index, "name": name, "said": turn["text"], "shown": heard})
    return {"right": right, "total": total, "share": round(right / total, 4) if total else None, "misses": misses}


def names_put_in(aligned: Alignment, cast: Sequence[str]) -> list[str]:
    """The cast names the cues show where the film says something else: words of a name that the WER alignment
    matches to another word or to nothing. What the name share cannot see: "my mum and" made into Munnar, Veer
    shown where Kabir was said."""
    names = {w for name in cast for w in words(name)}
    if aligned.out is None:  # nothing said (every name shown is put in) or nothing shown
        return [w for w in aligned.hypothesis if w in names] if not aligned.reference else []
    out = []
    for chunk in aligned.out.alignments[0]:
        if chunk.type in ("substitute", "insert"):
            out += [w for w in aligned.hypothesis[chunk.hyp_start_idx : chunk.hyp_end_idx] if w in names]
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between the closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def start_offsets(turns: Sequence[dict[str, Any]], cues: Sequence[Cue], min_overlap_s: float = 0.2) -> dict[str, Any]:
    """|start of the first cue over each turn - the turn's first frame of speech|: median, p90, each."""
    offsets = []
    for turn in turns:
        need = min(min_overlap_s, 0.5 * (turn["end"] - turn["start"]))
        said = content_words(turn["text"])
        over = [
            c
            for c in cues
            if min(c.end, turn["end"]) - max(c.start, turn["start"]) >= need and said & set(words(c.text))
        ]
        if over:
            offsets.append(round(abs(min(c.start for c in over) - turn["start"]), 3))
    return {
        "median_s": round(statistics.median(offsets), 3) if offsets else None,
        "p90_s": round(percentile(offsets, 90) or 0.0, 3) if offsets else None,
        "turns_timed": len(offsets),
        "offsets_s": offsets,
    }


def shown_as_lyrics(turns: Sequence[dict[str, Any]], cues: Sequence[Cue], min_overlap_s: float = 0.2) -> list[int]:
    """The turns of dialogue whose every cue is marked as a song lyric (a note sign)."""
    out = []
    for index, turn in enumerate(turns):
        need = min(min_overlap_s, 0.5 * (turn["end"] - turn["start"]))
        said = content_words(turn["text"])
        over = [
            c
            for c in cues
            if min(c.end, turn["end"]) - max(c.start, turn["start"]) >= need and said & set(words(c.text))
        ]
        if over and all(c.lyric for c in over):
            out.append(index)
    return out


def rule_breaks(cues: Sequence[Cue], fps: float = 25.0) -> dict[str, Any]:
    """The project's QC rules run on the cues (frames at `fps`); `hard` and `short` as in the module doc."""
    from settings.stages import SubtitleSettings
    from tasks.subtitle_layout import HARD_RULES, Event, qc_report

    settings = SubtitleSettings()
    from tasks.subtitle_gen import rules_for

    rules = rules_for(settings, fps)
    events = [
        Event(
            lines=list(c.lines), words=(), speakers=(), start_frame=round(c.start * fps), end_frame=round(c.end * fps)
        )
        for c in cues
    ]
    counts = qc_report(events, rules).counts
    return {
        "counts": counts,
        "hard": sum(counts[r] for r in HARD_RULES),
        "short": sum(1 for c in cues if c.end - c.start < MIN_DURATION_S - 1e-3),
        "reading_speed": counts["reading_speed"],
        "line_length": counts["line_length"],
        "line_count": counts["line_count"],
    }


def score(truth: dict[str, Any], cues: Sequence[Cue]) -> dict[str, Any]:
    """Every quality figure for one subtitle file against one film's truth."""
    turns, songs, cast = truth["turns"], truth.get("songs", []), truth.get("cast") or {}
    lost = lines_lost(turns, cues)
    aligned = alignment(spoken_and_sung(turns, songs), cues)
    return {
        "events": len(cues),
        "wer": wer_of(aligned),
        "dialogue_wer": wer(turns, dialogue_cues(cues, songs)),
        "lines_lost": len(lost),
        "lost": lost,
        "turns": len(turns),
        "names": name_accuracy(turns, cues),
        "names_put_in": names_put_in(aligned, [*cast.get("people", []), *cast.get("places", [])]),
        "offsets": start_offsets(turns, cues),
        "dialogue_as_lyrics": shown_as_lyrics(turns, cues),
        "rules": rule_breaks(cues),
    }
