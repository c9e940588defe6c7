"""Bad input (issue 15): refused in one line with exit status 2 before anything is created, or run cleanly.

Refused: a missing path, a folder, an unreadable file, a zero-byte file, text named `.mp4`, a
truncated MP4 or MKV, video without audio, a clip under one second, a malformed job id, a bad
setting. Run through: audio alone, pure silence, 8 kHz mono, 5.1 (dialogue from the centre
channel), odd file names, a path with `..`. The input file is never touched.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from flows.inbox import candidates
from flows.prepare import prepare_job
from settings.jobs import Job, find_job, job_dir_for
from settings.model import FilmSettings
from settings.stages import DemuxSettings, MuxSettings, SubtitleSettings
from tasks.contract import StageResult
from tasks.media import probe
from tests.media import RATE, make_film, noise, require, speak, write_wav
from tests.support import cli, make_job, run_stage
from tests.test_cli import one_error_line

PROJECT = Path(__file__).resolve().parents[1]
LINE = "My father is waiting at the station."
# Every character a shell or ffmpeg could take for something else, in one name, and each on its own.
ODD_NAMES = [
    "Film with spaces (2003).mkv",
    'It\'s "quoted".mkv',
    "$(touch pwned) `id`.mkv",
    "दिल से 🎬.mkv",
    "-i -y.mkv",
]
ALL_ODD = "-a 'b' \"c\" $(touch pwned) दिल से 🎬.mkv"


def snapshot(path: Path) -> tuple[str | None, int] | None:
    """(sha256 or None when unreadable, mtime_ns) of what is at `path`; None when nothing is."""
    if not path.exists():
        return None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        digest = None
    return digest, path.stat().st_mtime_ns


def lavfi_film(path: Path, seconds: float, *, audio: bool = True, options: tuple[str, ...] = ()) -> Path:
    """A small test-pattern film (H.264, a 440 Hz AAC tone) straight from ffmpeg's lavfi sources."""
    require("ffmpeg")
    cmd = ["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=64x36:rate=10:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *options, str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def cut_in_half(path: Path, target: Path) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def unreadable_file(tmp_path: Path) -> Path:
    """A file this user cannot read: chmod 0 for a user, a write-only sysfs file for root."""
    if os.geteuid() != 0:
        target = tmp_path / "locked.mkv"
        target.write_text("x")
        target.chmod(0)
        return target
    for candidate in sorted(Path("/sys").glob("devices/**/rescan"))[:20]:
        try:
            candidate.open("rb").close()
        except PermissionError:
            return candidate
    raise RuntimeError("no unreadable file found for root under /sys; run the tests as an ordinary user")


def bad_input(case: str, tmp_path: Path) -> tuple[Path, str]:
    """The file for one refused case and the words its error must contain."""
    if case == "missing":
        return tmp_path / "nope.mkv", "no such file"
    if case == "directory":
        return tmp_path, "is a directory"
    if case == "unreadable":
        return unreadable_file(tmp_path), "not readable"
    if case == "zero_bytes":
        (tmp_path / "empty.mkv").touch()
        return tmp_path / "empty.mkv", "is empty (0 bytes)"
    if case == "text_named_mp4":
        (tmp_path / "notes.mp4").write_text("Not a film: the shopping list.\n")
        return tmp_path / "notes.mp4", "is not readable media"
    if case == "truncated_mp4":  # ffmpeg's usual MP4: the index (moov) at the end, so half a file has none
        whole = lavfi_film(tmp_path / "whole.mp4", 4)
        return cut_in_half(whole, tmp_path / "cut.mp4"), "moov atom not found"
    if case == "truncated_faststart_mp4":  # index first: ffprobe reads it fine, ffmpeg decodes half and exits 0
        whole = lavfi_film(tmp_path / "whole.mp4", 4, options=("-movflags", "+faststart"))
        return cut_in_half(whole, tmp_path / "cut.mp4"), "looks truncated"
    if case == "truncated_mkv":
        whole = lavfi_film(tmp_path / "whole.mkv", 4)
        return cut_in_half(whole, tmp_path / "cut.mkv"), "looks truncated"
    if case == "video_without_audio":
        return lavfi_film(tmp_path / "mute.mkv", 1, audio=False), "no audio stream"
    if case == "under_one_second":
        return lavfi_film(tmp_path / "blink.mkv", 0.5), "shorter than 1 s (0.5"
    raise AssertionError(case)


REFUSED = [
    "missing",
    "directory",
    "unreadable",
    "zero_bytes",
    "text_named_mp4",
    "truncated_mp4",
    "truncated_faststart_mp4",
    "truncated_mkv",
    "video_without_audio",
    "under_one_second",
]


@pytest.mark.parametrize("case", REFUSED)
def test_bad_input_is_refused_before_anything_is_created(case: str, tmp_path: Path, out_root: Path) -> None:
    target, words = bad_input(case, tmp_path)
    before = snapshot(target)
    done, seconds = cli("prepare", str(target))
    line = one_error_line(done)
    print(f"{case}: {line} ({seconds:.1f} s)")
    assert words in line and str(target) in line
    assert seconds < 15, "refused only after heavy work"
    assert not out_root.exists(), "nothing may be created under OUT_ROOT"
    assert snapshot(target) == before, "the input must be left as it was"


def test_a_truncated_film_would_otherwise_be_half_subtitled(tmp_path: Path) -> None:
    """Why prepare reads a few packets near the end: ffmpeg decodes a cut faststart MP4 without an error."""
    whole = lavfi_film(tmp_path / "whole.mp4", 4, options=("-movflags", "+faststart"))
    cut = cut_in_half(whole, tmp_path / "cut.mp4")
    wav = tmp_path / "cut.wav"
    subprocess.run(["ffmpeg", "-v", "quiet", "-i", str(cut), "-ac", "1", str(wav)], check=True)
    assert probe(cut)["format"]["duration"].startswith("4.0") and sf.info(str(wav)).duration < 3


# Films that must work ------------------------------------------------------------------------------


def spoken_line() -> np.ndarray:
    silence = np.zeros(RATE // 2, np.float32)
    return np.concatenate([silence, speak(LINE, "A"), silence])


def encoded(path: Path, wav: Path, *audio: str) -> Path:
    """`wav` encoded as the film's AAC track with the given ffmpeg audio options, under a test pattern."""
    seconds = sf.info(str(wav)).duration
    cmd = ["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=160x90:rate=25:duration={seconds:.3f}"]
    cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast"]
    cmd += ["-pix_fmt", "yuv420p", "-c:a", "aac", *audio, "-metadata:s:a:0", "language=eng", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def surround(speech: np.ndarray, level: float = 0.08) -> np.ndarray:
    """5.1 (FL FR FC LFE BL BR): the line on the centre channel only, noise on every other one."""
    rng = np.random.default_rng(7)
    channels = rng.standard_normal((speech.size, 6)).astype(np.float32) * level
    channels[:, 2] = speech
    return channels


def make_case(case: str, folder: Path) -> Path:
    require("ffmpeg")
    if case == "silence":
        return make_film(folder / "Silent Film.mkv", [(np.zeros(5 * RATE, np.float32), "eng")])
    speech = spoken_line()
    if case == "audio_only":
        return make_film(folder / "Radio Play.m4a", [(speech, "eng")], video=False)
    wav = write_wav(folder / "line.wav", speech)
    if case == "8khz_mono":
        return encoded(folder / "Phone Call.mkv", wav, "-ar", "8000", "-ac", "1")
    if case == "5.1":
        six = folder / "six.wav"
        sf.write(six, surround(speech), RATE, subtype="PCM_16")
        return encoded(folder / "Surround.mkv", six, "-af", "channelmap=channel_layout=5.1")
    raise AssertionError(case)


def in_process(argv: list[str]) -> tuple[int, str, str]:
    """`flows.cli.main(argv)` in this process (the flow's imports are paid once): exit status, stdout, stderr.

    Not capsys: Prefect's console log handler keeps the stderr of the moment it was set up, and
    capsys closes its streams after each test.
    """
    import flows.subtitle  # noqa: F401  (Prefect sets up its logging on import: let it take pytest's stderr)
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def run_job(film: Path) -> tuple[int, str, Job]:
    """prepare (English, packaged models) and run the whole flow through the command line's entry point."""
    offline = ["--set", "ASR__MODEL=packaged", "--set", "DIARIZATION__BACKEND=embedded"]
    code, job_id, err = in_process(["prepare", str(film), "--source-lang", "en", *offline])
    assert code == 0, err
    code, out, err = in_process([job_id.strip()])
    print(out, err[-3000:])
    return code, out, find_job(Path(os.environ["OUT_ROOT"]), job_id.strip())


def streams(path: Path) -> list[tuple[str, str]]:
    return [(s["codec_type"], s["codec_name"]) for s in probe(path)["streams"]]


@pytest.mark.parametrize("case", ["audio_only", "8khz_mono", "5.1"])
def test_these_films_are_subtitled_end_to_end(case: str, prefect_server: str, tmp_path: Path, out_root: Path) -> None:
    from tests.test_end_to_end import normalised, srt_text  # (that module imports the whole flow)

    film = make_case(case, tmp_path / "films")
    before = snapshot(film)
    source = probe(film)["streams"]
    code, out, job = run_job(film)
    assert code == 0, out
    heard = normalised(srt_text(job.output_dir / f"{film.stem}.en.srt"))
    error_rate = jiwer.wer(normalised(LINE), heard)
    print(f"{case}: {heard!r}, WER {error_rate:.2f}")
    assert error_rate <= 0.3
    demuxed = json.loads((job.dir / "01_demux" / "media.json").read_text())
    assert sf.info(str(job.dir / demuxed["audio"])).samplerate == 16000
    summary = stage_summary(job, "demux")
    if case == "5.1":
        assert [s.get("channel_layout") for s in source if s["codec_type"] == "audio"] == ["5.1"]
        assert summary["channels"] == "FC of 5.1"
    if case == "8khz_mono":
        assert [s["sample_rate"] for s in source if s["codec_type"] == "audio"] == ["8000"]
        assert summary["channels"] == "mono"
    extension = "mka" if case == "audio_only" else "mkv"
    muxed = job.output_dir / f"{film.stem}.subtitled.{extension}"
    assert f"output/{muxed.name}" in out
    assert streams(muxed) == streams(film) + [("subtitle", "subrip")]  # the film's streams copied, one track added
    assert snapshot(film) == before


def stage_summary(job: Job, stage: str) -> dict:
    """A finished stage's summary, from its log's `done in ... s: {...}` line (the manifest keeps none)."""
    log = max(job.logs_dir.glob(f"*_{stage}_*.log")).read_text()
    return ast.literal_eval(log.rsplit(" s: ", 1)[1].strip())


@pytest.mark.parametrize("container, extension, codec", [("mkv", "mka", "subrip"), ("mp4", "m4a", "mov_text")])
def test_audio_alone_is_muxed_into_an_audio_container(
    container: str, extension: str, codec: str, tmp_path: Path, out_root: Path
) -> None:
    film = make_film(tmp_path / "Radio Play.m4a", [(noise(1.5), "eng")], video=False)
    job = prepare_job(film)
    result = subtitled(job, MuxSettings(container=container))
    assert result.summary["output"] == f"output/Radio Play.subtitled.{extension}"
    muxed = job.output_dir / f"Radio Play.subtitled.{extension}"
    assert streams(muxed) == [("audio", "aac"), ("subtitle", codec), ("subtitle", codec)]


def subtitled(job: Job, settings: MuxSettings) -> StageResult:
    """Hand-written upstream (tests/test_subtitle_gen.py), then the real subtitle_gen and mux stages."""
    from tests.test_subtitle_gen import upstream

    up = upstream(job)
    subtitles = run_stage("subtitle_gen", job, SubtitleSettings(formats=["srt"]), upstream=up, film=FilmSettings())
    return run_stage("mux", job, settings, upstream={"subtitle_gen": subtitles}, film=FilmSettings())


def test_pure_silence_runs_cleanly_with_a_note(prefect_server: str, tmp_path: Path, out_root: Path) -> None:
    film = make_case("silence", tmp_path / "films")
    before = snapshot(film)
    code, out, job = run_job(film)
    assert code == 0, out
    assert snapshot(film) == before
    assert "en 0 events" in out and "note: no speech found" in out
    assert "mux skipped: no subtitle events" in out
    assert (job.output_dir / "Silent Film.en.srt").read_text() == ""
    assert not list(job.output_dir.glob("*.subtitled.*"))
    qc_md = (job.dir / "10_subtitle_gen" / "qc.md").read_text()
    assert qc_md.startswith("# Subtitle QC\n\n**Note:** no speech found")
    manifest = json.loads(job.manifest_file.read_text())
    assert manifest["stages"]["mux"]["state"] == "skipped"
    assert "no subtitle events" in manifest["stages"]["mux"]["message"]


# The centre channel, at the demux stage ----------------------------------------------------------


LAYOUTS = {
    "5.1": "FL FR FC LFE BL BR",
    "5.1(side)": "FL FR FC LFE SL SR",
    "3.0": "FL FR FC",
    "quad(side)": "FL FR SL SR",
    "stereo": "FL FR",
}


def tone_film(path: Path, layout: str, codec: str) -> Path:
    """Audio in `layout`: a 440 Hz tone on the centre channel (FC) where there is one, 1000 Hz on every other."""
    require("ffmpeg")
    names = LAYOUTS[layout].split()
    t = np.arange(2 * RATE) / RATE
    tones = [0.3 * np.sin(2 * np.pi * (440 if name == "FC" else 1000) * t) for name in names]
    wav = path.with_suffix(".wav")
    sf.write(wav, np.stack(tones, axis=1).astype(np.float32), RATE, subtype="PCM_16")
    label = f"channelmap=channel_layout={layout}"  # the WAV's channels, in order, named as `layout`
    subprocess.run(["ffmpeg", "-y", "-v", "error", "-i", str(wav), "-af", label, "-c:a", codec, str(path)], check=True)
    return path


def level_at(path: Path, hz: float) -> float:
    audio, rate = sf.read(path, dtype="float32")
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(audio.size, 1 / rate)
    return float(spectrum[np.abs(freqs - hz) < 5].max() / audio.size)


@pytest.mark.parametrize(
    "layout, codec, setting, note",
    [
        ("5.1", "aac", "centre", "FC of 5.1"),
        ("5.1(side)", "ac3", "centre", "FC of 5.1(side)"),
        ("5.1(side)", "aac", "centre", "FC of 6 channels taken as 5.1"),  # AAC has no side layout: none is stated
        ("3.0", "ac3", "centre", "FC of 3.0"),
        ("5.1", "aac", "mix", "mix of 5.1"),
        ("quad(side)", "ac3", "centre", "mix of quad(side)"),  # no centre channel: all four mixed
        ("stereo", "aac", "centre", "mix of stereo"),
    ],
)
def test_surround_dialogue_comes_from_the_centre_channel(
    layout: str, codec: str, setting: str, note: str, tmp_path: Path
) -> None:
    film = tone_film(tmp_path / "tones.mka", layout, codec)
    job = make_job(tmp_path / "out", film)
    result = run_stage("demux", job, DemuxSettings(dialogue_channel=setting))
    wav = job.dir / "01_demux" / "audio.wav"
    centre, other = level_at(wav, 440), level_at(wav, 1000)
    print(f"{layout} {codec} {setting}: {result.summary['channels']}; 440 Hz {centre:.4f}, 1000 Hz {other:.4f}")
    assert result.summary["channels"] == note
    if note.startswith("FC"):
        assert centre > 0.05 and other < centre / 100  # the centre alone: nothing of the other channels
    else:
        assert other > centre


# File names and paths ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_film(tmp_path_factory.mktemp("base") / "base.mkv", [(noise(1.5), "eng")])


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_file_names_prepare_and_demux(name: str, base_film: Path, tmp_path: Path, out_root: Path) -> None:
    folder = tmp_path / "films"
    folder.mkdir()
    film = folder / name
    shutil.copyfile(base_film, film)
    before = snapshot(film)
    args = ("prepare", "--", name) if name.startswith("-") else ("prepare", name)  # relative, as a user types it
    done, _ = cli(*args, cwd=folder)
    assert done.returncode == 0, done.stderr
    job = find_job(out_root, done.stdout.strip())
    assert job.read_job_file().input_path == str(film.resolve())
    result = run_stage("demux", job, DemuxSettings())
    assert abs(result.summary["duration_s"] - 1.5) < 0.2
    assert not (folder / "pwned").exists() and not (PROJECT / "pwned").exists()
    assert snapshot(film) == before


def test_a_name_that_looks_like_an_option_gets_a_hint(base_film: Path, tmp_path: Path, out_root: Path) -> None:
    shutil.copyfile(base_film, tmp_path / "-rf.mkv")
    line = one_error_line(cli("prepare", "-rf.mkv", cwd=tmp_path)[0])
    assert "begins with '-'" in line and "prepare -- -rf.mkv" in line
    assert not out_root.exists()
    line = one_error_line(cli("prepare", "--titel", "x", str(base_film))[0])  # any argparse mistake: one line too
    assert "unrecognized arguments: --titel" in line


def test_odd_names_come_through_subtitle_gen_and_mux(base_film: Path, tmp_path: Path, out_root: Path) -> None:
    film = tmp_path / ALL_ODD
    shutil.copyfile(base_film, film)
    job = prepare_job(film)
    run_stage("demux", job, DemuxSettings())
    subtitled(job, MuxSettings())
    muxed = job.output_dir / f"{film.stem}.subtitled.mkv"
    assert [kind for kind, _ in streams(muxed)] == ["video", "audio", "subtitle", "subtitle"]
    assert not (tmp_path / "pwned").exists() and not (PROJECT / "pwned").exists()


def test_the_watch_folder_takes_odd_names(tmp_path: Path) -> None:
    """The watch folder only passes paths on (prepare allocates the id), so odd names must not be lost."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in [*ODD_NAMES, ALL_ODD]:
        (inbox / name).write_bytes(b"x")
    assert sorted(p.name for p in candidates(inbox)) == sorted([*ODD_NAMES, ALL_ODD])


def test_a_path_with_dotdot_is_resolved(base_film: Path, tmp_path: Path, out_root: Path) -> None:
    (tmp_path / "films" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    film = tmp_path / "films" / "film.mkv"
    shutil.copyfile(base_film, film)
    done, _ = cli("prepare", "../films/sub/../film.mkv", cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stderr
    job = find_job(out_root, done.stdout.strip())
    assert job.read_job_file().input_path == str(film.resolve()) and ".." not in job.read_job_file().input_path
    assert job.dir.resolve().is_relative_to(out_root.resolve())


BAD_JOB_IDS = ["../20260101-0001", "20260101-0001/../../etc", "/etc/passwd", "..", "20260101-0001\n", "२०२६०१०१-०००१"]


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
def test_job_ids_from_outside_are_validated(job_id: str, out_root: Path, tmp_path: Path) -> None:
    """The command line (run and status), the flow's parameter (what a deployment passes) and the job layout."""
    from pydantic import ValidationError

    from flows.subtitle import subtitle
    from settings.jobs import InvalidJobId

    for argv in ([job_id], ["status", job_id]):
        code, _, err = in_process(argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "is not a job id (YYYYMMDD-NNNN)" in err
    with pytest.raises(InvalidJobId):
        subtitle.fn(job_id=job_id)  # the deployment's `job_id` parameter, before any stage or folder
    with pytest.raises(InvalidJobId):
        job_dir_for(out_root, job_id, "someone")
    with pytest.raises(ValidationError):
        Job(job_id=job_id, dir=tmp_path)
    assert not out_root.exists()


def test_a_malformed_job_id_is_refused_by_the_real_command_line(out_root: Path) -> None:
    line = one_error_line(cli("../../etc/passwd")[0])
    assert "'../../etc/passwd' is not a job id" in line


def test_user_must_be_a_plain_folder_name(base_film: Path, out_root: Path) -> None:
    line = one_error_line(cli("prepare", str(base_film), "--set", "USER=../../tmp")[0])
    assert "USER must be a plain name" in line
    assert not out_root.exists()


# Settings ------------------------------------------------------------------------------------------


@pytest.fixture
def job(base_film: Path, out_root: Path) -> Job:
    return prepare_job(base_film)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda text: text + 'ASR__BEEM_SIZE="3"\n', "unknown setting ASR__BEEM_SIZE"),
        (
            lambda text: text.replace('ASR__BEAM_SIZE="5"', 'ASR__BEAM_SIZE="many"'),
            "ASR__BEAM_SIZE: Input should be a valid integer",
        ),
        (lambda text: text + "ASR__BEAM_SIZE 3\n", "is not KEY=VALUE: 'ASR__BEAM_SIZE 3'"),
        (lambda text: text + "ASR__BEAM_SIZE\n", "gives ASR__BEAM_SIZE no value"),
    ],
    ids=["unknown_key", "wrong_type", "not_key_value", "no_value"],
)
def test_a_bad_job_settings_file_is_one_line(job: Job, edit: Callable[[str], str], words: str) -> None:
    text = job.env_file.read_text()
    assert 'ASR__BEAM_SIZE="5"' in text
    job.env_file.write_text(edit(text))
    line = one_error_line(cli(job.job_id)[0])
    assert words in line
    assert not job.manifest_file.exists() and not job.results_dir.exists()


@pytest.mark.parametrize(
    "pair, words", [("ASR__BEAM_SIZE=many", "ASR__BEAM_SIZE: "), ("ASR__BEEM_SIZE=3", "unknown setting ASR__BEEM_SIZE")]
)
def test_a_bad_set_at_prepare_creates_nothing(pair: str, words: str, base_film: Path, out_root: Path) -> None:
    before = snapshot(base_film)
    line = one_error_line(cli("prepare", str(base_film), "--set", pair)[0])
    assert words in line
    assert not out_root.exists() and snapshot(base_film) == before
