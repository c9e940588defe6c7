"""How words sound (tasks/phonetics.py) and the name check's candidates by sound (tasks/name_check.py).

The pairs are what tiny.en wrote for the names on the bench films: spelt unlike the name, sounding like it.
"""

from __future__ import annotations

import pytest

from flows.sample_film import require
from tasks.name_check import (
    BONUS_NATS,
    SOUND_BONUS_NATS,
    SOUND_SIMILARITY,
    Candidate,
    chosen,
    likeness,
    name_candidates,
)
from tasks.phonetics import coarse, sound_likeness, sounds_of
from tests.test_name_check import words_of

NAMES = ["Arjun", "Pune", "Tara", "Munnar", "Meera", "Veer"]


@pytest.fixture(scope="module")
def sounds() -> dict[str, str]:
    require("espeak-ng")
    words = "origin Bruna hyper Jaipur teacher for the mother there bakery in".split()
    return sounds_of(words + [p for n in NAMES for p in n.split()])


def test_the_coarse_alphabet_keeps_what_tells_words_apart() -> None:
    assert coarse("dʒˈaɪpʊɹ") == "CApar"  # affricate and diphthong one letter each, stress dropped
    assert coarse("hˈaɪpɚ") == "hApar"  # r-coloured schwa as schwa and r: one letter from Jaipur
    assert coarse("tˈɑːɹɹə") == "tara"  # length dropped, doubles single


def test_sounds_come_from_espeak_for_plain_words_only(sounds: dict[str, str]) -> None:
    assert sounds["Jaipur"] == "CApar" and sounds["hyper"] == "hApar"
    assert set(sounds_of(["ज़ोया", "Room101", ""])) == set()  # no Latin word, nothing asked of espeak


def test_words_spelt_unlike_a_name_may_sound_like_it(sounds: dict[str, str]) -> None:
    for heard, name in [("origin", "Arjun"), ("Bruna", "Pune"), ("hyper", "Jaipur")]:
        assert likeness([heard], name) is None, "spelling alone misses it"
        alike = sound_likeness([heard], name, sounds)
        assert alike is not None and alike >= SOUND_SIMILARITY, (heard, name, alike)
    # Sound does not lift the other conditions: "teacher" is too long to be Tara misheard.
    assert name_candidates(words_of("The teacher wants you.", unsure=("teacher",)), ["Tara"], sounds) == []


def test_candidates_by_sound_and_what_they_must_win_by(sounds: dict[str, str]) -> None:
    words = words_of("The doctor said that origin needs to rest.", unsure=("origin",))
    assert name_candidates(words, NAMES) == []  # by spelling: none
    found = [c for c in name_candidates(words, NAMES, sounds) if (c.first, c.last) == (4, 5)]
    assert [c.name for c in found] == ["Arjun"] and found[0].bonus == SOUND_BONUS_NATS  # an English word
    bruna = words_of("a bakery in Bruna.", unsure=("Bruna",))
    assert "Pune" not in {c.name for c in name_candidates(bruna, NAMES)}
    made_up = {c.name: c for c in name_candidates(bruna, NAMES, sounds)}
    assert made_up["Pune"].bonus == BONUS_NATS  # no English word: the usual bonus
    # Function words alone never sound like a name, however unsure Whisper was of them.
    assert name_candidates(words_of("ask for the keys", unsure=("for", "the")), ["Tara"], sounds) == []
    # An English word that only sounds like the name needs a text nearly as likely with the name: "my mother"
    # scored -1.6 to -2.7 as "my Munnar" on fresh bench films, inside the usual bonus.
    mother = name_candidates(words_of("I promised my mother", unsure=("mother",)), ["Munnar"], sounds)
    assert [(c.name, c.bonus) for c in mother] == [("Munnar", SOUND_BONUS_NATS)]
    assert chosen(mother, [-2.1]) == []
    assert chosen(mother, [-0.6]) == [(mother[0], -0.6)]
    assert chosen([Candidate(3, 4, "Pune", bonus=BONUS_NATS)], [-2.1]) != []
