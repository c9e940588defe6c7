"""Mistakes at the command line: one line naming the problem, exit status 2, no server, no run recorded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows.prepare import prepare_job
from tests.media import make_film, noise
from tests.support import cli

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def job(tmp_path: Path, out_root: Path):
    return prepare_job(make_film(tmp_path / "film.mkv", [(noise(1.0), "hin")]))


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize("job_id, words", [("20260101-9999", "does not exist"), ("not-a-job", "is not a job id")])
def test_unknown_or_malformed_job_id(out_root: Path, job_id: str, words: str) -> None:
    done, seconds = cli(job_id)
    line = one_error_line(done)
    assert words in line and "prepare FILM" in line
    assert seconds < 10, f"answered in {seconds:.1f} s: it should not start anything"


def test_unknown_set_key(job) -> None:
    line = one_error_line(cli(job.job_id, "--set", "ASR__BEEM_SIZE=3")[0])
    assert "unknown setting ASR__BEEM_SIZE" in line


def test_wrong_type_of_value(job) -> None:
    line = one_error_line(cli(job.job_id, "--set", "ASR__BEAM_SIZE=many")[0])
    assert "ASR__BEAM_SIZE" in line and "'many'" in line


def test_a_device_the_machine_lacks(job) -> None:
    line = one_error_line(cli(job.job_id, "--set", "DEVICE=cuda")[0])
    assert "DEVICE=cuda" in line and "no CUDA GPU" in line


def test_an_unknown_stage(job) -> None:
    line = one_error_line(cli(job.job_id, "--stages", "asr,subtitles")[0])
    assert "unknown stage subtitles" in line and "subtitle_gen" in line


def test_no_run_is_recorded(job) -> None:
    cli(job.job_id, "--set", "NOPE=1")
    assert not job.manifest_file.exists() and not job.results_dir.exists()


def test_prepare_refuses_an_unsupported_target_language(tmp_path: Path, out_root: Path) -> None:
    film = make_film(tmp_path / "film.mkv", [(noise(1.0), "hin")])
    line = one_error_line(cli("prepare", str(film), "--target-lang", "fr")[0])
    assert "FILM__TARGET_LANG" in line and "en only" in line and "'fr'" in line
    assert not out_root.exists() or not list(out_root.glob("*/*/*/*/*"))


QUICK_EXIT = """
import atexit, sys, tempfile
from pathlib import Path
from flows import cli

folder = tempfile.TemporaryDirectory()  # its finalizer was registered before the command's exit hook
Path(sys.argv[1]).write_text(folder.name)

def main(argv=None):
    atexit.register(lambda: print("a later exit hook ran"))
    print("main's output, not flushed")
    return int(sys.argv[2])

cli.main = main
cli.run_command()
"""


@pytest.mark.parametrize("status", [0, 3])
def test_the_command_skips_teardown_but_not_its_exit_hooks_output_or_status(tmp_path: Path, status: int) -> None:
    import sys

    record = tmp_path / "folder.txt"
    done = subprocess.run([sys.executable, "-c", QUICK_EXIT, str(record), str(status)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == status, done.stderr
    assert done.stdout == "main's output, not flushed\na later exit hook ran\n"
    assert not Path(record.read_text()).exists()  # the finalizers ran
