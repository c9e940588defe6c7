"""How words sound, for the name check: espeak-ng's phonemes in a coarse alphabet.

Spelling misses what Whisper mishears most: "origin" for Arjun and "Bruna" for Pune share few letters and
most of their sounds (ˈɔːɹɪdʒˌɪn and ˈɑːɹdʒʌn). espeak-ng is one of the project's system tools
(`scripts/setup.sh` installs it); where it is missing, no word has a sound here and the name check goes by
spelling alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping

from rapidfuzz import fuzz

VOICE = "en-us"  # Whisper writes English words; espeak reads the film's romanised names as English too
# IPA to a coarse alphabet: stress and length dropped; voicing merged, and the fricatives Whisper confuses
# (ð, θ, v, f); the vowels in four groups; affricates and diphthongs one letter each; doubles single.
_MANY = [("dʒ", "C"), ("tʃ", "C"), ("aɪ", "A"), ("eɪ", "E"), ("oʊ", "O"), ("aʊ", "W"), ("ɔɪ", "Y"),
         ("ɚ", "ar"), ("ɝ", "ar"), ("ᵻ", "i")]  # fmt: skip
_ONE = str.maketrans({
    "b": "p", "d": "t", "ɾ": "t", "g": "k", "ɡ": "k", "v": "f", "ð": "f", "θ": "f", "z": "s", "ʒ": "S",
    "ʃ": "S", "ɹ": "r", "ɫ": "l", "ŋ": "n", "ʔ": "",
    "ɪ": "i", "ɛ": "e", "æ": "e", "ɑ": "a", "ʌ": "a", "ə": "a", "ɐ": "a", "ɜ": "a", "ɔ": "a", "ɒ": "a",
    "ʊ": "a", "o": "u",
})  # fmt: skip
_MARKS = re.compile(r"[ˈˌː\s\-]")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z']*")


def coarse(ipa: str) -> str:
    """A word's IPA in the coarse alphabet ("dʒˈaɪpʊɹ" -> "CApar")."""
    text = _MARKS.sub("", ipa)
    for many, one in _MANY:
        text = text.replace(many, one)
    return re.sub(r"(.)\1+", r"\1", text.translate(_ONE))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def sounds_of(words: Iterable[str]) -> dict[str, str]:
    """The coarse sound of each plain Latin word, from one espeak-ng call; {} without espeak-ng."""
    plain = sorted({w for w in words if _PLAIN.fullmatch(w)})
    if not plain or not espeak_available():
        return {}
    done = subprocess.run(["espeak-ng", "-q", "-v", VOICE, "--ipa"], input="\n".join(plain) + "\n",
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) != len(plain):
        return {}  # a line espeak split or joined: no sounds rather than sounds against the wrong words
    return {word: coarse(line) for word, line in zip(plain, lines, strict=True)}


def sound_likeness(words: list[str], name: str, sounds: Mapping[str, str]) -> float | None:
    """How much the words sound like the name (rapidfuzz ratio of the coarse sounds, 0-100); None when a
    sound is not known."""
    parts = name.split()
    if not words or not all(sounds.get(w) for w in [*words, *parts]):
        return None
    return float(fuzz.ratio("".join(sounds[w] for w in words), "".join(sounds[w] for w in parts)))
