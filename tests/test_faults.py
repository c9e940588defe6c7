"""Faults in a real run: kill -9 in each model stage (lyrics_detection in its audio half, where its work
is), then a new run (it resumes there, and the outputs are those of an uninterrupted run of the same
film); the Prefect server restarted in the middle of a run; two different jobs at once on one machine."""

from __future__ import annotations

import filecmp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pysubs2
import pytest

from settings.jobs import Job, find_job, now_iso
from tasks.kernel import read_manifest
from tests.conftest import PROJECT, start_server, stop
from tests.media import dialogue, make_film

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

# Where each kill lands: the part first (it is submitted with the first stages, so a later run would find it
# finished), then the model stages in order. Each is (the manifest entry it runs under, its log's name).
KILLS = {
    "music_features": ("lyrics_detection", "lyrics_detection.music_features"),
    "silero_vad": ("silero_vad", "silero_vad"),
    "diarization": ("diarization", "diarization"),
    "asr": ("asr", "asr"),
    "second_pass_translation": ("second_pass_translation", "second_pass_translation"),
}
WORDS = {"Harbour": {"ferry", "harbour", "harbor", "noon", "tea"}, "Garden": {"garden", "morning", "bucket", "dawn"}}
# What each model stage hands on: compared byte for byte with the uninterrupted run's.
DOCUMENTS = {
    "silero_vad": "04_silero_vad/speech_segments.json",
    "diarization": "05_diarization/speakers.json",
    "asr": "06_asr/transcript.json",
    "second_pass_translation": "07_second_pass_translation/translation.json",
    "music_features": "08_lyrics_detection/music_features.json",
}


def subtitle_cmd(job_id: str) -> list[str]:
    return [sys.executable, "-m", "flows.subtitle", job_id]


def states(job: Job) -> dict[str, str]:
    return {name: entry.state for name, entry in read_manifest(job).stages.items()}


def executions(job: Job) -> Counter[str]:
    """How many times each stage's body ran: one log file each (a stage taken from the cache writes none)."""
    return Counter(re.sub(r"^\d+_|_\d{8}-\d{6}\.log$", "", log.name) for log in job.logs_dir.glob("*.log"))


def wait_until_running(
    job: Job, stage: str, proc: subprocess.Popen, log: Path, timeout: float = 600, said: tuple[str, str] | None = None
) -> None:
    """Until this run has started `stage` (a killed run leaves its stages marked running: not those) and, given
    `said` = (log name, words), until a log of that name new in this run holds those words."""
    deadline, since = time.monotonic() + timeout, now_iso()
    logs = f"??_{said[0]}_*.log" if said else ""
    before = set(job.logs_dir.glob(logs)) if said else set()

    def started() -> bool:
        entry = read_manifest(job).stages.get(stage)
        if entry is None or entry.state != "running" or (entry.updated or "") < since:
            return False
        return said is None or any(said[1] in p.read_text() for p in job.logs_dir.glob(logs) if p not in before)

    while not started():
        assert proc.poll() is None, f"the run ended before {stage} started:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{stage} did not start within {timeout} s"
        time.sleep(0.05)


# The speech chain runs in one order, so one job is killed in each of its stages in turn. The music features
# are submitted beside the chain and, with one CPU slot, take it before or after any of its stages: they get
# a job of their own, killed in its first run.
SERIES = (("silero_vad", "diarization", "asr", "second_pass_translation"), ("music_features",))


@pytest.fixture(scope="module")
def killed_job(prefect_server: str, hindi_job: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """For each kill point, its series' job: the Hindi demo's film again as a new job with the demo's settings,
    killed with SIGKILL once at each point of the series (each kill in the run that resumed from the one before),
    then run to the end."""
    from flows.demo import HINDI, demo_overrides
    from flows.prepare import prepare_job

    root = tmp_path_factory.mktemp("killed")
    film = hindi_job["film"]
    env = os.environ | {"OUT_ROOT": str(root / "out"), "PREFECT_API_URL": prefect_server}
    records = {}
    for series in SERIES:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OUT_ROOT", str(root / "out"))
            job = prepare_job(film, demo_overrides(film.parent / f"{film.stem}.glossary.tsv", HINDI))
        at_kill, ran, status = {}, {}, {}
        for point in series:
            stage, log_name = KILLS[point]
            log = root / f"{job.job_id}.{point}.log"
            proc = subprocess.Popen(subtitle_cmd(job.job_id), cwd=PROJECT, env=env, stdout=log.open("w"),
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            try:
                # A part's body starts after its CPU slot; its log says so ("... on cpu") before the work.
                wait_until_running(job, stage, proc, log, said=(log_name, " on cpu") if log_name != stage else None)
                time.sleep(0.3)  # into the stage's work (its model loading or decoding), not its first line
                at_kill[point], ran[point] = states(job), executions(job)
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            shown = subprocess.run([sys.executable, "-m", "flows.subtitle", "status", job.job_id], cwd=PROJECT,
                                   env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
            status[point] = shown.stdout
        done = subprocess.run(subtitle_cmd(job.job_id), cwd=PROJECT, env=env, capture_output=True, text=True,
                              timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        final, ran_in_all = states(job), executions(job)
        for point in series:
            records[point] = {"job": job, "at_kill": at_kill[point], "ran": ran[point], "status": status[point],
                              "final": final, "ran_in_all": ran_in_all}  # fmt: skip
    return records


@pytest.mark.parametrize("point", KILLS)
def test_kill_9_in_a_model_stage_then_a_new_run_resumes_there_with_an_uninterrupted_runs_outputs(
    killed_job: dict, hindi_job: dict, point: str
) -> None:
    stage, log_name = KILLS[point]
    killed = killed_job[point]
    at_kill = killed["at_kill"]
    assert at_kill[stage] == "running"
    line = next(row for row in killed["status"].splitlines() if row.strip().startswith(stage))
    assert "interrupted" in line, killed["status"]
    # What had finished never ran again in the runs after the kill (they took it from the cache); the
    # killed stage ran again and finished.
    finished = [name for name, state in at_kill.items() if state in {"done", "cached"}]
    assert finished, at_kill
    assert {n: killed["ran_in_all"][n] for n in finished} == {n: killed["ran"][n] for n in finished}
    assert killed["ran_in_all"][log_name] > killed["ran"][log_name]
    assert killed["final"][stage] in {"done", "cached"}
    # Its document, and the film's subtitles, are the uninterrupted run's.
    job: Job = killed["job"]
    assert filecmp.cmp(job.dir / DOCUMENTS[point], hindi_job["dir"] / DOCUMENTS[point], shallow=False)
    for srt in sorted((hindi_job["dir"] / "output").glob("*.srt")):
        assert filecmp.cmp(srt, job.output_dir / srt.name, shallow=False), srt.name


def test_a_prefect_server_restarted_mid_run_ends_the_run_and_the_next_run_resumes(tmp_path: Path) -> None:
    """The server goes away during asr and comes back on the same address: the run either rides it
    out or ends (crashed or failed, exit status 1) without hanging; the next run resumes from the cache."""
    audio, _ = dialogue([("A", "The ferry leaves the harbour at noon."), ("C", "Then we still have time for tea.")])
    film = make_film(tmp_path / "Ferry (2026).mkv", [(audio, "eng")])
    home = Path(tempfile.mkdtemp(prefix="filmsubs-restart-prefect-", dir=tmp_path))
    server, url = start_server(home)
    port = url.rsplit(":", 1)[1].split("/")[0]
    env = os.environ | {"OUT_ROOT": str(tmp_path / "out"), "PREFECT_API_URL": url,
                        "ASR__MODEL": "packaged", "DIARIZATION__BACKEND": "embedded"}  # fmt: skip
    try:
        made = subprocess.run([sys.executable, "-m", "flows.subtitle", "prepare", str(film), "--source-lang", "en"],
                              cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        job = find_job(tmp_path / "out", made.stdout.strip())
        log = tmp_path / "run.log"
        proc = subprocess.Popen(subtitle_cmd(job.job_id), cwd=PROJECT, env=env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        wait_until_running(job, "asr", proc, log)
        stop(server)
        server, _ = start_server(home, port=int(port))
        started = time.monotonic()
        proc.wait(timeout=600)
        first = states(job)
        print(f"the run ended {time.monotonic() - started:.0f} s after the restart, exit {proc.returncode}: {first}")
        if proc.returncode != 0:
            assert "error:" in log.read_text() or "Crashed" in log.read_text(), log.read_text()[-3000:]
        again = subprocess.run(subtitle_cmd(job.job_id), cwd=PROJECT, env=env, capture_output=True, text=True,
                               timeout=600)  # fmt: skip
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        final = states(job)
        assert all(final[n] == "cached" for n, s in first.items() if s in {"done", "cached"}), (first, final)
        srt = pysubs2.load(str(next(job.output_dir.glob("*.en.srt"))))
        assert any(w in " ".join(e.plaintext.lower() for e in srt) for w in WORDS["Harbour"]), srt.to_string("srt")
    finally:
        stop(server)


def test_two_different_jobs_at_once_both_complete_with_their_own_subtitles(prefect_server: str, tmp_path: Path) -> None:
    scripts = {
        "Harbour": [("A", "The ferry leaves the harbour at noon."), ("B", "Then we still have time for tea.")],
        "Garden": [("C", "The garden needs water every morning."), ("A", "I will fill the buckets at dawn.")],
    }
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    env = os.environ | {"OUT_ROOT": str(tmp_path / "out"), "PREFECT_API_URL": prefect_server, "TMPDIR": str(shared_tmp),
                        "ASR__MODEL": "packaged", "DIARIZATION__BACKEND": "embedded"}  # fmt: skip
    jobs = {}
    for title, lines in scripts.items():
        film = make_film(tmp_path / f"{title} (2026).mkv", [(dialogue(lines)[0], "eng")])
        made = subprocess.run([sys.executable, "-m", "flows.subtitle", "prepare", str(film), "--source-lang", "en"],
                              cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        jobs[title] = find_job(tmp_path / "out", made.stdout.strip())
    procs = {title: subprocess.Popen(subtitle_cmd(job.job_id), cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for title, job in jobs.items()}  # fmt: skip
    outputs = {title: proc.communicate(timeout=900)[0] for title, proc in procs.items()}
    for title, proc in procs.items():
        assert proc.returncode == 0, outputs[title][-3000:]
    words = {title: " ".join(e.plaintext.lower() for e in pysubs2.load(str(next(job.output_dir.glob("*.en.srt")))))
             for title, job in jobs.items()}  # fmt: skip
    for title, said in words.items():  # each its own film's words, none of the other's
        assert any(w in said for w in WORDS[title]), words
        assert not any(w in said for other, ws in WORDS.items() if other != title for w in ws), words
    assert not list(shared_tmp.iterdir()), "temporary files left in the shared TMPDIR"
    # Outside the two job folders, OUT_ROOT holds only the shared records: job ids and the hardware profile.
    inside = {p for job in jobs.values() for p in job.dir.rglob("*")}
    others = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p not in inside]
    assert all(p.parent.name in {"ids", "hardware"} or p.suffix in {".json", ".lock"} for p in others), others
