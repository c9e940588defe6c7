"""The README's main command, end to end, offline: sample film in, subtitles and a muxed MKV out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from flows.subtitle import PIPELINE
from tasks.contract import STAGE_ORDER

PROJECT = Path(__file__).resolve().parents[1]


def normalised(text: str) -> str:
    text = re.sub(r"<[^>]+>|\{[^}]*\}|♪", " ", text.lower())
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def srt_text(path: Path) -> str:
    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    return " ".join(" ".join(block.splitlines()[2:]) for block in blocks)


@pytest.fixture(scope="module")
def demo_job(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    film = root / "films" / "Sample Film (2026).mkv"
    env = os.environ | {"OUT_ROOT": str(root / "out"), "PREFECT_API_URL": prefect_server}
    done = subprocess.run(
        [sys.executable, "-m", "flows.subtitle", "demo", "--out-film", str(film)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    print(done.stdout)
    job_dir = Path(re.search(r"outputs in (\S+)", done.stdout).group(1)).parent
    truth = json.loads(film.with_suffix(".truth.json").read_text())
    return {"dir": job_dir, "truth": truth, "film": film, "stdout": done.stdout, "stderr": done.stderr}


def test_demo_prints_where_the_outputs_are(demo_job: dict) -> None:
    out = demo_job["dir"] / "output"
    srt = next(out.glob("*.en.srt"))
    mkv = next(out.glob("*.subtitled.mkv"))
    assert str(srt) in demo_job["stdout"] and str(mkv) in demo_job["stdout"]


def test_the_run_shows_each_stage_on_a_line_not_prefect_log_lines(demo_job: dict) -> None:
    """A pipe gets plain lines: each stage starting, passing a quarter, finishing; Prefect's INFO lines stay out."""
    err = demo_job["stderr"]
    for name in STAGE_ORDER:
        assert re.search(rf"^{name}\s+(done\s+\d+:\d\d|skipped)", err, re.MULTILINE), (name, err[-3000:])
    assert re.search(r"^asr\s+\d+%", err, re.MULTILINE), err[-3000:]
    assert "| INFO    |" not in err, err[-3000:]


def test_english_subtitles_have_the_right_words(demo_job: dict) -> None:
    srt = next((demo_job["dir"] / "output").glob("*.en.srt"))
    reference = normalised(" ".join(t["text"] for t in demo_job["truth"]["turns"]))
    hypothesis = normalised(srt_text(srt))
    wer = jiwer.wer(reference, hypothesis)
    print(f"end-to-end WER of the English SRT: {wer:.3f}")
    assert wer <= 0.15


def test_speakers_are_told_apart(demo_job: dict) -> None:
    speakers = json.loads(next(demo_job["dir"].glob("*_diarization/speakers.json")).read_text())
    assert len(speakers["speakers"]) == 2
    transcript = json.loads(next(demo_job["dir"].glob("*_asr/transcript.json")).read_text())
    truth = demo_job["truth"]["turns"]
    mapping: dict[str, dict[str, int]] = {}
    for segment in transcript["segments"]:
        middle = (segment["start"] + segment["end"]) / 2
        true = next((t["speaker"] for t in truth if t["start"] - 0.3 <= middle <= t["end"] + 0.3), None)
        if true is not None and segment.get("speaker"):
            mapping.setdefault(segment["speaker"], {}).setdefault(true, 0)
            mapping[segment["speaker"]][true] += 1
    best = sum(max(v.values()) for v in mapping.values())
    total = sum(sum(v.values()) for v in mapping.values())
    print(f"segments with the right speaker: {best}/{total}")
    assert total and best / total >= 0.9
    assert len({max(v, key=v.get) for v in mapping.values()}) == 2


def test_the_song_is_marked(demo_job: dict) -> None:
    songs = json.loads(next(demo_job["dir"].glob("*_lyrics_detection/songs.json")).read_text())
    song = demo_job["truth"]["song"]
    assert len(songs["regions"]) == 1
    region = songs["regions"][0]
    print(f"song found {region['start']:.1f}-{region['end']:.1f} s, true {song['start']:.1f}-{song['end']:.1f} s")
    assert abs(region["start"] - song["start"]) <= 3 and abs(region["end"] - song["end"]) <= 3


def test_no_hard_rule_is_broken(demo_job: dict) -> None:
    qc = json.loads(next(demo_job["dir"].glob("*_subtitle_gen/qc.json")).read_text())
    print(json.dumps(qc, indent=1)[:1500])
    assert qc["hard_violations"] == 0


def test_the_muxed_film_carries_the_subtitles(demo_job: dict) -> None:
    """The demo film speaks English (the only language the offline model knows), so its source track
    would repeat the English one and is left out; a Hindi film gets both (tests/test_mux.py)."""
    mkv = next((demo_job["dir"] / "output").glob("*.subtitled.mkv"))
    info = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(mkv)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    source = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(demo_job["film"])],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    subs = [s for s in info["streams"] if s["codec_type"] == "subtitle"]
    assert [s["tags"]["language"] for s in subs] == ["eng"] and subs[0]["disposition"]["default"] == 1
    copied = [(s["codec_type"], s["codec_name"]) for s in info["streams"] if s["codec_type"] != "subtitle"]
    assert copied == [(s["codec_type"], s["codec_name"]) for s in source["streams"]]


def test_a_second_run_is_all_cached(demo_job: dict, prefect_server: str) -> None:
    job_id = demo_job["dir"].name
    env = os.environ | {"OUT_ROOT": str(demo_job["dir"].parents[4]), "PREFECT_API_URL": prefect_server}
    done = subprocess.run(
        [sys.executable, "-m", "flows.subtitle", job_id],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((demo_job["dir"] / "manifest.json").read_text())
    states = {name: entry["state"] for name, entry in manifest["stages"].items()}
    assert list(states) == list(STAGE_ORDER), states  # all eleven, none missing
    assert set(states.values()) <= {"cached", "skipped"}, states
    assert manifest["device_mode"] == "CPU"


def test_with_no_server_configured_a_run_starts_its_own_early_on_a_new_prefect_home(
    demo_job: dict, tmp_path: Path
) -> None:
    """A new machine (empty PREFECT_HOME, no API URL): the run starts the temporary server itself at the top
    of the command, so Prefect never starts another; the run is recorded in that home's database and the
    server is gone when the command returns."""
    import sqlite3

    import psutil

    home = tmp_path / "new-prefect-home"
    env = os.environ | {"OUT_ROOT": str(demo_job["dir"].parents[4]), "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    job_id = demo_job["dir"].name
    done = subprocess.run([sys.executable, "-m", "flows.subtitle", job_id, "--verbose"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"job {job_id} finished" in done.stdout
    assert "Starting temporary server" not in output, output[-3000:]  # Prefect's own start did not happen
    assert "View at" not in output  # no link to a UI the temporary server does not serve
    with sqlite3.connect(home / "prefect.db") as db:
        names = [row[0] for row in db.execute("SELECT name FROM flow_run")]
    assert names == [f"subtitle-{job_id}"]

    def serves_this_home(proc: psutil.Process) -> bool:
        try:
            return "prefect.server.api.server:create_app" in " ".join(proc.cmdline()) and proc.environ().get(
                "PREFECT_HOME"
            ) == str(home)
        except psutil.Error:
            return False

    assert not [p.pid for p in psutil.process_iter() if serves_this_home(p)]


def test_each_stage_read_only_what_the_flow_passed_it(demo_job: dict) -> None:
    """In the real run, each stage opened files of no stage it was not given, and was given what it declares."""
    manifest = json.loads((demo_job["dir"] / "manifest.json").read_text())
    specs = {spec.name: spec for spec in PIPELINE}
    for name, entry in manifest["stages"].items():
        assert entry["inputs"] == list(specs[name].needs), name
        assert set(entry["read_from"]) <= set(entry["inputs"]), (name, entry)
    # The English demo passes its transcript through translation (no audio read); everything else reads it all.
    unread = {name: set(e["inputs"]) - set(e["read_from"]) for name, e in manifest["stages"].items()}
    assert {name: gap for name, gap in unread.items() if gap} == {"second_pass_translation": {"demux", "silero_vad"}}
