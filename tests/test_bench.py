"""The benchmark's scoring on hand-made SRTs and truths (fast), and one real `python -m bench --quick` run.

The real run is marked `bench` and left out of the default run (deselected) unless asked for:
`pytest -m bench tests/test_bench.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, scoring
from bench.films import TRIO, name_mentions, pink_noise

ROOT = Path(__file__).resolve().parent.parent


def srt(*cues: tuple[float, float, str]) -> list[scoring.Cue]:
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    text = "\n\n".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{body}" for i, (a, b, body) in enumerate(cues, 1))
    return scoring.parse_srt(text + "\n")


def turn(text: str, start: float, end: float, names: dict[str, int] | None = None) -> dict:
    return {"text": text, "start": start, "end": end, "names": names or {}}


TURNS = [
    turn("Zoya, the bus to Jaipur leaves before sunrise.", 1.0, 3.5, {"Zoya": 1, "Jaipur": 1}),
    turn("I told Kabir that we would meet at the old temple.", 4.5, 7.0, {"Kabir": 1}),
    turn("Close the window, the dust is coming in.", 8.0, 10.0),
]


def test_parse_srt_strips_tags_and_keeps_lines() -> None:
    cues = scoring.parse_srt(
        "1\n00:00:01,000 --> 00:00:02,500\n<i>\u266a Under the moon \u266a</i>\n\n"
        "2\n00:01:02.25 --> 00:01:04,000\n- Where are you?\n- Here.\n"
    )
    assert [(c.start, c.end) for c in cues] == [(1.0, 2.5), (62.25, 64.0)]
    assert cues[0].lines == ("\u266a Under the moon \u266a",)
    assert cues[0].text == "Under the moon"
    assert cues[1].lines == ("- Where are you?", "- Here.")
    assert cues[1].text == "Where are you? Here."


def test_normalise_lowercases_and_drops_punctuation() -> None:
    assert scoring.normalise("Don't, RAJ!  It's \u2019nine\u2019 - o'clock.") == "dont raj its nine oclock"


def test_wer_perfect_and_with_errors() -> None:
    perfect = srt((1.0, 3.5, "Zoya, the bus to Jaipur leaves before sunrise."),
                  (4.5, 7.0, "I told Kabir that we would meet at the old temple."),
                  (8.0, 10.0, "Close the window, the dust is coming in."))  # fmt: skip
    assert scoring.wer(TURNS, perfect)["wer"] == 0.0
    # one substitution (Zoya -> Joya), one deletion (old): 2 errors over 27 words
    worse = srt((1.0, 3.5, "Joya, the bus to Jaipur leaves before sunrise."),
                (4.5, 7.0, "I told Kabir that we would meet at the temple."),
                (8.0, 10.0, "Close the window, the dust is coming in."))  # fmt: skip
    figures = scoring.wer(TURNS, worse)
    assert figures["substitutions"] == 1 and figures["deletions"] == 1
    assert figures["wer"] == pytest.approx(2 / 27, abs=1e-4)
    assert scoring.wer(TURNS, [])["wer"] == 1.0


def test_wer_counts_lyrics_and_dialogue_wer_leaves_songs_out() -> None:
    truth = {"turns": TURNS, "songs": [{"start": 11.0, "end": 20.0,
                                        "lyrics": [{"text": "Hold my hand", "start": 12.0, "end": 14.0}]}]}  # fmt: skip
    cues = srt((1.0, 3.5, "Zoya, the bus to Jaipur leaves before sunrise."),
               (4.5, 7.0, "I told Kabir that we would meet at the old temple."),
               (8.0, 10.0, "Close the window, the dust is coming in."),
               (12.0, 14.5, "\u266a Hold my hand \u266a"))  # fmt: skip
    scored = scoring.score(truth, cues)
    assert scored["wer"]["wer"] == 0.0
    assert scored["dialogue_wer"]["wer"] == 0.0  # the lyric cue lies inside the song: left out
    no_lyrics = scoring.score(truth, cues[:3])
    assert no_lyrics["wer"]["deletions"] == 3 and no_lyrics["dialogue_wer"]["wer"] == 0.0


def test_lines_lost_finds_a_turn_with_none_of_its_words() -> None:
    cues = srt((1.0, 3.5, "Zoya, the bus to Jaipur leaves before sunrise."),
               (8.0, 10.0, "Close the window, the dust is coming in."))  # fmt: skip
    lost = scoring.lines_lost(TURNS, cues)
    assert [x["turn"] for x in lost] == [1]
    # the words are there but at another time: still lost (the cue does not overlap the turn)
    late = srt((1.0, 3.5, "Zoya, the bus to Jaipur leaves before sunrise."),
               (8.0, 10.0, "I told Kabir that we would meet at the old temple. Close the window."))  # fmt: skip
    assert [x["turn"] for x in scoring.lines_lost(TURNS, late)] == [1]
    # one content word heard is enough; stop words alone are not
    partial = srt((4.6, 6.9, "the temple"), (1.0, 3.5, "Zoya bus"), (8.0, 10.0, "the is in"))
    assert [x["turn"] for x in scoring.lines_lost(TURNS, partial)] == [2]


def test_name_accuracy_counts_mentions_spelt_right_over_their_turn() -> None:
    cues = srt((1.0, 3.5, "Zoya, the bus to Jaypur leaves before sunrise."),
               (4.5, 7.0, "I told kabir that we would meet at the old temple."))  # fmt: skip
    names = scoring.name_accuracy(TURNS, cues)
    assert (names["right"], names["total"]) == (2, 3)  # Jaypur is wrong; case does not matter
    assert names["share"] == pytest.approx(2 / 3, abs=1e-4)
    assert [m["name"] for m in names["misses"]] == ["Jaipur"]
    # a name inside a longer word is not the name
    assert (
        scoring.name_accuracy([turn("Zoya left.", 0.0, 1.0, {"Zoya": 1})], srt((0.0, 1.0, "Zoyas left.")))["right"] == 0
    )
    assert scoring.name_accuracy([turn("No names here.", 0.0, 1.0)], [])["share"] is None


def test_names_put_in_are_cast_names_the_alignment_finds_where_another_word_was_said() -> None:
    said = [turn("I promised my mother I would be home.", 0.0, 2.0), turn("Kabir and Munnar.", 3.0, 4.0)]
    right = srt((0.0, 2.0, "I promised my mother I would be home."), (3.0, 4.0, "Kabir and Munnar."))
    assert scoring.names_put_in(scoring.alignment(said, right), ["Kabir", "Veer", "Munnar"]) == []
    # "my mum and" made into Munnar, Veer for Kabir: both put in; the Munnar said stays right
    wrong = srt((0.0, 2.0, "I promised Munnar I would be home."), (3.0, 4.0, "Veer and Munnar."))
    assert scoring.names_put_in(scoring.alignment(said, wrong), ["Kabir", "Veer", "Munnar"]) == ["munnar", "veer"]
    # a name shown with nothing said there
    extra = srt((0.0, 2.0, "I promised my mother I would be home, Kochi."), (3.0, 4.0, "Kabir and Munnar."))
    assert scoring.names_put_in(scoring.alignment(said, extra), ["Kochi"]) == ["kochi"]
    assert scoring.names_put_in(scoring.alignment([], extra[:1]), ["Kochi"]) == ["kochi"]  # nothing said there
    assert scoring.names_put_in(scoring.alignment(said, []), ["Kochi"]) == []


def test_start_offsets_median_and_p90() -> None:
    cues = srt((1.1, 3.5, "Zoya, the bus to Jaipur leaves before sunrise."),
               (4.0, 7.0, "I told Kabir that we would meet at the old temple."),
               (9.0, 10.0, "Close the window, the dust is coming in."))  # fmt: skip
    offsets = scoring.start_offsets(TURNS, cues)
    assert offsets["offsets_s"] == [0.1, 0.5, 1.0]
    assert offsets["median_s"] == 0.5
    assert offsets["p90_s"] == pytest.approx(0.9, abs=1e-3)
    # a cue that only grazes the next turn is not that turn's subtitle
    grazing = srt((1.0, 4.6, "Zoya, the bus to Jaipur leaves before sunrise."), (4.8, 7.0, "I told Kabir."))
    assert scoring.start_offsets(TURNS[:2], grazing)["offsets_s"] == [0.0, 0.3]
    # the line before, still up for reading for 0.3 s of the turn, is not its subtitle either
    lingering = srt((1.0, 4.8, "Zoya, the bus to Jaipur leaves before sunrise."), (4.9, 7.0, "I told Kabir."))
    assert scoring.start_offsets(TURNS[:2], lingering)["offsets_s"] == [0.0, 0.4]
    # one cue over two turns: the second turn's subtitle came early
    merged = srt((1.0, 7.0, "Zoya, the bus to Jaipur leaves before sunrise. I told Kabir."))
    assert scoring.start_offsets(TURNS[:2], merged)["offsets_s"] == [0.0, 3.5]


def test_rule_breaks_use_the_project_rules() -> None:
    long_line = "This line is far longer than forty-two characters on screen"
    cues = srt((1.0, 1.5, "Short."), (1.52, 4.0, long_line), (5.0, 6.0, "One\nTwo\nThree"))
    rules = scoring.rule_breaks(cues)
    assert rules["short"] == 1
    assert rules["line_length"] == 1
    assert rules["line_count"] == 1
    assert rules["counts"]["min_gap"] == 1  # 0.02 s between the first two: under 2 frames
    assert rules["hard"] == 3
    assert rules["reading_speed"] == 1  # 59 characters in 2.48 s


def test_percentile_and_ratio_helpers() -> None:
    assert scoring.percentile([], 90) is None
    assert scoring.percentile([3.0], 90) == 3.0
    assert scoring.percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    assert report.ratio(1.0, 0.0) is None and report.ratio(1.0, 2.0) == 0.5
    assert report.Target("x", 0.7, "<=", 0.8, 13).met is True
    assert report.Target("x", None, "<=", 0.8, 13).met is None
    assert "MISSED" in report.Target("x", 3, "==", 0, 13).note()


def test_bench_settings_go_to_the_pipeline_side_only(tmp_path: Path) -> None:
    from bench import runs

    side = runs.Side("cpu", "packaged", tmp_path, "int8", 8, 2, ("ASR__CHUNK_S=21",))
    prepare = runs.prepare_cmd(Path("film.mkv"), Path("cast.tsv"), side)
    assert prepare[-2:] == ["--set", "ASR__CHUNK_S=21"]
    assert "ASR__CHUNK_S=21" not in " ".join(runs.whisperx_cmd(Path("film.mkv"), side, tmp_path))


def test_films_truth_helpers() -> None:
    assert name_mentions("Zoya met Zoya in Jaipur, not Zoyan.", ("Zoya", "Jaipur", "Kabir")) == {"Zoya": 2, "Jaipur": 1}
    import numpy as np

    noise = pink_noise(50000, 0.01, np.random.default_rng(0), block=2**14)
    assert noise.shape == (50000,) and abs(float(noise.std()) - 0.01) < 0.002
    assert TRIO.digest == TRIO.digest and len(TRIO.digest) == 16


def test_a_fresh_film_shares_no_voice_name_or_sentence_with_the_bench_films(tmp_path: Path) -> None:
    import re

    from bench import films
    from bench.run import choose_films, parse_args

    spec = films.fresh_spec(4101, minutes=0.4)
    assert spec == films.fresh_spec(4101, minutes=0.4) and spec != films.fresh_spec(4102, minutes=0.4)
    bench_voices = {films.BENCH_VOICES[v][0] for s in films.LONG_SET for v in s.voices}
    assert not {films.voice_table()[v][0] for v in spec.voices} & bench_voices
    bench_names = {n for s in films.LONG_SET for n in (*s.people, *s.places)}
    assert not set(films.FRESH_PEOPLE + films.FRESH_PLACES) & bench_names
    assert not set(films.FRESH_TEMPLATES) & set(films.TEMPLATES) and not set(films.FRESH_LYRICS) & set(films.LYRICS)
    film = films.build(spec, tmp_path)  # 24 s of speech, its own truth
    fresh = [re.compile(re.escape(t).replace(r"\{p\}", r"\w+").replace(r"\{q\}", r"\w+").replace(r"\{l\}", r"\w+"))
             for t in films.FRESH_TEMPLATES]  # fmt: skip
    assert film.truth["turns"] and all(any(f.search(t["text"]) for f in fresh) for t in film.truth["turns"])
    assert film.truth["cast"] == {"people": list(spec.people), "places": list(spec.places)}
    assert films.build(spec, tmp_path).path.stat().st_mtime == film.path.stat().st_mtime  # reused
    chosen = choose_films(parse_args(["--fresh", "7,8", "--fresh-minutes", "2"]))
    assert [(s.name, s.minutes) for s in chosen] == [("fresh-7", 2.0), ("fresh-8", 2.0)]
    with pytest.raises(SystemExit, match="whole-number seeds"):
        choose_films(parse_args(["--fresh", "seven"]))


@pytest.mark.bench
@pytest.mark.timeout(3600)
def test_bench_quick_runs(tmp_path: Path) -> None:
    """The real thing on the quick set (several minutes); the default run deselects it (pyproject's addopts):
    `pytest -m bench tests/test_bench.py`."""
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--report", str(out), "--work", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    film = data["films"][0]
    assert film["quality"]["pipeline"]["events"] > 0 and film["quality"]["whisperx"]["events"] > 0
    assert film["speed"]["pipeline"]["wall_s"] > 0 and film["speed"]["whisperx"]["wall_s"] > 0
    assert data["targets"], "targets are reported"
