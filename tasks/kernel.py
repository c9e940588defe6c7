"""The orchestration kernel: stage declaration, the task factory and its cache policy, the job lock,
the manifest, artifacts, preflight, and the per-run object the flow submits stages through.

The flow (`flows.subtitle`) only wires: it calls `PipelineRun.submit(stage, **upstream)` once
per stage with the futures of the results that stage reads, and Prefect runs what is ready.

Caching (Flyte-style explicit keys): a stage's key is its name and version, the job id, the
digests of the upstream results it reads, the hash of its own settings (never secrets) and,
for stages that declare `film`, the film settings. `StageCache` adds what Prefect's own
policies cannot know: a cached result is used only while the files it lists are intact on
disk (size and digest); otherwise its record is dropped and the stage runs again.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from hardware.policy import StageDevice, cpu_slots, resolve_device, stage_device
from hardware.profile import HardwareProfile, cached_profile
from settings.jobs import Job, now_iso, write_text_atomic
from settings.model import SECRET_FIELDS, FilmSettings, Settings, settings_digest
from settings.stages import StageSettings
from settings.volume import OutputVolumeError, bytes_a_run_needs, disk_failure, writable_with_room
from tasks.contract import (
    PermanentError,
    StageContext,
    StageResult,
    TransientError,
    files_intact,
    stage_folder_name,
)
from tasks.memory import release, thawed

Body = Callable[..., dict[str, Any]]
# A cheap check run before any stage starts: raises PermanentError when the stage could not run
# (a missing model), so bad set-ups fail before the heavy work, not an hour into it.
# It receives the stage's settings, device, the cache root and the secrets the stage declared.
# What it returns (the model it found, and why) goes into the orchestrator log.
Preflight = Callable[[Any, StageDevice, Path, dict[str, SecretStr | None]], str | None]
# Whether a heavy stage has nothing heavy to do this time (from its context and upstream results):
# then it takes no CPU slot and no GPU slot.
LightWhen = Callable[[StageContext, dict[str, Any]], bool]
FILM = "film"  # the body parameter that asks for the film's settings


class StageSkipped(Exception):
    """An optional stage cannot run (no key, no match): recorded as skipped, the run goes on."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class InjectedFault(PermanentError):
    """Raised by the fault-injection setting PIPELINE__FAIL_AT (tests only)."""


class JobBusy(RuntimeError):
    """Another run holds this job."""


class PipelineError(RuntimeError):
    """A required stage failed or cannot run; the run stops there."""


class RunEnv(BaseModel):
    """Run-wide facts a stage may need besides its own settings. Secrets only for stages that declare them."""

    cache_root: str
    fail_at: str | None = None
    gpu_limit: str = "gpu"
    cpu_slots: int = 1  # heavy stages on the CPU at once in this process (hardware.policy.cpu_slots)
    secrets: dict[str, SecretStr | None] = {}


# Stages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    name: str
    version: str
    body: Body
    optional: bool = False
    gpu: bool = False  # runs a model that may use the accelerator (and then takes a slot of the GPU limit)
    heavy: bool = False  # CPU-bound: on the CPU it takes one of the machine's CPU slots (gpu stages do too)
    light_when: LightWhen | None = None
    secrets: tuple[str, ...] = ()
    preflight: Preflight | None = None
    part_of: str | None = None  # a part: a step of another stage that needs less than the rest of it
    settings_read: tuple[str, ...] | None = None  # a part's settings fields (its cache key hashes only these)
    parts: tuple[StageSpec, ...] = ()
    _task: list[Any] = field(default_factory=list, compare=False, repr=False)

    @property
    def owner(self) -> str:
        """The stage whose folder, settings, device, log and manifest entry this spec uses."""
        return self.part_of or self.name

    @property
    def needs(self) -> tuple[str, ...]:
        """The upstream stages the body reads: its parameters after `ctx` and `settings`."""
        names = list(inspect.signature(self.body).parameters)[2:]
        return tuple(n for n in names if n != FILM)

    @property
    def uses_film(self) -> bool:
        return FILM in inspect.signature(self.body).parameters

    def cache_key(
        self,
        job_id: str,
        settings: StageSettings,
        upstream: dict[str, StageResult],
        film: FilmSettings | None,
        env: RunEnv,
    ) -> str:
        parts = [self.name, f"v{self.version}", job_id, settings_digest(settings, self.settings_read)]
        parts += [f"{name}:{upstream[name].digest()}" for name in sorted(upstream)]
        if self.uses_film and film is not None:
            parts.append(settings_digest(film))
        parts += [f"{name}:{bool(env.secrets.get(name))}" for name in self.secrets]
        tail = hashlib.sha256("|".join(parts[3:]).encode()).hexdigest()[:24]
        return f"{self.name}-v{self.version}-{job_id}-{tail}"

    @property
    def task(self) -> Any:
        """The Prefect task (built once, on first use, so plain tests never import Prefect)."""
        if not self._task:
            from prefect import task

            spec = self

            @task(
                name=self.name,
                cache_policy=stage_cache(spec),
                persist_result=True,
                result_serializer="json",
                retry_condition_fn=_retry_transient,
                log_prints=True,
            )
            def run(job: Job, settings: StageSettings, device: StageDevice, upstream: dict[str, StageResult],
                    film: FilmSettings | None, env: RunEnv) -> StageResult:  # fmt: skip
                return execute(spec, job, settings, device, upstream, film, env)

            self._task.append(run)
        return self._task[0]


def stage(
    name: str,
    version: str,
    *,
    optional: bool = False,
    gpu: bool = False,
    heavy: bool = False,
    light_when: LightWhen | None = None,
    secrets: tuple[str, ...] = (),
    preflight: Preflight | None = None,
    parts: tuple[StageSpec, ...] = (),
) -> Callable[[Body], StageSpec]:
    """Declare a stage; bump `version` whenever its code changes what it writes.

    `parts`: steps of this stage declared with `stage_part`, each its own task with its own cache,
    which the flow submits as soon as what they read is ready (the audio half of a stage beside
    another stage that its text half waits for). The body reads each part's result by its name.
    """

    def wrap(body: Body) -> StageSpec:
        strays = [p.name for p in parts if p.part_of != name]
        if strays:
            raise ValueError(f"stage {name}: parts {strays} are declared as parts of another stage")
        return StageSpec(
            name=name,
            version=version,
            body=body,
            optional=optional,
            gpu=gpu,
            heavy=heavy or gpu,
            light_when=light_when,
            secrets=secrets,
            preflight=preflight,
            parts=parts,
        )

    return wrap


def stage_part(
    of: str, name: str, version: str, *, settings_read: tuple[str, ...], heavy: bool = False
) -> Callable[[Body], StageSpec]:
    """Declare a part of stage `of`: it writes into that stage's folder and logs, reports progress and
    fails under that stage's name, and its cache key hashes only the settings fields it reads."""

    def wrap(body: Body) -> StageSpec:
        return StageSpec(name=name, version=version, body=body, heavy=heavy, part_of=of, settings_read=settings_read)

    return wrap


def with_parts(specs: Sequence[StageSpec]) -> list[StageSpec]:
    """The stages with each one's parts just before it: the order a run decides what to force in."""
    return [s for spec in specs for s in (*spec.parts, spec)]


def reusable(job: Job, result: StageResult) -> bool:
    """A finished result may stand in for running the stage: its files are intact and it is no healing skip."""
    return files_intact(job.dir, result) and not (result.skipped and result.retry_on_resume)


def stage_cache(spec: StageSpec) -> Any:
    """The cache policy of one stage (a Prefect CachePolicy, built lazily so stage modules stay Prefect-free)."""
    from prefect.cache_policies import CachePolicy

    @dataclass
    class StageCache(CachePolicy):
        def compute_key(
            self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
        ) -> str | None:
            job: Job = inputs["job"]
            key = spec.cache_key(job.job_id, inputs["settings"], inputs["upstream"], inputs["film"], inputs["env"])
            if not task_ctx.task.refresh_cache:
                _drop_stale_record(task_ctx.result_store, job, spec.name, key)
            return key

    return StageCache()


def _drop_stale_record(store: Any, job: Job, stage_name: str, key: str) -> None:
    """Forget a cached result whose files are gone or changed, so Prefect runs the stage again."""
    record = job.results_dir / key
    if not record.is_file():
        return
    try:
        fresh = store.exists(key) and reusable(job, store.read(key).result)
    except Exception:  # noqa: BLE001 - an unreadable record (killed mid-write) is as good as none
        fresh = False
    if not fresh:
        _orchestrator_log(job).info(
            "stage %s: cached result's files are missing or changed; running it again", stage_name
        )
        record.unlink(missing_ok=True)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in {errno.EBUSY, errno.EAGAIN, errno.ETXTBSY}


def _retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


# Running one stage body under the contract -----------------------------------------------------


def execute(
    spec: StageSpec,
    job: Job,
    settings: StageSettings,
    device: StageDevice,
    upstream: dict[str, StageResult],
    film: FilmSettings | None,
    env: RunEnv,
    progress: Callable[[float, str], None] | None = None,
) -> StageResult:
    """Run one stage body: logs, manifest, fault injection, GPU slot, result."""
    missing = sorted(set(spec.needs) - set(upstream))
    if missing:
        raise TypeError(f"stage {spec.name} reads {', '.join(missing)} but was not given them")
    log = stage_logger(job, spec.owner, part=spec.name if spec.part_of else None)
    started = time.monotonic()
    try:
        update_stage(job, spec.owner, state="running", device=device.device, message=None)
    except OSError as exc:
        disk = disk_failure(exc, job.dir)
        if disk is None:
            raise
        log.error("not started: %s", disk)
        raise PermanentError(f"stage {spec.name}: {disk}") from exc
    log.info(
        "stage %s v%s on device %s (compute %s, batch %d)",
        f"{spec.owner}, part {spec.name}," if spec.part_of else spec.name,
        spec.version,
        device.device,
        device.compute_type,
        device.batch_size,
    )
    ctx = StageContext(
        job=job,
        stage=spec.owner,
        device=device,
        log=log,
        secrets={name: env.secrets.get(name) for name in spec.secrets},
        cache_root=Path(env.cache_root),
        progress=_told(spec.owner, progress or _prefect_progress(job, spec.owner)),
        gpu_limit=env.gpu_limit,
        publish=_prefect_markdown(job, spec.owner),
    )
    inputs = {name: upstream[name] for name in spec.needs}
    if spec.uses_film:
        inputs[FILM] = film or FilmSettings()  # type: ignore[assignment]

    def result(**fields: Any) -> StageResult:
        return StageResult(
            stage=spec.name,
            version=spec.version,
            job_id=job.job_id,
            device=device.device,
            duration_s=round(time.monotonic() - started, 3),
            inputs=list(spec.needs),
            read_from=sorted(ctx.read_from),
            **fields,
        )

    try:
        if env.fail_at == spec.name:
            raise InjectedFault(f"fault injected at {spec.name} (PIPELINE__FAIL_AT)")
        summary = _run_body(spec, ctx, settings, inputs, env.cpu_slots)
        done = result(files=ctx.written(), summary=summary or {})
        if spec.part_of:  # its stage is not done until its own body has run
            log.info("part %s done in %.1f s: %s", spec.name, done.duration_s, done.summary)
            return done
        update_stage(
            job,
            spec.name,
            state="done",
            duration_s=done.duration_s,
            outputs=[f.name for f in done.files],
            inputs=done.inputs,
            read_from=done.read_from,
        )
        log.info("done in %.1f s: %s", done.duration_s, done.summary)
        return done
    except StageSkipped as exc:
        return _skipped(job, spec.owner, log, str(exc), exc.transient, result)
    except Exception as exc:
        disk = disk_failure(exc, job.dir)
        if disk is not None:  # the volume is full or read-only: no retry helps, no optional skip hides it
            log.error("failed: %s", disk)
            _mark_failed(job, spec.owner, log, started, disk)
            raise PermanentError(f"stage {spec.name}: {disk}") from exc
        if spec.optional and not isinstance(exc, InjectedFault):
            return _skipped(job, spec.owner, log, f"{type(exc).__name__}: {exc}", is_transient(exc), result)
        log.error("failed: %s: %s", type(exc).__name__, exc)
        failure = f"{type(exc).__name__}: {exc}"
        _mark_failed(job, spec.owner, log, started, f"part {spec.name}: {failure}" if spec.part_of else failure)
        raise
    finally:
        close_logger(log)


def _mark_failed(job: Job, name: str, log: logging.Logger, started: float, message: str) -> None:
    try:
        update_stage(job, name, state="failed", duration_s=round(time.monotonic() - started, 3), message=message[:300])
    except OSError as exc:  # a full volume refuses the manifest too; the stage's own error is the one to raise
        log.error("could not record the failure in the manifest: %s", exc)


def _run_body(
    spec: StageSpec, ctx: StageContext, settings: StageSettings, inputs: dict[str, Any], cpu_slots: int
) -> dict[str, Any]:
    if not spec.heavy or (spec.light_when is not None and spec.light_when(ctx, inputs)):
        return spec.body(ctx, settings, **inputs)
    try:
        if spec.gpu and ctx.device.accelerated:
            from prefect.concurrency.sync import concurrency

            ctx.log.info("waiting for a slot of the global concurrency limit %r", ctx.gpu_limit)
            with concurrency(ctx.gpu_limit, occupy=1):
                return spec.body(ctx, settings, **inputs)
        with cpu_slot(cpu_slots, ctx):
            return spec.body(ctx, settings, **inputs)
    finally:
        release()  # the stages share one process: the next starts from what this one leaves allocated


_CPU_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_CPU_SLOTS_LOCK = threading.Lock()


@contextmanager
def cpu_slot(slots: int, ctx: StageContext) -> Iterator[None]:
    """One of the process's CPU slots for a heavy stage: stages that do not need each other's results are
    submitted at once, and run at once only where the machine has cores for both (hardware.policy.cpu_slots)."""
    with _CPU_SLOTS_LOCK:
        semaphore = _CPU_SLOTS.setdefault(slots, threading.BoundedSemaphore(slots))
    if not semaphore.acquire(blocking=False):
        ctx.log.info("waiting for one of this machine's %d CPU slot(s): another heavy stage is running", slots)
        ctx.progress(0.0, "waiting for a CPU slot")
        semaphore.acquire()
    try:
        yield
    finally:
        semaphore.release()


def _skipped(
    job: Job, name: str, log: logging.Logger, reason: str, transient: bool, result: Callable[..., StageResult]
) -> StageResult:
    log.warning("skipped: %s", reason)
    skipped = result(skipped=reason, retry_on_resume=transient)
    update_stage(job, name, state="skipped", duration_s=skipped.duration_s, message=reason[:300])
    return skipped


# Logs ---------------------------------------------------------------------------------------


def stage_logger(job: Job, stage_name: str, part: str | None = None) -> logging.Logger:
    """A logger writing `logs/NN_<stage>_<ts>.log` (`NN_<stage>.<part>_<ts>.log` for a part) and
    forwarding to Prefect's run logger."""
    job.logs_dir.mkdir(parents=True, exist_ok=True)
    name = "00_orchestrator" if stage_name == "orchestrator" else stage_folder_name(stage_name)
    name += f".{part}" if part else ""
    logger = logging.getLogger(f"filmsubs.{job.job_id}.{stage_name}.{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    handler = logging.FileHandler(job.logs_dir / f"{name}_{stamp}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        from prefect.logging import get_run_logger

        logger.addHandler(_Forward(get_run_logger()))
    except Exception:  # noqa: BLE001 - outside a Prefect run there is no run logger
        pass
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


_ORCHESTRATOR_LOGS: dict[str, logging.Logger] = {}


def _orchestrator_log(job: Job) -> logging.Logger:
    """The open run's orchestrator log (stage threads write to it too), or Python's logging outside a run."""
    return _ORCHESTRATOR_LOGS.get(job.job_id) or logging.getLogger("filmsubs")


class _Forward(logging.Handler):
    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, record.getMessage())


# The manifest ---------------------------------------------------------------------------------

State = Literal["pending", "running", "done", "cached", "failed", "skipped"]
_MANIFEST_LOCK = threading.Lock()


class StageEntry(BaseModel):
    state: State = "pending"
    duration_s: float | None = None
    device: str | None = None
    outputs: list[str] = Field(default_factory=list)
    inputs: list[str] = Field(default_factory=list)  # the upstream results the flow passed it
    read_from: list[str] = Field(default_factory=list)  # those whose files it opened in its last run
    message: str | None = None
    updated: str | None = None


class Manifest(BaseModel):
    """`manifest.json`: each stage's state, duration, device and outputs, updated as stages move."""

    job_id: str
    flow_run_id: str | None = None
    device_mode: str | None = None  # the device the last run picked on the machine that ran it
    stages: dict[str, StageEntry] = Field(default_factory=dict)
    updated: str | None = None


def read_manifest(job: Job) -> Manifest:
    if not job.manifest_file.is_file():
        return Manifest(job_id=job.job_id)
    return Manifest.model_validate_json(job.manifest_file.read_text())


@contextmanager
def _manifest_for_update(job: Job) -> Iterator[Manifest]:
    """Read-modify-write under a thread lock and a file lock: stages finish concurrently."""
    with _MANIFEST_LOCK, (job.dir / ".manifest.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(job)
        yield manifest
        manifest.updated = now_iso()
        write_text_atomic(job.manifest_file, manifest.model_dump_json(indent=2))


def update_stage(job: Job, stage_name: str, **changes: Any) -> None:
    with _manifest_for_update(job) as manifest:
        entry = manifest.stages.get(stage_name, StageEntry())
        manifest.stages[stage_name] = entry.model_copy(update=changes | {"updated": now_iso()})
    if "state" in changes:
        _tell(StageEvent(stage_name, changes["state"], message=changes.get("message") or ""))


# Watchers: who wants to follow the stages live (the command line's progress board) ---------------------


@dataclass(frozen=True)
class StageEvent:
    stage: str
    state: str  # a manifest State, or "progress"
    fraction: float | None = None
    message: str = ""


_WATCHERS: list[Callable[[StageEvent], None]] = []


def watch_stages(watcher: Callable[[StageEvent], None]) -> Callable[[], None]:
    """Call `watcher` on every stage state change and progress report in this process; returns the unwatch."""
    _WATCHERS.append(watcher)
    return lambda: _WATCHERS.remove(watcher) if watcher in _WATCHERS else None


def _tell(event: StageEvent) -> None:
    for watcher in list(_WATCHERS):
        try:
            watcher(event)
        except Exception:  # noqa: BLE001 - a display must never fail a stage
            pass


def _told(stage_name: str, progress: Callable[[float, str], None] | None) -> Callable[[float, str], None]:
    def report(fraction: float, message: str) -> None:
        _tell(StageEvent(stage_name, "progress", fraction, message))
        if progress is not None:
            progress(fraction, message)

    return report


def set_run(job: Job, flow_run_id: str | None, device_mode: str, stages: Sequence[str]) -> None:
    with _manifest_for_update(job) as manifest:
        manifest.flow_run_id, manifest.device_mode = flow_run_id, device_mode
        for name in stages:
            manifest.stages.setdefault(name, StageEntry())


def status_table(manifest: Manifest) -> str:
    """Markdown table: one row a stage."""
    rows = ["| stage | state | duration | device | outputs | note |", "| --- | --- | --- | --- | --- | --- |"]
    for name, entry in manifest.stages.items():
        duration = f"{entry.duration_s:.1f} s" if entry.duration_s is not None else ""
        outputs = ", ".join(Path(o).name for o in entry.outputs)
        rows.append(
            f"| {name} | {entry.state} | {duration} | {entry.device or ''} | {outputs} | {entry.message or ''} |"
        )
    return "\n".join(rows)


# The job lock ---------------------------------------------------------------------------------


@contextmanager
def job_lock(job: Job) -> Iterator[None]:
    """One run per job at a time: a second run refuses at once, naming the holder."""
    path = job.dir / ".run.lock"
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise JobBusy(f"job {job.job_id} is already running ({holder}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def job_running(job: Job) -> bool:
    """Whether a run holds the job's lock right now (a killed run holds nothing)."""
    path = job.dir / ".run.lock"
    if not path.exists():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


# Artifacts --------------------------------------------------------------------------------------


def _in_task_run() -> bool:
    try:
        from prefect.context import TaskRunContext

        return TaskRunContext.get() is not None
    except Exception:  # noqa: BLE001
        return False


def _artifact_key(job: Job, stage_name: str, name: str) -> str:
    return f"{job.job_id}-{stage_name}-{name}".lower().replace("_", "-")


def _prefect_markdown(job: Job, stage_name: str) -> Callable[[str, str, str], None] | None:
    """Publishes a stage's Markdown report as an artifact keyed by job, stage and report name."""
    if not _in_task_run():
        return None

    def publish(name: str, markdown: str, description: str) -> None:
        from prefect.artifacts import create_markdown_artifact

        try:
            create_markdown_artifact(
                markdown=markdown, key=_artifact_key(job, stage_name, name), description=description
            )
        except Exception:  # noqa: BLE001 - a report must never fail a stage
            pass

    return publish


def _prefect_progress(job: Job, stage_name: str) -> Callable[[float, str], None] | None:
    """A Prefect progress artifact for this stage, when running inside a Prefect run."""
    if not _in_task_run():
        return None
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    key = _artifact_key(job, stage_name, "progress")
    state: dict[str, Any] = {}

    def report(fraction: float, message: str) -> None:
        percent = max(0.0, min(100.0, 100.0 * fraction))
        try:
            if "id" not in state:
                state["id"] = create_progress_artifact(
                    progress=percent, key=key, description=f"{stage_name}: {message}"
                )
            else:
                update_progress_artifact(state["id"], progress=percent, description=f"{stage_name}: {message}")
        except Exception:  # noqa: BLE001 - progress must never fail a stage
            pass

    return report


class _RunArtifacts:
    """The run's Markdown stage table and progress artifact, keyed by the job id."""

    def __init__(self, job: Job, total: int) -> None:
        from prefect.artifacts import create_progress_artifact

        self.job, self.total, self.finished = job, total, 0
        self.key = job.job_id.lower()
        self._lock = threading.Lock()
        self.progress_id: Any = create_progress_artifact(  # sync here: the flow runs synchronously
            progress=0.0, key=f"{self.key}-progress", description=f"Stages finished for job {job.job_id}"
        )

    def stage_finished(self) -> None:
        from prefect.artifacts import update_progress_artifact

        with self._lock:
            self.finished += 1
            update_progress_artifact(self.progress_id, progress=100.0 * self.finished / max(1, self.total))

    def table(self) -> None:
        from prefect.artifacts import create_markdown_artifact

        table = status_table(read_manifest(self.job))
        create_markdown_artifact(
            markdown=f"# Job {self.job.job_id}\n\n{table}\n",
            key=f"{self.key}-stages",
            description=f"Stage table of job {self.job.job_id}",
        )


# Start-up, preflight and the run ----------------------------------------------------------------


def hardware_profile(out_root: str, requested_device: str) -> HardwareProfile:
    """Start-up: this machine's profile (cached an hour), checked against an explicit DEVICE."""
    profile = cached_profile(Path(out_root) / "hardware_cache.json")
    resolve_device(profile, requested_device)
    return profile


def ensure_gpu_limit(name: str, slots: int) -> None:
    """Prefect silently ignores a missing limit, so create the `gpu` limit when it is not there."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


def selected_stages(
    specs: Sequence[StageSpec], stages: Sequence[str] | None, from_stage: str | None
) -> tuple[set[str], set[str]]:
    """(the stages this run submits, those forced to run again despite a cache hit).

    `--stages a,b`: a and b run again, their upstream comes from the cache, nothing downstream runs.
    `--from-stage a`: a and every stage that reads its results (directly or further down) run again;
    a stage after it that does not read them (lyrics_detection after second_pass_translation) comes
    from the cache. A stage named runs again whole, its parts too; a part of a stage forced only
    because it reads a result forced again runs again only when it reads one too.
    """
    names = [s.name for s in specs]
    for name in [*(stages or []), *([from_stage] if from_stage else [])]:
        if name not in names:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(names)}")
    if stages and from_stage:
        raise ValueError("give either --stages or --from-stage, not both")
    every = with_parts(specs)
    by_name = {s.name: s for s in every}
    named = [*(stages or []), *([from_stage] if from_stage else [])]
    whole = set(named) | {part.name for name in named for part in by_name[name].parts}
    if stages:
        keep, todo = set(whole), list(whole)
        while todo:
            for need in by_name[todo.pop()].needs:
                if need not in keep:
                    keep.add(need)
                    todo.append(need)
        return keep, whole
    if from_stage:
        forced = set(whole)
        for spec in every:  # in pipeline order, so upstream is decided first
            if forced.intersection(spec.needs):
                forced.add(spec.name)
        return set(by_name), forced
    return set(by_name), set()


class PipelineRun:
    """One run of one job, as the flow sees it: the job's settings, the device, and `submit`."""

    def __init__(
        self,
        job: Job,
        settings: Settings,
        specs: Sequence[StageSpec],
        planned: set[str],
        forced: set[str],
        partial: bool,
        log: logging.Logger,
    ) -> None:
        self.job, self.settings, self.specs, self.log = job, settings, list(specs), log
        self.planned, self.forced, self.partial = planned, forced, partial
        self.parts = {part.name for spec in self.specs for part in spec.parts}
        self.profile: HardwareProfile | None = None
        self.futures: dict[str, Any] = {}
        self.env = RunEnv(
            cache_root=str(settings.cache_root),
            fail_at=settings.pipeline.fail_at,
            gpu_limit=settings.pipeline.gpu_limit_name(),
            secrets={name: getattr(settings, name) for name in SECRET_FIELDS},
        )
        self._artifacts: _RunArtifacts | None = None

    def start(self, profile: HardwareProfile) -> None:
        """Say which device this machine gives the run, make the GPU limit, record the run."""
        from prefect.runtime import flow_run

        self.profile = profile
        self.env = self.env.model_copy(update={"cpu_slots": cpu_slots(profile)})
        mode = resolve_device(profile, self.settings.device).split(":")[0].upper()
        self.log.info(
            "Device mode: %s (%s, %d cores, %.0f GB RAM%s; DEVICE=%s)",
            mode,
            profile.device_name,
            profile.cpu_cores,
            profile.ram_gb,
            f", GPU {profile.gpu_memory_gb:.0f} GB" if profile.kind == "cuda" else "",
            self.settings.device,
        )
        ensure_gpu_limit(self.env.gpu_limit, self.settings.pipeline.gpu_slots)
        set_run(self.job, flow_run.id, mode, [s.name for s in self.specs if s.name in self.planned])
        if self.partial:
            self._check_upstream_done()
        self._artifacts = _RunArtifacts(self.job, len(self.planned))

    def device(self, name: str) -> StageDevice:
        assert self.profile is not None, "start() the run first"
        return stage_device(self.profile, name, self.settings.device)

    def preflight(self) -> None:
        """Each stage that will run checks what it needs (its model) before anything heavy starts."""
        state = read_manifest(self.job).stages
        for spec in self.specs:
            finished = spec.name in state and state[spec.name].state in {"done", "cached"}
            if spec.preflight is None or spec.name not in self.planned or (finished and spec.name not in self.forced):
                continue
            try:
                found = spec.preflight(
                    self.settings.stage(spec.name),
                    self.device(spec.name),
                    self.settings.cache_root,
                    {name: getattr(self.settings, name) for name in spec.secrets},
                )
                if found:
                    self.log.info("stage %s: %s", spec.name, found)
            except PermanentError as exc:
                self.log.error("stage %s cannot run: %s", spec.name, exc)
                update_stage(self.job, spec.name, state="failed", message=f"not started: {exc}"[:300])
                raise PipelineError(f"stage {spec.name} cannot run: {exc}") from exc

    def submit(self, spec: StageSpec, **upstream: Any) -> Any:
        """Submit one stage with the futures of the results it reads; None when this run leaves it out."""
        if set(upstream) != set(spec.needs):
            raise TypeError(f"stage {spec.name} reads {sorted(spec.needs)}, the flow passed {sorted(upstream)}")
        if spec.name not in self.planned:
            return None
        stage_settings = self.settings.stage(spec.owner)
        delays = [stage_settings.retry_delay_s * 2**i for i in range(stage_settings.retries)]
        refresh = spec.name in self.forced
        task = spec.task.with_options(
            result_storage=self.job.results_dir,
            refresh_cache=refresh,
            retries=stage_settings.retries,
            retry_delay_seconds=delays or 0,
            on_completion=[self._on_completion],
        )
        waits = self._waits(spec)
        future = task.submit(
            self.job,
            stage_settings,
            self.device(spec.owner),
            upstream,
            self.settings.film if spec.uses_film else None,
            self.env,
            wait_for=[self.futures[name] for name in waits],
        )
        self.futures[spec.name] = future
        self.log.info(
            "stage %s submitted%s%s",
            spec.name,
            " (forced to run again)" if refresh else "",
            f" (after {', '.join(waits)}: no room beside them on this machine)" if waits else "",
        )
        return future

    def _waits(self, spec: StageSpec) -> list[str]:
        """The heavy stages already submitted that a heavy part waits for where it could only take their CPU slot.

        A part runs beside them where there is room: CPU slots to spare, or those stages on the accelerator.
        With one slot and everything on the CPU it would only take turns with them, and it runs after them
        instead, as its stage did before it had parts: their memory is given back before it starts.
        """
        if not (spec.part_of and spec.heavy) or self.env.cpu_slots > 1:
            return []
        by_name = {s.name: s for s in with_parts(self.specs)}
        return [
            name
            for name in self.futures
            if by_name[name].heavy and not (by_name[name].gpu and self.device(by_name[name].owner).accelerated)
        ]

    def _on_completion(self, _task: Any, _task_run: Any, state: Any) -> None:
        """Runs for a stage that finished or came from the cache: the manifest and the run's progress."""
        if state.name == "Cached":
            result: StageResult = state.result()
            if result.stage in self.parts:  # its stage's entry says what the stage as a whole did
                self.log.info("part %s: cached", result.stage)
                if self._artifacts is not None:
                    self._artifacts.stage_finished()
                return
            update_stage(
                self.job,
                result.stage,
                state="skipped" if result.skipped else "cached",
                device=result.device,
                duration_s=result.duration_s,
                outputs=[f.name for f in result.files],
                message=result.skipped,
            )
            self.log.info("stage %s: cached", result.stage)
        if self._artifacts is not None:
            self._artifacts.stage_finished()

    def results(self) -> dict[str, StageResult]:
        """Every submitted stage's result, once all have ended; PipelineError names the first that failed."""
        from prefect.futures import wait

        try:
            wait(list(self.futures.values()))
            failed = [(name, f.state) for name, f in self.futures.items() if not f.state.is_completed()]
            upstream_failures = [(n, s) for n, s in failed if s.name != "NotReady"]
            if failed:
                name, state = (upstream_failures or failed)[0]
                self.log.error("stage %s failed: %s", name, state.message)
                raise PipelineError(f"stage {name} failed: {state.message}")
            results = {name: f.result() for name, f in self.futures.items()}
            self.log.info("all %d stages finished", len(set(results) - self.parts))
            return results
        finally:
            if self._artifacts is not None:
                try:
                    self._artifacts.table()
                except Exception as exc:  # noqa: BLE001 - the artifact must not hide the run's own outcome
                    self.log.warning("could not publish the stage table: %s", exc)

    def _check_upstream_done(self) -> None:
        state = read_manifest(self.job).stages
        missing = [
            name
            for name in self.planned - self.forced - self.parts
            if name not in state or state[name].state not in {"done", "cached", "skipped"}
        ]
        if missing:
            raise PipelineError(
                f"--stages needs the results of {', '.join(sorted(missing))}, which have not run "
                "yet; run the whole job first"
            )


def check_room(job: Job, planned: set[str], forced: set[str]) -> None:
    """OutputVolumeError unless the job folder is writable with room for the stages this run will run."""
    state = read_manifest(job).stages
    to_run = {
        name for name in planned if name in forced or state.get(name, StageEntry()).state not in {"done", "cached"}
    }
    record = job.read_job_file()
    writable_with_room(job.dir, bytes_a_run_needs(record.duration_s, record.input_size, to_run))


@contextmanager
def open_run(
    job: Job,
    settings: Settings,
    specs: Sequence[StageSpec],
    *,
    stages: Sequence[str] | None = None,
    from_stage: str | None = None,
) -> Iterator[PipelineRun]:
    """Hold the job's lock and its orchestrator log for the length of one run."""
    planned, forced = selected_stages(specs, stages, from_stage)
    try:
        check_room(job, planned, forced)
    except OutputVolumeError as exc:
        raise PipelineError(str(exc.strerror)) from exc
    with job_lock(job), private_tmp(job), thawed():
        log = stage_logger(job, "orchestrator")
        _ORCHESTRATOR_LOGS[job.job_id] = log
        try:
            yield PipelineRun(job, settings, specs, planned, forced, bool(stages), log)
        finally:
            _ORCHESTRATOR_LOGS.pop(job.job_id, None)
            close_logger(log)


@contextmanager
def private_tmp(job: Job) -> Iterator[Path]:
    """TMPDIR inside the job folder for the length of the run, removed after it.

    Two jobs at once (or a library's own temporary files: onnxruntime writes `.ses` on import)
    never share a temporary file, and a killed run's leftovers stay with its job.
    """
    folder = job.dir / ".tmp"
    shutil.rmtree(folder, ignore_errors=True)  # what a killed run left
    folder.mkdir()
    before_env, before_module = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = before_module
        if before_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before_env
        shutil.rmtree(folder, ignore_errors=True)
