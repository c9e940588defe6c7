"""The offline demo: make a one-minute sample film, then subtitle it with the packaged models.

    python -m flows.subtitle demo [--lang en|hi] [--out-film PATH]

`en` (default): two English voices, a song section and names from a small glossary, with
Whisper tiny.en. `hi`: three Hindi voices (festival's NSK voice and two espeak-ng ones), one
English line, a song and names, through `ASR__MODEL=auto` (the packaged multilingual Whisper
base): a Hindi track in Devanagari and an English one from Whisper's translate task. Both run
with no network: the embedded diarization backend, and TMDB skipped for want of a key. Real
films want large-v3 (or a Hindi-tuned Whisper) in the model cache.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.sample_film import RATE, dialogue, make_film, music


@dataclass(frozen=True)
class Sample:
    """A sample film's script: lines (speaker, text, English meaning) before and after a song."""

    title: str
    audio_language: str  # the audio track's tag
    before_song: list[tuple[str, str, str]]
    after_song: list[tuple[str, str, str]]
    glossary: str
    settings: dict[str, Any]
    song_seconds: float = 24.0
    names: list[str] = field(default_factory=lambda: ["Raj", "Simran", "Amritsar"])


ENGLISH = Sample(
    title="Sample Film",
    audio_language="eng",
    before_song=[
        (speaker, line, line)
        for speaker, line in [
            ("A", "Simran, the train leaves for Punjab in ten minutes."),
            ("B", "I know, Raj. My father is waiting at the station."),
            ("A", "Then let us walk together to the platform."),
            ("B", "Promise me that you will write to me every week."),
            ("A", "I promise. I will come back before the monsoon."),
            ("B", "My mother says that you are a good man."),
            ("A", "Your mother has always been very kind to me."),
            ("B", "Go now, before my father sees you here."),
        ]
    ],
    after_song=[
        (speaker, line, line)
        for speaker, line in [
            ("A", "The wedding is on Sunday in Amritsar."),
            ("B", "Everyone from the village will be there."),
            ("A", "Then I will sing for you at the wedding."),
            ("B", "You cannot sing, Raj. Everybody knows that."),
        ]
    ],
    glossary="term\tpreferred\tnotes\nRaj\tRaj\thero\nSimran\tSimran\theroine\nAmritsar\tAmritsar\tcity\n",
    settings={
        "film": {"title": "Sample Film", "source_lang": "en", "target_lang": "en"},
        "asr": {"model": "packaged"},
        "diarization": {"backend": "embedded"},
    },
)
HINDI = Sample(
    title="Sample Hindi Film",
    audio_language="hin",
    before_song=[
        ("HA", "राज, ट्रेन दस मिनट में निकल जाएगी।", "Raj, the train will leave in ten minutes."),
        ("HB", "मुझे पता है। मेरे पिताजी स्टेशन पर इंतज़ार कर रहे हैं।", "I know. My father is waiting at the station."),
        ("HC", "चलो, हम साथ में प्लेटफॉर्म तक चलते हैं।", "Come, let us walk to the platform together."),
        ("A", "Simran, I will come back before the monsoon.", "Simran, I will come back before the monsoon."),
    ],
    after_song=[
        ("HB", "शादी रविवार को अमृतसर में है।", "The wedding is on Sunday in Amritsar."),
        ("HA", "पूरा गाँव वहाँ आएगा।", "The whole village will come there."),
        ("HC", "मैं शादी में तुम्हारे लिए गाना गाऊँगा।", "I will sing a song for you at the wedding."),
    ],
    glossary="term\tpreferred\tnotes\nराज\tRaj\thero\nसिमरन\tSimran\theroine\nअमृतसर\tAmritsar\tcity\n",
    settings={
        "film": {"title": "Sample Hindi Film", "source_lang": "hi", "target_lang": "en"},
        "diarization": {"backend": "embedded"},
    },
    song_seconds=20.0,
)
SAMPLES = {"en": ENGLISH, "hi": HINDI}
DEMO_SETTINGS = ENGLISH.settings


def build_sample_film(path: Path, sample: Sample = ENGLISH) -> dict[str, Any]:
    """Write the sample film and `<film>.truth.json` (script, turns, song region); return the truth."""
    spoken = {text: meaning for _, text, meaning in [*sample.before_song, *sample.after_song]}
    first, turns1 = dialogue([(sp, text) for sp, text, _ in sample.before_song],
                             gaps=[0.9, 0.6, 1.2, 0.5, 1.0, 0.7, 0.9, 1.5], lead=1.0, tail=1.5)  # fmt: skip
    song = music(sample.song_seconds)
    second, turns2 = dialogue([(sp, text) for sp, text, _ in sample.after_song], gaps=[0.8, 0.6, 1.0, 0.5],
                              lead=1.5, tail=2.0)  # fmt: skip
    song_start = first.size / RATE
    offset = song_start + song.size / RATE
    audio = np.concatenate([first, song, second])
    make_film(path, [(audio, sample.audio_language)])
    turns = [t.__dict__ for t in turns1] + [
        {**t.__dict__, "start": round(t.start + offset, 3), "end": round(t.end + offset, 3)} for t in turns2
    ]
    for turn in turns:
        turn["english"] = spoken[turn["text"]]
        turn["language"] = "hi" if turn["speaker"].startswith("H") else "en"
    truth = {
        "turns": turns,
        "song": {"start": round(song_start, 3), "end": round(offset, 3)},
        "duration_s": round(audio.size / RATE, 3),
        "names": sample.names,
    }
    path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=2, ensure_ascii=False))
    return truth


def demo_overrides(glossary: Path, sample: Sample = ENGLISH) -> dict[str, Any]:
    return sample.settings | {"pre_ner": {"film_glossary_file": str(glossary)}}


def main(argv: list[str] | None = None) -> int:
    from flows.temporary_server import serving, start_early

    parser = argparse.ArgumentParser(
        prog="python -m flows.subtitle demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lang", choices=sorted(SAMPLES), default="en", help="the sample film's language")
    parser.add_argument("--out-film", type=Path, help="where to write the sample film (default out/demo/)")
    parser.add_argument("--verbose", action="store_true", help="Prefect's log lines as well as the progress board")
    args = parser.parse_args(argv)
    server = start_early()  # boots while the sample film is made and the run imports its stages
    from flows.prepare import prepare_job
    from flows.subtitle import subtitle
    from settings.model import load_settings

    sample = SAMPLES[args.lang]
    film = args.out_film or load_settings().out_root / "demo" / f"{sample.title} (2026).mkv"
    if not film.is_file():
        print(f"making the sample film {film}", file=sys.stderr)
        film.parent.mkdir(parents=True, exist_ok=True)
        build_sample_film(film, sample)
    glossary = film.parent / f"{film.stem}.glossary.tsv"
    glossary.write_text(sample.glossary, encoding="utf-8")
    job = prepare_job(film, demo_overrides(glossary, sample))
    print(f"job {job.job_id}: {job.dir}", file=sys.stderr)
    from flows.cli import finish_message
    from flows.progress import followed
    from tasks.contract import STAGE_ORDER

    with serving(server), followed(list(STAGE_ORDER), args.verbose):
        results = subtitle(job_id=job.job_id)
    outputs = sorted(p for p in job.output_dir.iterdir() if not p.name.startswith("."))
    print(f"job {job.job_id} finished; outputs in {job.output_dir}:")
    for path in outputs:
        print(f"  {path}")
    print(finish_message(results))
    return 0
