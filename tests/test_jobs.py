"""prepare, job ids, status, cache folders (bad input: tests/test_bad_input.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from settings.jobs import fingerprint
from tests.media import make_film, noise

PROJECT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.subtitle", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_film(tmp_path_factory.mktemp("media") / "Kal.Ho.Naa.Ho.2003.mkv", [(noise(1.0), "hin")])


def test_prepare_creates_the_job(film: Path, out_root: Path) -> None:
    before = film.read_bytes()
    done = cli("prepare", str(film), "--title", "Kal Ho Naa Ho", "--year", "2003", "--target-lang", "en")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert len(job_id) == 13 and job_id[8] == "-"
    folders = list(out_root.glob(f"*/*/*/*/{job_id}"))
    assert len(folders) == 1
    job_dir = folders[0]
    env_text = (job_dir / f".{job_id}.env").read_text()
    assert 'DEVICE="auto"' in env_text and 'FILM__TITLE="Kal Ho Naa Ho"' in env_text  # decided where it runs
    record = json.loads((job_dir / "job.json").read_text())
    assert record["input_path"] == str(film.resolve()) and record["input_size"] == film.stat().st_size
    assert record["fingerprint"] == fingerprint(film)
    assert film.read_bytes() == before

    status = cli("status", job_id)
    assert status.returncode == 0 and job_id in status.stdout and "no stage has run yet" in status.stdout


def test_parallel_prepares_get_distinct_ids(film: Path, out_root: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.subtitle", "prepare", str(film)],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    ids = [p.communicate(timeout=180)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(ids)) == 4, ids


def test_status_of_an_unknown_job(out_root: Path) -> None:
    done = cli("status", "20990101-0042")
    assert done.returncode == 2 and "job 20990101-0042 does not exist" in done.stderr


def test_fingerprint_reads_samples_not_the_whole_film(tmp_path: Path) -> None:
    big = tmp_path / "big.mkv"
    with big.open("wb") as fh:
        fh.truncate(3 * 2**30)  # sparse: 3 GiB on paper
    tracemalloc.start()
    first = fingerprint(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20
    with big.open("r+b") as fh:
        fh.seek(2**30 + 12345)
        fh.write(b"x")
    assert fingerprint(big) == first  # outside the samples
    with big.open("r+b") as fh:
        fh.seek(3 * 2**30 - 10)
        fh.write(b"y")
    assert fingerprint(big) != first


ENV_CHECK = (
    "import os, sys; {first}; import huggingface_hub.constants as c; "
    "print(os.environ['TORCH_HOME']); print(c.HF_HOME); print(c.HF_HUB_CACHE)"
)


@pytest.mark.parametrize(
    "first",
    ["import flows.subtitle", "import huggingface_hub; import tasks.contract", "import torch; import hardware.policy"],
)
def test_cache_folders_are_exported_before_ml_imports(first: str, tmp_path: Path) -> None:
    root = tmp_path / "caches"
    env = {k: v for k, v in os.environ.items() if k not in {"TORCH_HOME", "HF_HOME"}} | {"CACHE_ROOT": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", ENV_CHECK.format(first=first)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    torch_home, hf_home, hub = done.stdout.split()
    assert (torch_home, hf_home, hub) == (
        str(root / "torch"),
        str(root / "huggingface"),
        str(root / "huggingface" / "hub"),
    )
    assert (root / "torch").is_dir() and (root / "huggingface").is_dir()


def test_read_only_cache_root_names_the_setting(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        root = Path("/sys/filmsubs-cache")  # sysfs refuses new folders even to root
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o555)
        root = locked / "cache"
    env = os.environ | {"CACHE_ROOT": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", "import settings"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "CACHE_ROOT" in done.stderr and "not writable" in done.stderr


def test_a_failed_stage_ends_the_run_with_a_clear_message(prefect_server: str, film: Path, out_root: Path) -> None:
    job_id = cli("prepare", str(film), "--set", "ASR__MODEL=packaged").stdout.strip()
    done = cli(job_id, env={"PIPELINE__FAIL_AT": "demux", "PREFECT_API_URL": prefect_server}, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-2:]
    assert "stage demux failed" in last[0] and "run the job again to resume" in last[1], done.stderr[-2000:]
    status = cli("status", job_id)
    assert "demux" in status.stdout and "failed" in status.stdout and "fault injected" in status.stdout
