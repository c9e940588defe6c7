"""The machinery every subtitle run goes through: lock, hardware, stage scheduling, resume.

Stages are submitted as soon as the stages they need are finished, so independent stages
(tmdb with demux, lyrics with translation) run at the same time. A stage that Prefect
answers from its cache is used only when the files its result lists are still intact;
otherwise it is run again with `refresh_cache`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from hardware.policy import StageDevice, resolve_device, stage_device
from hardware.profile import HardwareProfile, cached_profile
from settings.jobs import Job, find_job
from settings.model import SECRET_FIELDS, Settings, load_settings
from tasks import manifest
from tasks.contract import PermanentError, StageResult, files_intact
from tasks.stage import RunEnv, StageSpec, close_logger, stage_logger


class JobBusy(RuntimeError):
    """Another run holds this job."""


class PipelineError(RuntimeError):
    """A required stage failed; the run stops there."""


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


@task(name="detect_hardware", cache_policy=NO_CACHE)
def detect_hardware(out_root: str, requested_device: str) -> HardwareProfile:
    """Start-up: the machine's profile (cached an hour) and a check of an explicit DEVICE."""
    profile = cached_profile(Path(out_root) / "hardware_cache.json")
    resolve_device(profile, requested_device)
    return profile


def ensure_gpu_limit(name: str, slots: int) -> None:
    """Prefect silently ignores a missing limit, so create `gpu` when it is not there."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


def selected_stages(specs: Sequence[StageSpec], stages: Sequence[str] | None,
                    from_stage: str | None) -> tuple[list[StageSpec], set[str]]:
    """The stages to run and those forced to run again despite a cache hit."""
    names = [s.name for s in specs]
    for name in [*(stages or []), *([from_stage] if from_stage else [])]:
        if name not in names:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(names)}")
    if stages and from_stage:
        raise ValueError("give either --stages or --from-stage, not both")
    if stages:
        wanted = set(stages)
        keep = wanted | _ancestors(specs, wanted)
        return [s for s in specs if s.name in keep], wanted
    if from_stage:
        return list(specs), set(names[names.index(from_stage):])
    return list(specs), set()


def _ancestors(specs: Sequence[StageSpec], names: set[str]) -> set[str]:
    by_name = {s.name: s for s in specs}
    out: set[str] = set()
    todo = [n for name in names for n in by_name[name].needs]
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(by_name[name].needs)
    return out


def reusable(job: Job, result: StageResult) -> bool:
    return files_intact(job.dir, result) and not (result.skipped and result.retry_on_resume)


class _Publisher:
    """The run's Markdown stage table and progress artifact, keyed by the job id."""

    def __init__(self, job: Job, total: int) -> None:
        self.job, self.total, self.finished = job, total, 0
        self.progress_id: Any = None
        self.key = job.job_id.lower()

    def start(self) -> None:
        from prefect.artifacts import create_progress_artifact

        self.progress_id = create_progress_artifact(progress=0.0, key=f"{self.key}-progress",
                                                    description=f"Stages finished for job {self.job.job_id}")

    def stage_finished(self) -> None:
        from prefect.artifacts import update_progress_artifact

        self.finished += 1
        if self.progress_id is not None:
            update_progress_artifact(self.progress_id, progress=100.0 * self.finished / max(1, self.total))

    def table(self) -> None:
        from prefect.artifacts import create_markdown_artifact

        table = manifest.status_table(manifest.read_manifest(self.job))
        create_markdown_artifact(markdown=f"# Job {self.job.job_id}\n\n{table}\n", key=f"{self.key}-stages",
                                 description=f"Stage table of job {self.job.job_id}")


def run_job(job_id: str, specs: Sequence[StageSpec], *, stages: Sequence[str] | None = None,
            from_stage: str | None = None, overrides: dict[str, Any] | None = None,
            out_root: Path | None = None) -> dict[str, StageResult]:
    """Run (or resume) a job inside the current Prefect flow run."""
    base = load_settings(overrides=overrides)
    job = find_job(out_root or base.out_root, job_id)
    settings = load_settings(job.env_file, overrides=overrides)
    plan, forced = selected_stages(specs, stages, from_stage)
    with job_lock(job):
        log = stage_logger(job, "orchestrator")
        try:
            return _run(job, settings, plan, forced, log, partial=bool(stages))
        finally:
            close_logger(log)


def _run(job: Job, settings: Settings, plan: list[StageSpec], forced: set[str], log: logging.Logger,
         partial: bool) -> dict[str, StageResult]:
    from prefect.context import get_run_context

    profile = detect_hardware(str(settings.out_root), settings.device)
    log.info("Device mode: %s (%s, %d cores, %.0f GB RAM%s)", resolve_device(profile, settings.device).split(":")[0].upper(),
             profile.device_name, profile.cpu_cores, profile.ram_gb,
             f", GPU {profile.gpu_memory_gb:.0f} GB" if profile.kind == "cuda" else "")
    gpu_limit = settings.pipeline.gpu_limit_name()
    ensure_gpu_limit(gpu_limit, settings.pipeline.gpu_slots)
    run_id = str(get_run_context().flow_run.id)
    manifest.set_run(job, run_id, [s.name for s in plan])
    if partial:
        _check_upstream_done(job, plan, forced)

    _preflight(job, settings, profile, plan, forced, log)
    storage = job.results_dir  # a Path: Prefect makes a LocalFileSystem of it, no saved block needed
    env = RunEnv(cache_root=str(settings.cache_root), fail_at=settings.pipeline.fail_at, gpu_limit=gpu_limit,
                 secrets={name: getattr(settings, name) for name in SECRET_FIELDS})
    publisher = _Publisher(job, len(plan))
    publisher.start()
    results: dict[str, StageResult] = {}
    running: dict[str, tuple[Any, bool]] = {}
    pending = list(plan)
    failure: BaseException | None = None

    def submit(spec: StageSpec, refresh: bool) -> None:
        stage_settings = settings.stage(spec.name)
        device: StageDevice = stage_device(profile, spec.name, settings.device)
        delays = [stage_settings.retry_delay_s * 2**i for i in range(stage_settings.retries)]
        task_ = spec.task.with_options(result_storage=storage, refresh_cache=refresh,
                                       retries=stage_settings.retries, retry_delay_seconds=delays or 0)
        upstream = {name: results[name] for name in spec.needs}
        future = task_.submit(job, stage_settings, device, upstream, settings.film, env)
        running[spec.name] = (future, refresh)
        log.info("stage %s submitted%s", spec.name, " (forced to run again)" if refresh else "")

    try:
        while pending or running:
            if failure is None:
                for spec in [s for s in pending if all(d in results for d in s.needs)]:
                    pending.remove(spec)
                    submit(spec, refresh=spec.name in forced)
            elif not running:
                break
            time.sleep(0.05)
            for name, (future, refreshed) in list(running.items()):
                state = future.state
                if not state.is_final():
                    continue
                del running[name]
                if not state.is_completed():
                    failure = failure or PipelineError(f"stage {name} failed: {state.message}")
                    log.error("stage %s failed: %s", name, state.message)
                    continue
                result: StageResult = future.result()
                if state.name == "Cached":
                    if not refreshed and not reusable(job, result):
                        log.info("stage %s: cached result's files are missing or changed; running it again", name)
                        submit(next(s for s in plan if s.name == name), refresh=True)
                        continue
                    manifest.update_stage(job, name, state="skipped" if result.skipped else "cached",
                                          device=result.device, duration_s=result.duration_s,
                                          outputs=[f.name for f in result.files], message=result.skipped)
                    log.info("stage %s: cached", name)
                results[name] = result
                publisher.stage_finished()
        if failure is not None:
            raise failure
        log.info("all %d stages finished", len(results))
        return results
    finally:
        try:
            publisher.table()
        except Exception as exc:  # noqa: BLE001 - the artifact must not hide the run's own outcome
            log.warning("could not publish the stage table: %s", exc)


def _preflight(job: Job, settings: Settings, profile: HardwareProfile, plan: list[StageSpec], forced: set[str],
               log: logging.Logger) -> None:
    """Each stage that will run checks what it needs (its model) before anything heavy starts."""
    state = manifest.read_manifest(job).stages
    for spec in plan:
        finished = spec.name in state and state[spec.name].state in {"done", "cached"}
        if spec.preflight is None or (finished and spec.name not in forced):
            continue
        try:
            spec.preflight(settings.stage(spec.name), stage_device(profile, spec.name, settings.device),
                           settings.cache_root, {name: getattr(settings, name) for name in spec.secrets})
        except PermanentError as exc:
            log.error("stage %s cannot run: %s", spec.name, exc)
            manifest.update_stage(job, spec.name, state="failed", message=f"not started: {exc}"[:300])
            raise PipelineError(f"stage {spec.name} cannot run: {exc}") from exc


def _check_upstream_done(job: Job, plan: list[StageSpec], forced: set[str]) -> None:
    state = manifest.read_manifest(job).stages
    missing = [s.name for s in plan if s.name not in forced
               and (s.name not in state or state[s.name].state not in {"done", "cached", "skipped"})]
    if missing:
        raise PipelineError(f"--stages needs the results of {', '.join(missing)}, which have not run yet; "
                            "run the whole job first")
