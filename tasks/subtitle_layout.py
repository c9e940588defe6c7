"""Subtitle events from timed speech: chunking, line breaking, frame timing, and the QC check.

Plain functions, no Prefect and no files, so every rule can be tested on generated input.
The standards (DESIGN.md "Subtitles", Netflix timed-text style) are carried in `Rules`:
at most `max_line_chars` a line and `max_lines` lines, a reading speed of at most `max_cps`,
5/6 s to 7 s on screen, at least `min_gap_frames` between events, and gaps of
`chain_gap_frames` or less closed to `min_gap_frames`.

Hard limits (line length, line count, order, overlap, the minimum gap) hold by construction
and are checked again at the end. The soft ones (reading speed, durations) are met where the
speech leaves room; `qc_report` counts and lists where it does not.

Reading speed counts every character shown (spaces, punctuation, hyphens, note signs), the
lines of an event joined without the line break.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

NOTE = "\u266a"  # ♪
SPEAKER_DASH = "- "
MIN_WORD_S = 0.01  # shorter word times are taken as missing and interpolated

# Break costs: lower is a better place to end a line or an event.
COST_SENTENCE = 0.0
COST_CLAUSE = 1.0
COST_CONJUNCTION = 2.0
COST_PREPOSITION = 2.5
COST_PLAIN = 5.0
COST_FORBIDDEN = 60.0  # article | noun, inside a name, pronoun | verb: only when nothing else fits
# Cutting a sentence between two events hurts more than between two lines of one event.
EVENT_BREAK_WEIGHT = 2.0
LINE_BREAK_WEIGHT = 0.5
BALANCE_WEIGHT = 2.0  # per line, times its distance from an even split over the line length
EXTRA_LINE_COST = 2.0  # a third line (when max_lines allows it) only when it clearly helps
# Words after a pause shown this long before they are said give their speech away, and put the
# event's in-time on the wrong line for anyone following the speech: each second beyond costs.
PAUSE_S = 0.4
EARLY_AFTER_PAUSE_S = 1.0
EARLY_WEIGHT = 3.0

SENTENCE_END = re.compile(r"[.?!\u2026\u0964\u0965][\"'\u201d\u2019)\]]*$")  # . ? ! … । ॥ then closers
CLAUSE_END = re.compile(r"[,;:\u2013\u2014-][\"'\u201d\u2019)\]]*$")
CONJUNCTIONS = frozenset(
    "and but or nor so yet because although though while whereas if unless until since when whenever "
    "where wherever whether that which who whom whose than as once".split()
)
PREPOSITIONS = frozenset(
    "to of in on at for with from by about into onto over under after before between through without "
    "within during against across toward towards upon around behind beyond near like along among "
    "despite except inside outside past per via".split()
)
DETERMINERS = frozenset("a an the this that these those my your his her its our their every each some no".split())
PRONOUNS = frozenset("i you he she we they it".split())
AUXILIARIES = frozenset(
    "am is are was were be been being will would shall should can could may might must have has had "
    "do does did 'm 're 's 've 'll 'd".split()
)


@dataclass(frozen=True)
class Rules:
    """The standards an event list must meet, and the room the timing may use.

    No defaults here: the figures are SubtitleSettings' (`tasks.subtitle_gen.rules_for`), written once.
    """

    max_line_chars: int
    max_lines: int
    max_cps: float
    min_duration_s: float
    max_duration_s: float
    min_gap_frames: int
    chain_gap_frames: int
    fps: float
    max_linger_s: float  # how long an event may stay on after its speech ends, to be read
    merge_gap_s: float  # short neighbouring lines this close may share one event

    @property
    def frame_s(self) -> float:
        return 1.0 / self.fps

    @property
    def padding_s(self) -> float:
        """How far an event may end after its last word: linger, then chaining, then the frame grid."""
        return self.max_linger_s + (self.chain_gap_frames + 1) / self.fps


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Unit:
    """One segment's speech: its words with times, who says it, and whether it is sung."""

    id: str
    words: tuple[Word, ...]
    speaker: str | None = None
    lyric: bool = False

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end


@dataclass
class Event:
    """One subtitle: its lines, its frames, and the speech it carries."""

    lines: list[str]
    words: tuple[Word, ...]
    speakers: tuple[str | None, ...]
    lyric: bool = False
    dual: bool = False
    whole: bool = False  # holds one whole unit (only whole lines of dialogue pair up with dashes)
    costs: tuple[float, ...] = ()  # break costs between consecutive words
    bad_breaks: int = 0  # forbidden line breaks that had to be used
    start_frame: int = 0
    end_frame: int = 0
    limited_by: str = ""  # what stopped the end: speech, reading, next, linger, max_duration

    @property
    def speech_start(self) -> float:
        return self.words[0].start

    @property
    def speech_end(self) -> float:
        return self.words[-1].end

    @property
    def chars(self) -> int:
        return sum(len(line) for line in self.lines)

    def start_s(self, fps: float) -> float:
        return self.start_frame / fps

    def end_s(self, fps: float) -> float:
        return self.end_frame / fps


# ---------------------------------------------------------------------------------------------
# Words with times


def _norm(token: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", token).casefold() if ch.isalnum())


def timed_words(text: str, words: Sequence[dict[str, Any]], start: float, end: float) -> list[Word]:
    """The tokens of `text`, each with a time.

    Times come from `words` (the ASR's word times) where a token matches one; tokens without
    one share the time left between their timed neighbours by character count. A segment
    without any word times is spread over its own start and end the same way.
    """
    tokens = clean_text(text).split()
    if not tokens:
        return []
    end = max(end, start)
    timed = [w for w in words or [] if _has_time(w)]
    anchors: dict[int, tuple[float, float]] = {}
    if timed:
        matcher = difflib.SequenceMatcher(
            None, [_norm(t) for t in tokens], [_norm(str(w.get("word", ""))) for w in timed], autojunk=False
        )
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                w = timed[block.b + k]
                anchors[block.a + k] = (float(w["start"]), float(w["end"]))
    times: list[tuple[float, float] | None] = [anchors.get(i) for i in range(len(tokens))]
    i = 0
    while i < len(tokens):
        if times[i] is not None:
            i += 1
            continue
        j = i
        while j < len(tokens) and times[j] is None:
            j += 1
        before = times[i - 1] if i > 0 else None
        after = times[j] if j < len(tokens) else None
        left = before[1] if before is not None else start
        right = after[0] if after is not None else end
        right = max(right, left)
        weights = [max(1, len(t)) for t in tokens[i:j]]
        total, t = sum(weights), left
        for k, weight in zip(range(i, j), weights, strict=False):
            step = (right - left) * weight / total
            times[k] = (t, t + step)
            t += step
        i = j
    result: list[Word] = []
    floor = start
    for token, span in zip(tokens, times, strict=False):
        assert span is not None
        s = min(max(span[0], floor), end)
        e = min(max(span[1], s), end)
        result.append(Word(token, s, e))
        floor = s
    return result


def _has_time(word: dict[str, Any]) -> bool:
    """A usable word time: both ends given and a positive length (aligners emit zero-length guesses)."""
    start, end = word.get("start"), word.get("end")
    return isinstance(start, (int, float)) and isinstance(end, (int, float)) and end - start >= MIN_WORD_S


def clean_text(text: str) -> str:
    """Text safe in SRT, WebVTT and ASS: no override braces, tag brackets or backslashes."""
    table = str.maketrans({"{": "(", "}": ")", "<": "(", ">": ")", "\\": "/"})
    return " ".join(text.translate(table).replace(NOTE, " ").split())


def split_long_words(words: Sequence[Word], limit: int) -> list[Word]:
    """A token longer than a line is cut into line-sized pieces (else no layout could hold it)."""
    out: list[Word] = []
    for word in words:
        if len(word.text) <= limit:
            out.append(word)
            continue
        pieces = [word.text[k : k + limit] for k in range(0, len(word.text), limit)]
        step = (word.end - word.start) / len(pieces)
        out += [Word(p, word.start + n * step, word.start + (n + 1) * step) for n, p in enumerate(pieces)]
    return out


# ---------------------------------------------------------------------------------------------
# Where to break


Tagger = Callable[[str], list[tuple[int, str]]]  # text -> [(char offset, coarse POS)]


@lru_cache(maxsize=4)
def spacy_tagger(model: str) -> Tagger | None:
    """A part-of-speech tagger from a spaCy pipeline, or None when it is not installed."""
    if not model:
        return None
    try:
        import spacy

        nlp = spacy.load(model, exclude=["parser", "ner", "lemmatizer"])
    except Exception:  # noqa: BLE001 - the word lists below still give sound breaks
        return None

    def tag(text: str) -> list[tuple[int, str]]:
        return [(t.idx, t.pos_) for t in nlp(text)]

    return tag


def break_costs(tokens: Sequence[str], tagger: Tagger | None = None) -> list[float]:
    """Cost of breaking (a line or an event) between token k and k+1, for each k."""
    if len(tokens) < 2:
        return []
    pos_left: list[str | None] = [None] * len(tokens)
    pos_right: list[str | None] = [None] * len(tokens)
    if tagger is not None:
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token) + 1
        tags = tagger(" ".join(tokens))
        k = 0
        for idx, pos in tags:
            while k + 1 < len(tokens) and idx >= offsets[k + 1]:
                k += 1
            if pos in ("PUNCT", "SPACE"):
                continue
            if pos_right[k] is None:
                pos_right[k] = pos  # first word-like tag in the token
            pos_left[k] = pos  # last word-like tag in the token
    return [_break_cost(tokens[k], tokens[k + 1], pos_left[k], pos_right[k + 1]) for k in range(len(tokens) - 1)]


def _bare(token: str) -> str:
    return token.strip("\"'()[]\u201c\u201d\u2018\u2019.,;:!?\u2026").casefold()


def _break_cost(left: str, right: str, left_pos: str | None, right_pos: str | None) -> float:
    if SENTENCE_END.search(left):
        return COST_SENTENCE
    if CLAUSE_END.search(left):
        return COST_CLAUSE
    a, b = _bare(left), _bare(right)
    if _is_forbidden(left, right, a, b, left_pos, right_pos):
        return COST_FORBIDDEN
    if b in CONJUNCTIONS or right_pos in ("CCONJ", "SCONJ"):
        return COST_CONJUNCTION
    if b in PREPOSITIONS or right_pos == "ADP":
        return COST_PREPOSITION
    return COST_PLAIN


def _is_forbidden(left: str, right: str, a: str, b: str, left_pos: str | None, right_pos: str | None) -> bool:
    if a in ("a", "an", "the") or (left_pos == "DET" and right_pos in ("NOUN", "PROPN", "ADJ", "NUM")):
        return True  # article and noun
    if _capitalised(left) and _capitalised(right):
        return True  # inside a name (consecutive capitalised words)
    if left_pos == "PROPN" and right_pos == "PROPN":
        return True
    if (left_pos == "PRON" or a in PRONOUNS) and (right_pos in ("VERB", "AUX") or b in AUXILIARIES):
        return True  # pronoun and verb
    return a in DETERMINERS and left_pos is None and b not in CONJUNCTIONS | PREPOSITIONS


def _capitalised(token: str) -> bool:
    bare = token.strip("\"'()[]\u201c\u201d\u2018\u2019")
    return len(bare) > 1 and bare[0].isupper() and bare[0].isalpha() and bare != bare.upper()


# ---------------------------------------------------------------------------------------------
# Lines


@dataclass(frozen=True)
class Layout:
    lines: tuple[str, ...]
    cost: float
    bad_breaks: int


def break_lines(
    tokens: Sequence[str], costs: Sequence[float], rules: Rules, *, first_extra: int = 0, last_extra: int = 0
) -> Layout | None:
    """The best way to set `tokens` in at most `max_lines` lines, or None when they do not fit.

    One line when it fits; otherwise the break with the lowest cost, with a penalty for
    unbalanced lines. `first_extra` / `last_extra` are characters added to the first / last
    line (note signs).
    """
    n = len(tokens)
    if n == 0:
        return None
    prefix = [0]
    for token in tokens:
        prefix.append(prefix[-1] + len(token))

    def width(a: int, b: int) -> int:
        return prefix[b] - prefix[a] + (b - a - 1) + (first_extra if a == 0 else 0) + (last_extra if b == n else 0)

    limit = rules.max_line_chars
    if width(0, n) <= limit:
        return Layout((" ".join(tokens),), 0.0, 0)
    best: tuple[float, list[tuple[int, int]]] | None = None
    for count in range(2, rules.max_lines + 1):
        found = _best_cuts(n, count, width, costs, limit)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    if best is None:
        return None
    cost, cuts = best
    bad = sum(1 for a, _ in cuts[1:] if costs[a - 1] >= COST_FORBIDDEN)
    return Layout(tuple(" ".join(tokens[a:b]) for a, b in cuts), cost, bad)


def _best_cuts(
    n: int, count: int, width: Callable[[int, int], int], costs: Sequence[float], limit: int
) -> tuple[float, list[tuple[int, int]]] | None:
    """Cheapest split of n tokens into `count` lines: break costs plus distance from even lines."""
    target = width(0, n) / count
    inf = math.inf
    best = [[inf] * (n + 1) for _ in range(count + 1)]
    back = [[-1] * (n + 1) for _ in range(count + 1)]
    best[0][0] = 0.0
    for lines in range(1, count + 1):
        for b in range(1, n + 1):
            for a in range(b - 1, -1, -1):
                w = width(a, b)
                if w > limit:
                    break
                if best[lines - 1][a] == inf:
                    continue
                cost = best[lines - 1][a] + (costs[a - 1] if a > 0 else 0.0) + BALANCE_WEIGHT * abs(w - target) / limit
                if cost < best[lines][b]:
                    best[lines][b], back[lines][b] = cost, a
    if best[count][n] == inf:
        return None
    cuts, b = [], n
    for lines in range(count, 0, -1):
        a = back[lines][b]
        cuts.append((a, b))
        b = a
    cuts.reverse()
    return best[count][n] + EXTRA_LINE_COST * (count - 2), cuts


def _lyric_extras(lyric: bool) -> tuple[int, int]:
    return (len(NOTE) + 1, len(NOTE) + 1) if lyric else (0, 0)


def _decorate(lines: Sequence[str], lyric: bool) -> list[str]:
    if not lyric:
        return list(lines)
    out = list(lines)
    out[0] = f"{NOTE} {out[0]}"
    out[-1] = f"{out[-1]} {NOTE}"
    return out


def plain_lines(lines: Sequence[str]) -> list[str]:
    """The words of the lines, without note signs and speaker dashes (for checks)."""
    out = []
    for line in lines:
        if line.startswith(SPEAKER_DASH):
            line = line[len(SPEAKER_DASH) :]
        out.append(line.replace(NOTE, "").strip())
    return out


# ---------------------------------------------------------------------------------------------
# Events


def plan_events(units: Sequence[Unit], rules: Rules, tagger: Tagger | None = None) -> list[Event]:
    """Events in time order, each within the line limits, with frames set by `time_events`."""
    ordered = sorted((u for u in units if u.words), key=lambda u: (u.start, u.end))
    events: list[Event] = []
    for index, unit in enumerate(ordered):
        next_start = ordered[index + 1].start if index + 1 < len(ordered) else math.inf
        words = split_long_words(unit.words, rules.max_line_chars - sum(_lyric_extras(unit.lyric)))
        events += _chunk_unit(unit, words, next_start, rules, tagger)
    return time_events(_merge_short(events, rules), rules)


def _chunk_unit(
    unit: Unit, words: Sequence[Word], next_start: float, rules: Rules, tagger: Tagger | None
) -> list[Event]:
    """Split one unit's words into events: the cheapest cut by break cost, reading speed and duration."""
    tokens = [w.text for w in words]
    costs = break_costs(tokens, tagger)
    first_extra, last_extra = _lyric_extras(unit.lyric)
    n = len(tokens)
    capacity = rules.max_lines * rules.max_line_chars
    best = [math.inf] * (n + 1)
    back: list[tuple[int, Layout] | None] = [None] * (n + 1)
    best[0] = 0.0
    for i in range(n):
        if best[i] == math.inf:
            continue
        chars, early = -1, 0.0
        for j in range(i + 1, n + 1):
            chars += len(tokens[j - 1]) + 1
            if chars + first_extra + last_extra > capacity:
                break
            if j - 1 > i and words[j - 1].start - words[j - 2].end >= PAUSE_S:
                early = max(early, _early_after_pause(words[i].start, words[j - 1].start))
            layout = break_lines(tokens[i:j], costs[i : j - 1], rules, first_extra=first_extra, last_extra=last_extra)
            if layout is None:
                continue
            following = words[j].start if j < n else next_start
            cost = best[i] + _event_cost(
                words[i].start,
                words[j - 1].end,
                following,
                sum(len(x) for x in layout.lines) + first_extra + last_extra,
                rules,
            )
            cost += LINE_BREAK_WEIGHT * layout.cost + (EVENT_BREAK_WEIGHT * costs[j - 1] if j < n else 0.0)
            cost += EARLY_WEIGHT * early
            if cost < best[j]:
                best[j], back[j] = cost, (i, layout)
    cuts: list[tuple[int, int, Layout]] = []
    j = n
    while j > 0:
        entry = back[j]
        assert entry is not None, "every token fits a line, so some cut exists"
        i, layout = entry
        cuts.append((i, j, layout))
        j = i
    cuts.reverse()
    return [
        Event(
            lines=_decorate(layout.lines, unit.lyric),
            words=tuple(words[i:j]),
            speakers=(unit.speaker,),
            lyric=unit.lyric,
            whole=len(cuts) == 1,
            costs=tuple(costs[i : j - 1]),
            bad_breaks=layout.bad_breaks,
        )
        for i, j, layout in cuts
    ]


def _room(start: float, speech_end: float, following: float, rules: Rules) -> float:
    """Seconds an event starting at `start` may stay up: to linger, the next speech, or 7 s."""
    end = min(
        speech_end + rules.max_linger_s, following - rules.min_gap_frames / rules.fps, start + rules.max_duration_s
    )
    return max(end - start, rules.frame_s)


def _needed(chars: int, rules: Rules) -> float:
    return max(rules.min_duration_s, chars / rules.max_cps)


def _event_cost(start: float, speech_end: float, following: float, chars: int, rules: Rules) -> float:
    room, need = _room(start, speech_end, following, rules), _needed(chars, rules)
    cost = 1.0  # one more event
    if need > room:
        cost += 8.0 * (need / room - 1.0)
    if speech_end - start > rules.max_duration_s:
        cost += 20.0 * (speech_end - start - rules.max_duration_s)
    return cost


def _early_after_pause(shown: float, said: float) -> float:
    """Seconds beyond EARLY_AFTER_PAUSE_S that words said at `said`, after a pause, are shown early."""
    return max(0.0, said - shown - EARLY_AFTER_PAUSE_S)


def _merge_short(events: list[Event], rules: Rules) -> list[Event]:
    """Join an event that is too short to read with its neighbour: same speaker, or two speakers with dashes."""
    out: list[Event] = []
    for index, event in enumerate(events):
        following = events[index + 1].speech_start if index + 1 < len(events) else math.inf
        if out:
            merged = _merged(out[-1], event, following, rules)
            if merged is not None:
                out[-1] = merged
                continue
        out.append(event)
    return out


def _short(event: Event, following: float, rules: Rules) -> bool:
    return _needed(event.chars, rules) > _room(event.speech_start, event.speech_end, following, rules)


def _merged(first: Event, second: Event, following: float, rules: Rules) -> Event | None:
    if first.lyric != second.lyric or first.dual or second.dual:
        return None
    gap = second.speech_start - first.speech_end
    if gap > rules.merge_gap_s or second.speech_end - first.speech_start > rules.max_duration_s:
        return None
    if not (_short(first, second.speech_start, rules) or _short(second, following, rules)):
        return None
    words = first.words + second.words
    speakers = tuple(dict.fromkeys(first.speakers + second.speakers))
    joint = COST_SENTENCE if SENTENCE_END.search(first.words[-1].text) else COST_CLAUSE
    costs = first.costs + (joint,) + second.costs
    if len(speakers) == 1:
        extra_first, extra_last = _lyric_extras(first.lyric)
        layout = break_lines([w.text for w in words], costs, rules, first_extra=extra_first, last_extra=extra_last)
        if layout is None:
            return None
        merged = Event(
            lines=_decorate(layout.lines, first.lyric),
            words=words,
            speakers=speakers,
            lyric=first.lyric,
            costs=costs,
            bad_breaks=layout.bad_breaks,
        )
    else:
        if first.lyric or None in speakers or len(speakers) != 2 or rules.max_lines < 2:
            return None
        if not (first.whole and second.whole):
            return None
        lines = [SPEAKER_DASH + " ".join(w.text for w in part) for part in (first.words, second.words)]
        if any(len(line) > rules.max_line_chars for line in lines):
            return None
        merged = Event(lines=lines, words=words, speakers=speakers, costs=costs, dual=True)
    # Only worth it when the joined event reads better than the first alone.
    room = _room(merged.speech_start, merged.speech_end, following, rules)
    if merged.chars / room > max(
        first.chars / _room(first.speech_start, first.speech_end, second.speech_start, rules), rules.max_cps
    ):
        return None
    return merged


def time_events(events: list[Event], rules: Rules) -> list[Event]:
    """Frames for each event: in on the first frame of speech, out when read, gaps chained.

    An event ends when its speech ends, later if it needs more time to be read or to reach
    the minimum duration (up to `max_linger_s` after the speech, never past 7 s), and always
    `min_gap_frames` before the next one. A gap of `chain_gap_frames` or less is closed to
    `min_gap_frames`.
    """
    fps, gap = rules.fps, rules.min_gap_frames
    linger = int(math.floor(rules.max_linger_s * fps + 1e-6))
    max_len = int(math.floor(rules.max_duration_s * fps + 1e-6))
    for event in events:
        event.start_frame = int(math.floor(event.speech_start * fps + 1e-6))
    # An event needs at least one frame, then the gap: push a start that leaves no room.
    for before, after in zip(events, events[1:], strict=False):
        after.start_frame = max(after.start_frame, before.start_frame + 1 + gap)
    for index, event in enumerate(events):
        speech_end = max(int(math.ceil(event.speech_end * fps - 1e-6)), event.start_frame + 1)
        need = int(math.ceil(_needed(event.chars, rules) * fps - 1e-6))
        end, why = speech_end, "speech"
        if event.start_frame + need > end:
            end, why = event.start_frame + need, "reading"
            if end > speech_end + linger:
                end, why = speech_end + linger, "linger"
            if end > event.start_frame + max_len:
                end, why = max(speech_end, event.start_frame + max_len), "max_duration"
        if index + 1 < len(events):
            next_start = events[index + 1].start_frame
            if end > next_start - gap:
                end, why = next_start - gap, "next"
            elif next_start - end <= rules.chain_gap_frames and next_start - gap - event.start_frame <= max_len:
                end = next_start - gap
        event.end_frame, event.limited_by = end, why
    return events


# ---------------------------------------------------------------------------------------------
# Checks


@dataclass
class QcReport:
    counts: dict[str, int]
    over_reading_speed: list[dict[str, Any]] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)

    @property
    def hard_ok(self) -> bool:
        return all(self.counts[name] == 0 for name in HARD_RULES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.counts["events"],
            "counts": self.counts,
            "limits": self.limits,
            "over_reading_speed": self.over_reading_speed,
        }


HARD_RULES = ("line_length", "line_count", "order", "overlap", "min_gap", "empty_duration")
SOFT_RULES = ("reading_speed", "min_duration", "max_duration", "unchained_gap", "bad_line_break")


def qc_report(events: Sequence[Event], rules: Rules) -> QcReport:
    """How many events break each rule, and which events read too fast (with the room they had)."""
    fps = rules.fps
    counts = {"events": len(events)} | {name: 0 for name in HARD_RULES + SOFT_RULES}
    over: list[dict[str, Any]] = []
    min_len = rules.min_duration_s * fps - 1e-6
    max_len = rules.max_duration_s * fps + 1e-6
    for index, event in enumerate(events):
        frames = event.end_frame - event.start_frame
        counts["line_length"] += any(len(line) > rules.max_line_chars for line in event.lines)
        counts["line_count"] += not 1 <= len(event.lines) <= rules.max_lines
        counts["empty_duration"] += frames <= 0
        counts["bad_line_break"] += event.bad_breaks > 0
        counts["min_duration"] += 0 < frames < min_len
        counts["max_duration"] += frames > max_len
        seconds = frames / fps
        cps = event.chars / seconds if seconds > 0 else math.inf
        if cps > rules.max_cps + 1e-9:
            counts["reading_speed"] += 1
            over.append(
                {
                    "index": index + 1,
                    "start": round(event.start_s(fps), 3),
                    "end": round(event.end_s(fps), 3),
                    "cps": round(cps, 1),
                    "chars": event.chars,
                    "limited_by": event.limited_by,
                    "text": " / ".join(event.lines),
                }
            )
        if index + 1 < len(events):
            after = events[index + 1]
            gap = after.start_frame - event.end_frame
            counts["order"] += after.start_frame < event.start_frame
            counts["overlap"] += gap < 0
            counts["min_gap"] += 0 <= gap < rules.min_gap_frames
            counts["unchained_gap"] += rules.min_gap_frames < gap <= rules.chain_gap_frames
    limits = {
        "max_line_chars": rules.max_line_chars,
        "max_lines": rules.max_lines,
        "max_cps": rules.max_cps,
        "min_duration_s": round(rules.min_duration_s, 3),
        "max_duration_s": rules.max_duration_s,
        "min_gap_frames": rules.min_gap_frames,
        "chain_gap_frames": rules.chain_gap_frames,
        "fps": fps,
    }
    return QcReport(counts=counts, over_reading_speed=over, limits=limits)


def check_hard_limits(events: Sequence[Event], rules: Rules) -> QcReport:
    """The QC report; raises when a hard limit is broken (that is a bug, never a property of the input)."""
    report = qc_report(events, rules)
    if not report.hard_ok:
        broken = {name: report.counts[name] for name in HARD_RULES if report.counts[name]}
        raise RuntimeError(f"subtitle layout broke hard limits {broken}; please report this input")
    return report
