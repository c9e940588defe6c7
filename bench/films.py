"""The benchmark's films: generated with the project's helpers (flows/sample_film.py), each with its truth.

They differ from the demo's and the tests' films on purpose: other voices (espeak-ng en-us, en+f3,
en+m7, en-gb-x-rp and festival's kal diphone voice), pauses and breaths between turns, pink or
white noise under everything, songs with a singer over part of them, and a cast of names the
pipeline gets as a glossary (the way the demo passes its names: `PRE_NER__FILM_GLOSSARY_FILE`).

Every film has a fixed seed, so the same spec gives the same film; `<film>.truth.json` beside it
holds each turn (speaker, voice, text, start and end of speech, the names it mentions), each song
(span, the lyrics sung over it) and the noise. A film already on disk with the same spec is reused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 1

# espeak-ng voice+variant (pitch 0-99, words a minute) or festival voice, as flows.sample_film.speak takes them.
BENCH_VOICES: dict[str, tuple[str, int, int]] = {
    "US": ("en-us", 50, 160),
    "F3": ("en+f3", 72, 168),
    "M7": ("en+m7", 22, 150),
    "RP": ("en-gb-x-rp", 45, 165),
    "KAL": ("festival:voice_kal_diphone", 0, 0),
    "SING": ("en+f2", 88, 118),  # the singer over a song
    # Voices of the fresh film only (below): no test or earlier benchmark film uses them.
    "SC": ("en-gb-scotland", 40, 172),
    "LAN": ("en-gb-x-gbclan+f4", 62, 158),
    "CAR": ("en-029+m3", 35, 180),
}

PEOPLE = ("Veer", "Zoya", "Kabir", "Meera", "Arjun", "Tara", "Nikhil", "Ishaan")
PLACES = ("Jaipur", "Udaipur", "Shimla", "Kasauli", "Darjeeling", "Lucknow")

# {p} and {q}: people, {l}: a place. No digits: Whisper may write numbers either way.
TEMPLATES = (
    "{p}, the bus to {l} leaves before sunrise.",
    "I told {p} that we would meet at the old temple.",
    "Have you ever been to {l} in the winter?",
    "My brother works at a small hotel in {l}.",
    "{p} has not called me since last Friday.",
    "Please bring the blue suitcase from the car.",
    "We should leave now if we want to catch the train.",
    "The market is closed today because of the festival.",
    "I cannot believe that you forgot my birthday again.",
    "Ask {p} whether the shop near the station is open.",
    "The road to {l} was washed away by the rain.",
    "Nobody in this house listens to me anymore.",
    "{p} and {q} are getting married in the spring.",
    "Why did you not tell me about the letter?",
    "I will wait for you outside the cinema.",
    "Your grandmother made the sweets you like.",
    "The doctor said that {p} needs to rest for a week.",
    "We lived in {l} when I was a little girl.",
    "Do you remember the song they played at the wedding?",
    "There is a storm coming over the hills tonight.",
    "{p}, put your phone away and help me with the dishes.",
    "The teacher wants to see your father tomorrow.",
    "I found the old photographs in the attic.",
    "{q} says the hotel in {l} is fully booked.",
    "Let us take the early flight and surprise them.",
    "You always say that, and then you never come.",
    "The tea in this place is better than at home.",
    "Nobody believed {p} when she talked about the ghost.",
    "We need more chairs for the guests in the garden.",
    "The lake in {l} freezes every winter.",
    "My uncle drives a taxi in the old city.",
    "I am tired of waiting for an answer from {p}.",
    "The lights went out just as the film began.",
    "Promise me that you will look after your sister.",
    "{p} lost the keys to the shop again.",
    "We walked along the river until it was dark.",
    "This is the last time I lend you my bicycle.",
    "Your mother called twice while you were out.",
    "The train from {l} is late again today.",
    "Can you hear the drums from the temple?",
    "{p}, tell {q} the truth before it is too late.",
    "I never wanted to leave this town.",
    "The mangoes from the market are very sweet this year.",
    "Everyone in {l} knows the story of the old fort.",
    "Close the window, the dust is coming in.",
)
LYRICS = (
    "Under the silver moon we dance tonight",
    "Hold my hand and never let it go",
    "The river sings a song of home",
    "Stay with me until the morning light",
    "My heart is flying like a kite",
    "The stars are shining just for you",
)


@dataclass(frozen=True)
class FilmSpec:
    name: str
    minutes: float
    voices: tuple[str, ...]
    people: tuple[str, ...]
    places: tuple[str, ...]
    noise: str  # "pink" or "white"
    noise_level: float  # standard deviation of the noise (speech peaks near 0.3-0.6)
    pause: tuple[float, float]  # seconds between turns, uniform
    long_pause_share: float  # share of gaps 2-4 s long
    breath_share: float  # share of gaps with a breath just before the next turn
    two_sentence_share: float  # share of turns that hold two sentences
    first_song_s: float  # the first song starts after this much of the film
    song_every_s: float  # then one every this many seconds
    song_s: tuple[float, float]
    seed: int
    sentences: str = "bench"  # which lines and song lines it says: a key of SENTENCES

    @property
    def digest(self) -> str:
        fields = asdict(self)
        if self.sentences == "bench":  # as before the field existed, so the bench films on disk stay valid
            del fields["sentences"]
            blob = fields | {"generator": GENERATOR_VERSION, "voices_used": BENCH_VOICES}
        else:
            blob = fields | {"generator": GENERATOR_VERSION, "voices_used": {v: voice_table()[v] for v in self.voices},
                             "sentences_used": SENTENCES[self.sentences]}  # fmt: skip
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


TRIO = FilmSpec("bench-1m-trio", 1.0, ("US", "F3", "KAL"), ("Veer", "Zoya", "Kabir"), ("Jaipur", "Shimla"),
                "pink", 0.006, (0.4, 1.3), 0.0, 0.5, 0.3, 22.0, 1e9, (20.0, 20.0), seed=1301)  # fmt: skip
DUO = FilmSpec("bench-1m-duo", 1.0, ("RP", "M7"), ("Meera", "Arjun"), ("Udaipur", "Kasauli"),
               "white", 0.004, (0.25, 0.8), 0.0, 0.7, 0.4, 30.0, 1e9, (18.0, 18.0), seed=1302)  # fmt: skip
QUAD = FilmSpec("bench-1m-quad", 1.0, ("US", "F3", "M7", "RP"), ("Tara", "Nikhil", "Ishaan", "Zoya"),
                ("Darjeeling", "Lucknow"), "pink", 0.012, (0.6, 2.0), 0.15, 0.3, 0.2, 18.0, 1e9, (24.0, 24.0),
                seed=1303)  # fmt: skip
MIX5 = FilmSpec("bench-5m-mix", 5.0, ("KAL", "US", "F3", "M7", "RP"), PEOPLE, PLACES, "pink", 0.007, (0.3, 1.6),
                0.1, 0.4, 0.3, 70.0, 120.0, (20.0, 28.0), seed=1305)  # fmt: skip
LONG10 = FilmSpec("bench-10m", 10.0, ("US", "F3", "KAL", "RP"), PEOPLE[:6], PLACES, "white", 0.005, (0.3, 1.5),
                  0.1, 0.4, 0.3, 90.0, 240.0, (20.0, 30.0), seed=1310)  # fmt: skip
LONG30 = FilmSpec("bench-30m", 30.0, ("KAL", "US", "F3", "M7", "RP"), PEOPLE, PLACES, "pink", 0.006, (0.3, 1.6),
                  0.1, 0.4, 0.3, 120.0, 240.0, (20.0, 30.0), seed=1330)  # fmt: skip

# A film none of the pipeline's settings were tuned on (added after the others had been looked at closely):
# other voices, other names, quicker turns, louder pink noise, a song in the middle.
FRESH3 = FilmSpec("bench-3m-fresh", 3.0, ("SC", "LAN", "CAR"), ("Rohan", "Anaya", "Dev", "Kiara"),
                  ("Mysore", "Shillong", "Gangtok"), "pink", 0.009, (0.2, 0.9), 0.1, 0.5, 0.35, 75.0, 1e9,
                  (22.0, 22.0), seed=1340)  # fmt: skip

QUICK_SET = (TRIO,)

# Fresh films (`python -m bench --fresh SEED`): a new film per seed, from pools that no bench or test film
# draws on (voices, names, sentences, lyrics), for a check on speech nothing was tuned on. Added 2026-12-07;
# a seed once looked at closely is no longer fresh: take a new one.
FRESH_VOICE_POOL = ("en-us+f4", "en-gb+m1", "en-gb-x-gbcwmd+m5", "en-us+m3", "en-us+m2", "en-gb-x-rp+f5", "en-029+f2",
                    "en+m4", "en-gb-scotland+f1", "en-us+f5", "en+klatt", "en-gb-x-gbclan+m6")  # fmt: skip
FRESH_PEOPLE = ("Ananya", "Tanvi", "Harsh", "Priyanka", "Farhan", "Aditi", "Sameer", "Neha", "Kunal", "Ishita",
                "Meher", "Nandini", "Aarav", "Diya", "Dhruv", "Sneha")  # fmt: skip
FRESH_PLACES = ("Kochi", "Hampi", "Varanasi", "Munnar", "Pune", "Ooty", "Goa", "Agra", "Bhopal", "Nashik",
                "Coorg", "Jodhpur", "Madurai", "Alibaug")  # fmt: skip
FRESH_TEMPLATES = (
    "{p}, did you lock the back door before we left?",
    "The wedding in {l} was louder than any party I remember.",
    "I think {p} borrowed my umbrella and never gave it back.",
    "If the rain stops soon, we can still walk to the market.",
    "{p} and {q} argued about the money for an hour.",
    "My grandfather grew up in {l}, near the river.",
    "Could you turn the music down, I am trying to sleep.",
    "Nobody told me that the shop closes early on Sundays.",
    "{p} wants to open a small bakery in {l}.",
    "We missed the last bus, so we walked home in the dark.",
    "The cricket match was cancelled because of the storm.",
    "Call {p} and ask whether dinner is still at eight.",
    "Her sister moved to {l} to study medicine.",
    "I have never seen the old palace so crowded.",
    "Please do not forget to water the plants while I am away.",
    "{q} laughed so hard that everyone turned to look.",
    "The power cut lasted the whole evening.",
    "We should have booked the tickets last week.",
    "{p} says the view from the hills in {l} is beautiful.",
    "Who left the milk outside the fridge again?",
    "I am not angry, I am only a little tired.",
    "The letter from {p} arrived three days late.",
    "They built a new bridge across the river in {l}.",
    "Keep your voice down, the baby is asleep.",
    "{p}, bring the photographs when you come tomorrow.",
    "The cook burnt the rice and blamed the stove.",
    "My phone fell into the lake during the picnic.",
    "Everyone in the village knows {p}.",
    "The festival lights in {l} can be seen from far away.",
    "I promised my mother I would be home before midnight.",
    "{q} never answers the phone in the morning.",
    "The neighbours are painting their house bright yellow.",
)
FRESH_LYRICS = ("Dancing in the golden rain", "You are the song inside my heart", "Over the hills the morning calls",
                "Sing with me the night is young", "Carry me home across the sea")  # fmt: skip
FRESH_VOICES: dict[str, tuple[str, int, int]] = {}  # filled by fresh_spec, code -> (voice, pitch, words a minute)
SENTENCES = {"bench": (TEMPLATES, LYRICS), "fresh": (FRESH_TEMPLATES, FRESH_LYRICS)}  # FilmSpec.sentences: lines, songs


def fresh_spec(seed: int, minutes: float = 4.0) -> FilmSpec:
    """A film of its own for `seed`: 3 or 4 voices, 5 people and 4 places drawn from the fresh pools, its own
    noise, pacing and songs. The same seed gives the same film."""
    rng = np.random.default_rng(seed)
    voices = []
    for index, voice in enumerate(rng.choice(FRESH_VOICE_POOL, size=int(rng.integers(3, 5)), replace=False)):
        code = f"FRESH{seed}-{index}"
        FRESH_VOICES[code] = (str(voice), int(rng.integers(20, 80)), int(rng.integers(140, 181)))
        voices.append(code)
    people = tuple(str(x) for x in rng.choice(FRESH_PEOPLE, size=5, replace=False))
    places = tuple(str(x) for x in rng.choice(FRESH_PLACES, size=4, replace=False))
    low = round(float(rng.uniform(0.15, 0.5)), 2)
    return FilmSpec(
        f"fresh-{seed}", minutes, tuple(voices), people, places, str(rng.choice(["pink", "white"])),
        round(float(rng.uniform(0.004, 0.015)), 4), (low, round(low + float(rng.uniform(0.6, 1.2)), 2)),
        round(float(rng.uniform(0.0, 0.15)), 2), round(float(rng.uniform(0.3, 0.6)), 2),
        round(float(rng.uniform(0.2, 0.4)), 2), round(float(rng.uniform(30.0, 80.0)), 1),
        round(float(rng.uniform(120.0, 200.0)), 1), (20.0, 28.0), seed=seed, sentences="fresh",
    )  # fmt: skip


DEFAULT_SET = (TRIO, DUO, QUAD, MIX5, FRESH3)
LONG_SET = (*DEFAULT_SET, LONG10, LONG30)


def voice_table() -> dict[str, tuple[str, int, int]]:
    return BENCH_VOICES | FRESH_VOICES


def register_voices() -> None:
    """Add the benchmark's voices (fresh films' too) to the project's voice table (in this process only)."""
    from flows.sample_film import VOICES

    for key, voice in voice_table().items():
        VOICES.setdefault(key, voice)


def name_mentions(text: str, names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """How often each name stands in the text as a whole word."""
    out = {}
    for name in names:
        count = len(re.findall(rf"\b{re.escape(name)}\b", text))
        if count:
            out[name] = count
    return out


def script(spec: FilmSpec, rng: np.random.Generator) -> Any:
    """An endless supply of (speaker, text): templates filled with the cast, no template twice in a row of 12."""
    recent: list[int] = []
    speaker = str(rng.choice(spec.voices))

    def sentence() -> str:
        templates = SENTENCES[spec.sentences][0]
        choices = [i for i in range(len(templates)) if i not in recent]
        index = int(rng.choice(choices))
        recent.append(index)
        del recent[:-12]
        p, q = rng.choice(list(spec.people), size=2, replace=len(spec.people) < 2)
        return templates[index].format(p=p, q=q, l=rng.choice(list(spec.places)))

    while True:
        if len(spec.voices) > 1 and rng.random() < 0.9:
            speaker = str(rng.choice([v for v in spec.voices if v != speaker]))
        text = sentence()
        if rng.random() < spec.two_sentence_share:
            text = f"{text} {sentence()}"
        yield speaker, text


def breath(rng: np.random.Generator, rate: int) -> np.ndarray:
    """A soft in-breath: band-limited noise under a rise-and-fall envelope, 0.25-0.4 s."""
    n = int(rng.uniform(0.25, 0.4) * rate)
    hiss = rng.standard_normal(n + 32)
    hiss = (
        np.convolve(hiss, np.ones(8) / 8, mode="same")[16:-16]
        - np.convolve(hiss, np.ones(32) / 32, mode="same")[16:-16]
    )
    envelope = np.sin(np.linspace(0, np.pi, n)) ** 1.5
    out = hiss[:n] * envelope
    return (out / max(1e-6, np.abs(out).max()) * rng.uniform(0.03, 0.06)).astype(np.float32)


def pink_noise(samples: int, level: float, rng: np.random.Generator, block: int = 2**20) -> np.ndarray:
    """1/f noise with standard deviation `level`, made block by block (a 30-minute film stays small)."""
    out = np.empty(samples, np.float32)
    for first in range(0, samples, block):
        n = min(block, samples - first)
        spectrum = np.fft.rfft(rng.standard_normal(max(n, 2)))
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0
        piece = np.fft.irfft(spectrum / np.sqrt(freqs), n=max(n, 2))[:n]
        out[first : first + n] = piece / max(1e-9, piece.std()) * level
    return out


def song(seconds: float, rng: np.random.Generator, rate: int,
         lines: tuple[str, ...] = LYRICS) -> tuple[np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """music() with the singer over its middle part; the lyrics with times from the song's start."""
    from flows.sample_film import music, speak

    bed = music(seconds) * 0.6
    lyrics = []
    t = seconds * rng.uniform(0.2, 0.35)
    for line in rng.choice(list(lines), size=3, replace=False):
        sung = speak(str(line), "SING") * 0.8
        if t + sung.size / rate > seconds * 0.9:
            break
        a = int(t * rate)
        bed[a : a + sung.size] += sung[: bed.size - a]
        lyrics.append({"text": str(line), "start": round(t, 3), "end": round(t + sung.size / rate, 3)})
        t += sung.size / rate + rng.uniform(0.6, 1.2)
    return bed.astype(np.float32), lyrics


def compose(spec: FilmSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """The film's audio (16 kHz mono) and its truth."""
    from flows.sample_film import RATE, noise, speak

    register_voices()
    rng = np.random.default_rng(spec.seed)
    target = spec.minutes * 60.0
    lines = script(spec, rng)
    pieces: list[np.ndarray] = []
    t = 0.0
    turns: list[dict[str, Any]] = []
    songs: list[dict[str, Any]] = []

    def add(audio: np.ndarray) -> None:
        nonlocal t
        pieces.append(audio.astype(np.float32))
        t += audio.size / RATE

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(round(seconds * RATE)), np.float32)

    add(silence(rng.uniform(0.6, 1.2)))
    next_song = spec.first_song_s
    while t < target - 2.0:
        song_len = float(rng.uniform(*spec.song_s))
        if t >= next_song and target - t > song_len + 6.0:
            add(silence(rng.uniform(0.8, 1.4)))
            audio, lyrics = song(song_len, rng, RATE, SENTENCES[spec.sentences][1])
            songs.append({"start": round(t, 3), "end": round(t + audio.size / RATE, 3),
                          "lyrics": [{**x, "start": round(x["start"] + t, 3), "end": round(x["end"] + t, 3)}
                                     for x in lyrics]})  # fmt: skip
            add(audio)
            add(silence(rng.uniform(1.0, 1.6)))
            next_song = t + spec.song_every_s
            continue
        speaker, text = next(lines)
        speech = speak(text, speaker)
        if turns:  # the pause before this turn, with a breath at its end now and then
            gap = rng.uniform(2.0, 4.0) if rng.random() < spec.long_pause_share else rng.uniform(*spec.pause)
            pause = silence(gap)
            if gap > 0.45 and rng.random() < spec.breath_share:
                b = breath(rng, RATE)
                end = pause.size - int(rng.uniform(0.08, 0.18) * RATE)
                if end - b.size > 0:
                    pause[end - b.size : end] += b
            add(pause)
        turns.append({"speaker": speaker, "voice": voice_table()[speaker][0], "text": text,
                      "start": round(t, 3), "end": round(t + speech.size / RATE, 3),
                      "names": name_mentions(text, (*spec.people, *spec.places))})  # fmt: skip
        add(speech)
    add(silence(rng.uniform(1.2, 2.0)))
    audio = np.concatenate(pieces)
    if spec.noise == "pink":
        audio = audio + pink_noise(audio.size, spec.noise_level, rng)
    else:
        audio = audio + noise(audio.size / RATE, spec.noise_level)[: audio.size]
    peak = float(np.abs(audio).max())
    if peak > 0.98:
        audio = audio / peak * 0.98
    truth = {
        "name": spec.name,
        "spec": asdict(spec),
        "digest": spec.digest,
        "duration_s": round(audio.size / RATE, 3),
        "turns": turns,
        "songs": songs,
        "noise": {"kind": spec.noise, "level": spec.noise_level},
        "cast": {"people": list(spec.people), "places": list(spec.places)},
    }
    return audio.astype(np.float32), truth


def glossary_tsv(spec: FilmSpec) -> str:
    rows = [f"{n}\t{n}\tcharacter" for n in spec.people] + [f"{n}\t{n}\tplace" for n in spec.places]
    return "term\tpreferred\tnotes\n" + "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Film:
    spec: FilmSpec
    path: Path
    truth_path: Path
    glossary: Path
    truth: dict[str, Any]

    @property
    def duration_s(self) -> float:
        return float(self.truth["duration_s"])


def build(spec: FilmSpec, folder: Path) -> Film:
    """The film for `spec` in `folder` (made now, or reused when the one there has the same spec)."""
    from flows.sample_film import make_film

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.mkv"
    truth_path = folder / f"{spec.name}.truth.json"
    glossary = folder / f"{spec.name}.glossary.tsv"
    glossary.write_text(glossary_tsv(spec), encoding="utf-8")
    if path.is_file() and truth_path.is_file():
        truth = json.loads(truth_path.read_text())
        if truth.get("digest") == spec.digest:
            return Film(spec, path, truth_path, glossary, truth)
    audio, truth = compose(spec)
    tmp = path.with_name(f".{path.stem}.tmp.mkv")
    make_film(tmp, [(audio, "eng")])
    tmp.replace(path)
    truth_path.write_text(json.dumps(truth, indent=2))
    return Film(spec, path, truth_path, glossary, truth)
