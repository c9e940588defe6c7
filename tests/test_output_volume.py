"""A read-only or full output volume: refused before a run with the folder named; space running out in
the middle of a run ends it with a clear error, no half file taken as finished, and the next run after
space is freed completes from where it stopped.

The volume is a small tmpfs mounted by the test (it needs root, or CAP_SYS_ADMIN, as CI has)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pysubs2
import pytest

from settings.jobs import find_job
from tasks.kernel import read_manifest
from tests.media import dialogue, make_film

PROJECT = Path(__file__).resolve().parents[1]
MOUNT_HINT = "this test mounts a small tmpfs: run it as root (or with CAP_SYS_ADMIN), as CI does"


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"mount {' '.join(args)}: {done.stderr.strip()}; {MOUNT_HINT}")


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs of the test's own."""
    point = tmp_path / "volume"
    point.mkdir()
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point))
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    audio, _ = dialogue([("A", "The train leaves at nine tonight."), ("B", "Then we should pack our bags now.")])
    return make_film(tmp_path_factory.mktemp("film") / "Short Film (2026).mkv", [(audio, "eng")])


def cli(*args: str, root: Path, server: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"OUT_ROOT": str(root / "out")} | ({"PREFECT_API_URL": server} if server else {})
    cmd = [sys.executable, "-m", "flows.subtitle", *args]
    return subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout)


def prepared(film: Path, root: Path) -> str:
    done = cli("prepare", str(film), "--source-lang", "en", "--set", "ASR__MODEL=packaged", root=root)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def fill(volume: Path, leave: int = 0) -> Path:
    """A file taking all the volume's free space but about `leave` bytes."""
    filler = volume / "filler.bin"
    with filler.open("ab") as fh:
        try:
            while (free := os.statvfs(volume).f_bavail * os.statvfs(volume).f_frsize) > leave:
                fh.write(b"\0" * max(4096, min(2**20, free - leave)))
                fh.flush()
        except OSError:  # full
            pass
    return filler


def test_read_only_or_full_volume_is_refused_before_the_run_naming_the_folder(film: Path, volume: Path) -> None:
    job_id = prepared(film, volume)
    job = find_job(volume / "out", job_id)
    mount("-o", "remount,ro", str(volume))
    try:
        started = time.monotonic()
        done = cli(job_id, root=volume)
        took = time.monotonic() - started
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"the job folder {job.dir} is not writable (Read-only file system)" in done.stderr
        assert took < 20, f"refused only after {took:.0f} s"  # no server started, no model loaded
        refused = cli("prepare", str(film), root=volume)
        assert refused.returncode == 2 and f"cannot make a job folder under {volume / 'out'}" in refused.stderr
    finally:
        mount("-o", "remount,rw", str(volume))

    filler = fill(volume, leave=2**19)
    done = cli(job_id, root=volume)
    assert done.returncode == 2, done.stderr[-2000:]
    assert re.search(rf"the job folder {re.escape(str(job.dir))} has \d+ KiB free, this run needs about 16 MiB",
                     done.stderr), done.stderr[-2000:]  # fmt: skip
    assert "free some space or move OUT_ROOT" in done.stderr
    assert not (job.dir / "manifest.json").exists()  # nothing ran
    filler.unlink()


def test_space_running_out_mid_run_fails_clearly_and_the_next_run_completes(
    film: Path, volume: Path, prefect_server: str
) -> None:
    job_id = prepared(film, volume)
    job = find_job(volume / "out", job_id)
    env = os.environ | {"OUT_ROOT": str(volume / "out"), "PREFECT_API_URL": prefect_server}
    proc = subprocess.Popen([sys.executable, "-m", "flows.subtitle", job_id], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while read_manifest(job).stages.get("demux", None) is None or read_manifest(job).stages["demux"].state != "done":
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    filler = fill(volume)  # another job took the rest of the disk
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    error = next(line for line in err.splitlines() if line.startswith("error:"))
    assert "No space left on device" in error and str(job.dir) in error, err[-3000:]
    assert "run the job again" in error
    stages = read_manifest(job).stages  # a full disk may refuse the manifest's own "failed" too
    assert not list(job.dir.rglob(".*.tmp*")), "a half-written file was left behind"
    before = {name: entry.state for name, entry in stages.items()}

    filler.unlink()
    again = cli(job_id, root=volume, server=prefect_server)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    after = read_manifest(job).stages
    assert after["demux"].state == "cached"  # finished before the disk filled: not done again
    assert all(after[name].state in {"done", "cached", "skipped"} for name in after), after
    srt = pysubs2.load(str(next(job.output_dir.glob("*.en.srt"))))
    assert "train" in " ".join(e.plaintext.lower() for e in srt), [e.plaintext for e in srt]
    print(f"states when the disk filled: {json.dumps(before)}")
