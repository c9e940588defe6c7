"""The name check (tasks/name_check.py): which words may be a misheard name, and Whisper itself deciding.

The choosing rules are tested on hand-made words; the listening on speech the project's own voices say,
decoded by the packaged tiny.en with the names in the prompt, where it mishears two names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.name_check import (
    BONUS_NATS,
    Candidate,
    chosen,
    name_candidates,
    name_forms,
    respelt,
    sentences,
    with_name,
)

NAMES = ["Zoya", "Mysore", "Ishaan", "Kabir", "Meera", "Rohan"]


def words_of(text: str, unsure: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Whisper-like words: leading space, a second each, probability 0.3 for the words named unsure."""
    out = []
    for index, word in enumerate(text.split()):
        bare = word.strip(',.?!"')
        out.append({"word": " " + word, "start": float(index), "end": index + 0.8,
                    "probability": 0.3 if bare in unsure else 0.95})  # fmt: skip
    return out


def test_candidates_need_an_unsure_word_spelt_like_a_name() -> None:
    words = words_of("The lake in Noya is cold, my song says.", unsure=("Noya",))
    found = {(c.first, c.last, c.name) for c in name_candidates(words, NAMES)}
    assert (3, 4, "Zoya") in found  # "Noya" -> Zoya
    assert all(c.first <= 3 < c.last for c in name_candidates(words, NAMES)), "each holds the unsure word"
    sure = words_of("Have you ever been to my song in the winter?")  # Whisper was sure of every word
    assert name_candidates(sure, NAMES) == []
    unsure = words_of("Have you ever been to my song in the winter?", unsure=("song",))
    assert Candidate(5, 7, "Mysore") in name_candidates(unsure, NAMES)


def test_function_words_names_and_punctuation_are_never_candidates() -> None:
    # "you" is said as itself, never Zoya; a stop word alone is no name however unsure Whisper was.
    assert name_candidates(words_of("I made the sweet you like.", unsure=("you",)), NAMES) == []
    # A name already there stays; a run does not cross a comma.
    assert name_candidates(words_of("Zoya, Kabir.", unsure=("Zoya", "Kabir")), NAMES) == []
    crossing = name_candidates(words_of("tell me, or else", unsure=("me", "or")), ["Meera"])
    assert all(not (c.first == 1 and c.last == 3) for c in crossing)
    # Words far longer than the name are not the name misheard.
    assert name_candidates(words_of("The teacher wants you.", unsure=("teacher",)), ["Tara"]) == []
    # An ordinary English word must look more like the name than a made-up word as far from it.
    assert name_candidates(words_of("my Grandma said", unsure=("Grandma",)), ["Rohan"]) == []
    assert Candidate(1, 2, "Rohan") in name_candidates(words_of("my Grandmo said", unsure=("Grandmo",)), ["Rohan"])


def words_with(text: str, probabilities: dict[str, float]) -> list[dict[str, Any]]:
    """Whisper-like words with the probabilities given (0.95 for the others)."""
    words = words_of(text)
    return [w | {"probability": probabilities.get(w["word"].strip().strip(',.?!"'), w["probability"])} for w in words]


def test_a_made_up_word_is_unsure_at_a_higher_probability_than_an_english_one() -> None:
    # Whisper wrote "Natarjan" for "that Arjun" at 0.51 and "tellish on" for "tell Ishaan" at 0.55.
    made_up = words_with("The doctor said Natarjan needs rest.", {"Natarjan": 0.6})
    assert Candidate(3, 4, "Arjun") in name_candidates(made_up, ["Arjun"])
    assert name_candidates(words_with("The doctor said Natarjan needs rest.", {"Natarjan": 0.8}), ["Arjun"]) == []
    english = words_with("Kamir says the hotel is full.", {"Kamir": 0.6})
    assert Candidate(0, 1, "Kabir") in name_candidates(english, ["Kabir"])  # "Kamir" is no English word
    assert name_candidates(words_with("The camel said no.", {"camel": 0.6}), ["Kamal"]) == []  # English: 0.5 holds


def test_a_made_up_word_may_be_an_english_word_run_into_the_name() -> None:
    words = words_with("Veer, tellish on the truth.", {"tellish": 0.55})
    found = name_candidates(words, ["Ishaan"])
    assert Candidate(1, 3, "Ishaan", "tell") in found
    out = with_name(words, Candidate(1, 3, "Ishaan", "tell"))
    assert [w["word"] for w in out] == [" Veer,", " tell", " Ishaan", " the", " truth."]
    assert (out[1]["start"], out[1]["end"], out[2]["start"], out[2]["end"]) == (1.0, 1.457, 1.457, 2.8)
    assert Candidate(1, 3, "Ishaan", "tell").text == "tell Ishaan"
    # An English word is not split ("hyperfreeze" is made up, but "freeze" is no name), nor a stop word kept.
    assert all(not c.lead for c in name_candidates(words_with("The lake in hyperfreeze.", {"hyperfreeze": 0.4}),
                                                   ["Jaipur"]))  # fmt: skip
    # The same name with and without the lead is one reading, not two names in a tie.
    plain, led = Candidate(1, 3, "Ishaan"), Candidate(1, 3, "Ishaan", "tell")
    assert chosen([plain, led], [-1.2, -0.8]) == [(led, -0.8)]


def test_the_name_replaces_the_run_keeping_its_punctuation_and_times() -> None:
    words = words_of('She said "my song," twice.', unsure=("song",))
    out = with_name(words, Candidate(2, 4, "Mysore"))
    assert [w["word"] for w in out] == [" She", " said", ' "Mysore,"', " twice."]
    assert (out[2]["start"], out[2]["end"]) == (2.0, 3.8)
    assert out[2]["probability"] == 0.3


def test_chosen_takes_the_bonus_and_refuses_ties_and_overlaps() -> None:
    a, b, c = Candidate(1, 2, "Meera"), Candidate(1, 2, "Veer"), Candidate(1, 3, "Meera")
    assert chosen([a], [-BONUS_NATS + 0.1]) == [(a, -BONUS_NATS + 0.1)]
    assert chosen([a], [-BONUS_NATS - 0.1]) == []  # less likely than the bonus allows
    assert chosen([a, b], [-1.0, -1.5]) == []  # two names fit the same words alike: neither
    assert chosen([a, b], [-0.5, -2.5]) == [(a, -0.5)]
    assert chosen([a, c], [-2.0, 1.0]) == [(c, 1.0)]  # overlapping runs: the better one


def test_a_name_spelt_much_less_like_the_words_must_win_by_more() -> None:
    # A fresh bench film: "Maranasi" scored -1.05 as Madurai and -2.95 as Varanasi, which was said.
    words = words_with("Her sister moved to Maranasi to study medicine.", {"Maranasi": 0.3})
    found = {c.name: c for c in name_candidates(words, ["Madurai", "Varanasi"])}
    assert found["Varanasi"].likeness >= found["Madurai"].likeness + 15
    assert chosen([found["Madurai"], found["Varanasi"]], [-1.05, -2.95]) == []  # sound and spelling disagree
    assert chosen([found["Madurai"], found["Varanasi"]], [-1.05, -4.5]) == [(found["Madurai"], -1.05)]
    assert chosen([found["Varanasi"], found["Madurai"]], [-2.95, -4.5]) == [(found["Varanasi"], -2.95)]


def test_respelt_makes_several_respellings_in_one_segment() -> None:
    words = words_of("Noya met the Androha in my song.", unsure=("Noya", "Androha", "song."))
    taken = [(Candidate(0, 1, "Zoya"), -1.0), (Candidate(3, 4, "Rohan"), 0.5), (Candidate(5, 7, "Mysore"), -2.0)]
    assert " ".join(w["word"].strip() for w in respelt(words, taken)) == "Zoya met the Rohan in Mysore."


def test_sentences_and_name_forms() -> None:
    words = words_of("Go now. Where is Kabir? Wait")
    assert sentences(words) == [range(0, 2), range(2, 5), range(5, 6)]
    assert name_forms(["Baldev Singh", "ज़ोया", "Zoya", "Room 101"]) == ["Baldev Singh", "Baldev", "Singh", "Zoya"]


@pytest.fixture(scope="module")
def misheard() -> dict[str, Any]:
    """Seven sentences in a voice no test film uses (the bench's fresh film's), decoded in 20 s windows
    with and without the check."""
    from bench.films import BENCH_VOICES
    from flows.sample_film import VOICES, require, speak
    from tasks import whisper_models
    from tasks.whisper_models import Audio, WhisperDecoder, load_whisper, model_prompt, resolve_model

    require("espeak-ng"), require("sox")
    sentences_said = [
        "I never wanted to leave this town. Zoya, the bus to Udaipur leaves before sunrise.",
        "Have you ever been to Mysore in the winter?",
        "Nobody believed Meera when she talked about the ghost.",
        "Anaya and Rohan are getting married in the spring.",
        "Kabir says the hotel in Jaipur is fully booked.",
        "The road to Shimla was washed away by the rain.",
        "I told Ishaan that we would meet at the old temple.",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(VOICES, "LAN", BENCH_VOICES["LAN"])  # the bench's fresh film's voice
        pieces = [piece for text in sentences_said for piece in (speak(text, "LAN"), np.zeros(16000, np.float32))]
    samples = np.concatenate(pieces)
    names = ["Veer", "Zoya", "Kabir", "Meera", "Arjun", "Tara", "Nikhil", "Ishaan", "Jaipur", "Udaipur",
             "Shimla", "Kasauli", "Mysore", "Rohan", "Anaya"]  # fmt: skip
    choice = resolve_model("packaged", "cpu", Path(".cache"), "ASR__MODEL")
    prompt = model_prompt(choice.path, "", names, 160, "ASR__MODEL")
    whisper = load_whisper(choice, "cpu", "int8", {"initial_prompt": prompt.initial_prompt})
    seconds = len(samples) / 16000
    chunks = [{"start": float(t), "end": min(t + 20.0, seconds)} for t in range(0, int(seconds) + 1, 20)]
    plain = WhisperDecoder(whisper, "en", "transcribe", prompt_tokens=prompt.tokens)
    audio = Audio(samples=samples)
    scored = WhisperDecoder.sentence_gains
    decoded, gains = {}, {}
    for per_call in (whisper_models.SCORED_PER_CALL_CPU, 100):  # as the check runs, and every text in one call
        checked = WhisperDecoder(whisper, "en", "transcribe", prompt_tokens=prompt.tokens, names=name_forms(names))
        found: list[list[float]] = []

        def recorded(*args: Any, found: list[list[float]] = found) -> list[float]:
            found.append(scored(*args))
            return found[-1]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(whisper_models, "SCORED_PER_CALL_CPU", per_call)
            patch.setattr(WhisperDecoder, "sentence_gains", recorded)
            decoded[per_call], gains[per_call] = (checked.decode(audio, chunks, 8), checked.respellings), found
    return {
        "plain": " ".join(s.text for s in plain.decode(audio, chunks, 8)),
        "checked": decoded[whisper_models.SCORED_PER_CALL_CPU][0],
        "respellings": decoded[whisper_models.SCORED_PER_CALL_CPU][1],
        "gains": gains[whisper_models.SCORED_PER_CALL_CPU],
        "gains_in_one_call": gains[100],
    }


def test_whisper_hears_the_names_it_missed(misheard: dict[str, Any]) -> None:
    # Without the check, tiny.en (with the names in its prompt) writes neither name.
    assert "Mysore" not in misheard["plain"] and "Ishaan" not in misheard["plain"], misheard["plain"]
    text = " ".join(s.text for s in misheard["checked"])
    assert "Mysore in the winter" in text and "told Ishaan that" in text, text
    reasons = [r["reason"] for r in misheard["respellings"]]
    assert len(reasons) == 2 and all(r.startswith("name check:") for r in reasons), reasons
    # The respelt words carry the name, with the times of the words they replace.
    words = [w for s in misheard["checked"] for w in s.words]
    named = [w for w in words if w["word"].strip(" ,.?") in {"Mysore", "Ishaan"}]
    assert len(named) == 2 and all(w["end"] > w["start"] for w in named)


def test_only_the_misheard_names_change(misheard: dict[str, Any]) -> None:
    # Every other word is as Whisper wrote it, mistakes included ("Shinla": spelt too far from Shimla
    # for a word Whisper was sure of).
    checked = " ".join(s.text for s in misheard["checked"])
    assert checked.replace("Mysore", "my song").replace("Ishaan", "Yishan") == misheard["plain"], checked


def test_texts_scored_one_at_a_time_score_as_in_one_call(misheard: dict[str, Any]) -> None:
    # The check scores a sentence's texts one per call on the CPU (memory and time grow with a call's texts);
    # the gains must be those of one call with them all.
    alone, together = misheard["gains"], misheard["gains_in_one_call"]
    assert alone and len(alone) == len(together) and any(len(g) > 1 for g in alone), (alone, together)
    flat = [gain for gains in alone for gain in gains]
    assert [len(g) for g in alone] == [len(g) for g in together]
    assert flat == pytest.approx([gain for gains in together for gain in gains], abs=1e-4), (alone, together)
