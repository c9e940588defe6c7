"""Running both sides and measuring them: wall time and the peak memory of the whole process tree.

`measure` is the one measuring helper: it starts a command, polls the resident memory of the
process and all its descendants (psutil, every 0.1 s) and keeps the peak and the timeline, and
timestamps every output line as it arrives (so WhisperX's transcription can be timed from its log).

The pipeline side is the README's two commands, `prepare FILM --source-lang en ...` then
`python -m flows.subtitle JOB_ID`, each its own process, against one Prefect server started for
the whole benchmark (`prefect server start`), or without one (Prefect's temporary server). The
WhisperX side is its CLI on the same film, model, compute type and batch size.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
WHISPERX = str(Path(PYTHON).with_name("whisperx"))
# Never reach the network, never use a key or token the shell may hold.
DROPPED_ENV = ("PREFECT_API_URL", "HF_TOKEN", "TMDB_API_KEY", "PREFECT_PROFILE")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


class RunFailed(RuntimeError):
    """A measured command exited with an error: the benchmark stops and says where its log is."""


@dataclass
class Measured:
    cmd: list[str]
    rc: int
    wall_s: float
    peak_rss: int  # bytes: the largest sum of RSS over the process and its descendants
    started: float  # epoch seconds
    log: Path
    samples: list[tuple[float, int]] = field(default_factory=list)  # (epoch, tree RSS)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (epoch, line) of stdout and stderr
    timed_out: bool = False

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def peak_between(self, start: float, end: float) -> int | None:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else None

    def rss_at(self, when: float) -> int | None:
        """The tree's RSS at the sample closest to `when`."""
        if not self.samples:
            return None
        return min(self.samples, key=lambda s: abs(s[0] - when))[1]

    def summary(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "rc": self.rc, "wall_s": round(self.wall_s, 2),
                "peak_rss_mb": round(self.peak_rss / 2**20, 1), "log": str(self.log)}  # fmt: skip


def tree_rss(proc: psutil.Process) -> tuple[int, list[psutil.Process]]:
    """RSS of a process and its descendants (those that vanish while counted are left out)."""
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, []
    total = 0
    for member in family:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total, family


def measure(
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path = ROOT,
    timeout_s: float | None = None,
    interval_s: float = 0.1,
    echo: bool = False,
) -> Measured:
    """Run `cmd`, return its wall time, peak tree memory, memory timeline and timestamped output lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lines: list[tuple[float, str]] = []
    lock = threading.Lock()
    started = time.time()
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def reader() -> None:
        assert proc.stdout is not None
        with log.open("w", encoding="utf-8") as sink:
            sink.write("$ " + " ".join(cmd) + "\n")
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with lock:
                    lines.append((time.time(), line))
                sink.write(line + "\n")
                if echo:
                    print(f"    | {line}", file=sys.stderr)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    samples: list[tuple[float, int]] = []
    peak = 0
    family: list[psutil.Process] = []
    timed_out = False
    while proc.poll() is None:
        rss, seen = tree_rss(proc)
        if seen:
            family = seen
        samples.append((time.time(), rss))
        peak = max(peak, rss)
        if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
            timed_out = True
            _kill_group(proc.pid)
            break
        time.sleep(interval_s)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    thread.join(timeout=10)
    for member in family[1:]:  # a descendant the command left behind (it was started by us)
        try:
            if member.is_running():
                member.terminate()
        except psutil.Error:
            pass
    return Measured(cmd, rc, wall, peak, started, log, samples, lines, timed_out)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    time.sleep(5)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    cache = ROOT / ".cache"
    env |= OFFLINE_ENV | {"HF_HOME": str(cache / "huggingface"), "TORCH_HOME": str(cache / "torch")}
    return env | extra


# Prefect --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrefectServer:
    """One `prefect server start` for the whole benchmark, in its own PREFECT_HOME."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home, self.log = home, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.start_s = 0.0

    def start(self, timeout_s: float = 180.0) -> float:
        """Start it; the seconds until /health answered (a new PREFECT_HOME: includes the migration)."""
        self.home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        env = base_env(PREFECT_HOME=str(self.home))
        t0 = time.perf_counter()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = t0 + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RunFailed(f"prefect server exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self.start_s = time.perf_counter() - t0
                        return self.start_s
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RunFailed(f"prefect server did not answer within {timeout_s:.0f} s; see {self.log}")

    def rss(self) -> int:
        if self.proc is None:
            return 0
        return tree_rss(psutil.Process(self.proc.pid))[0]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def migrate(home: Path, log: Path) -> Measured:
    """Prefect's database in `home`, migrated the way scripts/setup.sh does it."""
    home.mkdir(parents=True, exist_ok=True)
    return measure([PYTHON, "-m", "prefect", "server", "database", "upgrade", "-y"], base_env(PREFECT_HOME=str(home)),
                   log)  # fmt: skip


# The pipeline -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """What both sides run with: device, model (setting value and folder), compute type, batch size."""

    device: str
    model: str  # the ASR__MODEL value
    model_path: Path
    compute_type: str
    batch_size: int
    threads: int
    settings: tuple[str, ...] = ()  # more KEY=VALUE settings for the pipeline side only (`--set`)


@dataclass
class PipelineRun:
    job_id: str
    job_dir: Path
    prepare: Measured
    run: Measured
    server: str  # "running" or "temporary"

    @property
    def wall_s(self) -> float:
        return self.prepare.wall_s + self.run.wall_s

    @property
    def peak_rss(self) -> int:
        return max(self.prepare.peak_rss, self.run.peak_rss)

    def srt(self) -> Path | None:
        found = sorted((self.job_dir / "output").glob("*.en.srt"))
        return found[0] if found else None


def pipeline_env(out_root: Path, prefect_home: Path, api_url: str | None) -> dict[str, str]:
    env = base_env(OUT_ROOT=str(out_root), PREFECT_HOME=str(prefect_home))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def prepare_cmd(film: Path, glossary: Path, side: Side) -> list[str]:
    return [
        PYTHON, "-m", "flows.subtitle", "prepare", str(film), "--source-lang", "en", "--device", side.device,
        "--set", f"ASR__MODEL={side.model}", "--set", f"ASR__COMPUTE_TYPE={side.compute_type}",
        "--set", f"ASR__BATCH_SIZE={side.batch_size}", "--set", f"PRE_NER__FILM_GLOSSARY_FILE={glossary}",
        *(arg for setting in side.settings for arg in ("--set", setting)),
    ]  # fmt: skip


def run_pipeline(
    film: Path, glossary: Path, side: Side, out_root: Path, prefect_home: Path, api_url: str | None, logs: Path,
    tag: str, timeout_s: float,
) -> PipelineRun:  # fmt: skip
    """prepare (a clean job) then the run; both measured."""
    env = pipeline_env(out_root, prefect_home, api_url)
    prepared = measure(prepare_cmd(film, glossary, side), env, logs / f"{tag}.prepare.log", timeout_s=120)
    if prepared.rc != 0:
        raise RunFailed(f"prepare failed ({prepared.rc}); see {prepared.log}")
    job_id = next((line.strip() for _, line in prepared.lines if re.fullmatch(r"\s*\d{8}-\d{4}\s*", line)), "")
    folder = next((line.split("job folder:", 1)[1].strip() for _, line in prepared.lines if "job folder:" in line), "")
    if not job_id or not folder:
        raise RunFailed(f"prepare printed no job id; see {prepared.log}")
    ran = measure([PYTHON, "-m", "flows.subtitle", job_id], env, logs / f"{tag}.run.log", timeout_s=timeout_s)
    result = PipelineRun(job_id, Path(folder), prepared, ran, "running" if api_url else "temporary")
    if ran.rc != 0:
        raise RunFailed(f"the pipeline run of job {job_id} failed ({ran.rc}); see {ran.log} and {folder}/logs")
    return result


def rerun_cached(
    job_id: str, out_root: Path, prefect_home: Path, api_url: str | None, logs: Path, tag: str
) -> Measured:
    """The same job again: every stage should come from the cache."""
    env = pipeline_env(out_root, prefect_home, api_url)
    ran = measure([PYTHON, "-m", "flows.subtitle", job_id], env, logs / f"{tag}.log", timeout_s=600)
    if ran.rc != 0:
        raise RunFailed(f"the cached re-run of job {job_id} failed ({ran.rc}); see {ran.log}")
    return ran


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def _log_epoch(line: str) -> float | None:
    match = LOG_TIME.match(line)
    if not match:
        return None
    when = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return time.mktime(when.timetuple()) + int(match.group(2)) / 1000


def _first_log_of_run(paths: list[Path], run: Measured) -> list[str]:
    """The lines of the first log (in name order: by time) that began while `run` ran."""
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        first = next((t for t in map(_log_epoch, text) if t is not None), None)
        if first is not None and run.started - 1 <= first <= run.started + run.wall_s:
            return text
    return []


def stage_figures(job_dir: Path, run: Measured) -> dict[str, Any]:
    """Each stage of this run: state, duration (manifest), its window from its log, peak and end memory there,
    and the stage's own summary (its log's `done in ...: {...}` line). A stage's part (`NN_stage.part_*.log`,
    no manifest entry of its own) comes just before its stage, as `stage.part`, with the duration its log gives."""
    manifest = json.loads((job_dir / "manifest.json").read_text())
    out: dict[str, Any] = {}
    for name, entry in manifest.get("stages", {}).items():
        part_names = sorted(
            {p.name.split("_", 1)[1].rsplit("_", 1)[0] for p in job_dir.glob(f"logs/??_{name}.*_*.log")}
        )
        for part in part_names:
            figures = _log_figures(job_dir, run, part, None)
            if figures:
                out[part] = {"state": "done", "device": entry.get("device")} | figures
        out[name] = {"state": entry.get("state"), "duration_s": entry.get("duration_s"), "device": entry.get("device")}
        out[name] |= _log_figures(job_dir, run, name, entry.get("duration_s"))
    return out


def _log_figures(job_dir: Path, run: Measured, name: str, duration_s: float | None) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    text = _first_log_of_run(sorted(job_dir.glob(f"logs/??_{name}_*.log")), run)
    if not text:
        return figures
    for line in text:
        done = re.search(r" done in ([\d.]+) s: (\{.*)$", line)
        if done:
            if duration_s is None:  # a part: no manifest entry, its log gives its duration
                duration_s = figures["duration_s"] = float(done.group(1))
            try:
                figures["summary"] = ast.literal_eval(done.group(2))
            except (ValueError, SyntaxError):
                pass
        match = re.search(r"decoded (\d+) windows in ([\d.]+) s", line)
        if match:
            figures["decode_s"] = float(match.group(2))
    times = [t for t in (_log_epoch(line) for line in text) if t is not None]
    if times:
        start = times[0]
        end = max(start + float(duration_s or 0.0), times[-1])
        figures["window"] = [round(start - run.started, 2), round(end - run.started, 2)]
        before, peak, after = run.rss_at(start), run.peak_between(start, end), run.rss_at(end)
        figures["rss_mb"] = {k: round(v / 2**20, 1) if v else None
                             for k, v in (("start", before), ("peak", peak), ("end", after))}  # fmt: skip
    return figures


def orchestrator_figures(job_dir: Path, run: Measured) -> dict[str, Any]:
    """Where a run's wall time went, from the job's orchestrator log of this run: process start to the flow's
    first line (imports, and the temporary server when there is one), the flow itself, and its end to exit."""
    for path in sorted(job_dir.glob("logs/00_orchestrator_*.log")):  # the first one this run began
        stamps = [(t, line) for line in path.read_text(errors="replace").splitlines() if (t := _log_epoch(line))]
        if not stamps or stamps[0][0] < run.started - 1 or stamps[0][0] > run.started + run.wall_s:
            continue
        first = stamps[0][0]
        done = next((t for t, line in stamps if "stages finished" in line), stamps[-1][0])
        return {
            "to_flow_start_s": round(first - run.started, 2),
            "flow_s": round(done - first, 2),
            "after_flow_s": round(run.started + run.wall_s - done, 2),
        }
    return {}


# WhisperX -----------------------------------------------------------------------------------------


@dataclass
class WhisperxRun:
    measured: Measured
    srt: Path | None
    transcription_s: float | None  # "Performing transcription..." to its last transcript line
    cmd: list[str]


def whisperx_cmd(film: Path, side: Side, out_dir: Path) -> list[str]:
    cmd = [
        WHISPERX, str(film), "--model", str(side.model_path), "--compute_type", side.compute_type, "--no_align",
        "--device", side.device.split(":")[0], "--batch_size", str(side.batch_size), "--output_format", "srt",
        "--output_dir", str(out_dir), "--language", "en", "--vad_method", "pyannote",
    ]  # fmt: skip
    if ":" in side.device:
        cmd += ["--device_index", side.device.split(":")[1]]
    if side.device == "cpu":
        cmd += ["--threads", str(side.threads)]  # the CTranslate2 threads the pipeline's asr uses
    return cmd


def run_whisperx(film: Path, side: Side, out_dir: Path, logs: Path, tag: str, timeout_s: float) -> WhisperxRun:
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = whisperx_cmd(film, side, out_dir)
    ran = measure(cmd, base_env(), logs / f"{tag}.whisperx.log", cwd=out_dir, timeout_s=timeout_s)
    if ran.rc != 0:
        raise RunFailed(f"whisperx failed ({ran.rc}); see {ran.log}")
    began = next((t for t, line in ran.lines if "Performing transcription" in line), None)
    ended = [t for t, line in ran.lines if line.startswith("Transcript:")]
    transcription = round((ended[-1] if ended else ran.started + ran.wall_s) - began, 2) if began else None
    srt = out_dir / f"{film.stem}.srt"
    return WhisperxRun(ran, srt if srt.is_file() else None, transcription, cmd)
