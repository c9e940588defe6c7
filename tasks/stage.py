"""Turn a stage body into a cached Prefect task.

The cache key is explicit (Flyte-style): stage name and version, job id, digests of the
upstream results the stage reads, and the hash of its own settings (never secrets). Prefect's
default policies would hash a Path by its string and miss helper-function changes.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from hardware.policy import StageDevice
from settings.jobs import Job
from settings.model import FilmSettings, settings_digest
from settings.stages import StageSettings
from tasks import manifest
from tasks.contract import (
    PermanentError,
    StageContext,
    StageResult,
    TransientError,
    stage_folder_name,
)

Body = Callable[[StageContext, Any], dict[str, Any]]
# A cheap check run before any stage starts: raises PermanentError when the stage could not run
# (a missing model), so bad set-ups fail before the heavy work, not an hour into it.
# It receives the stage's settings, device, the cache root and the secrets the stage declared.
Preflight = Callable[[Any, StageDevice, Path, dict[str, SecretStr | None]], None]


class StageSkipped(Exception):
    """An optional stage cannot run (no key, no match): recorded as skipped, the run goes on."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class InjectedFault(PermanentError):
    """Raised by the fault-injection setting PIPELINE__FAIL_AT (tests only)."""


class RunEnv(BaseModel):
    """Run-wide facts a stage may need besides its own settings. Secrets only for stages that declare them."""

    cache_root: str
    fail_at: str | None = None
    gpu_limit: str = "gpu"
    secrets: dict[str, SecretStr | None] = {}


@dataclass(frozen=True)
class StageSpec:
    name: str
    version: str
    body: Body
    needs: tuple[str, ...] = ()
    optional: bool = False
    gpu: bool = False
    uses_film: bool = False
    secrets: tuple[str, ...] = ()
    preflight: Preflight | None = None
    _task: list[Any] = field(default_factory=list, compare=False, repr=False)

    def cache_key(self, job_id: str, settings: StageSettings, upstream: dict[str, StageResult],
                  film: FilmSettings | None, env: RunEnv) -> str:
        parts = [self.name, f"v{self.version}", job_id, settings_digest(settings)]
        parts += [f"{name}:{upstream[name].digest()}" for name in sorted(upstream)]
        if self.uses_film and film is not None:
            parts.append(settings_digest(film))
        parts += [f"{name}:{bool(env.secrets.get(name))}" for name in self.secrets]
        tail = hashlib.sha256("|".join(parts[3:]).encode()).hexdigest()[:24]
        return f"{self.name}-v{self.version}-{job_id}-{tail}"

    @property
    def task(self):
        """The Prefect task (built once, on first use, so plain tests never import Prefect)."""
        if not self._task:
            from prefect import task

            spec = self

            def key_fn(_context: Any, params: dict[str, Any]) -> str:
                return spec.cache_key(params["job"].job_id, params["settings"], params["upstream"],
                                      params["film"], params["env"])

            @task(name=self.name, cache_key_fn=key_fn, persist_result=True, result_serializer="json",
                  retry_condition_fn=_retry_transient, log_prints=True)
            def run(job: Job, settings: StageSettings, device: StageDevice, upstream: dict[str, StageResult],
                    film: FilmSettings | None, env: RunEnv) -> StageResult:
                return execute(spec, job, settings, device, upstream, film, env)

            self._task.append(run)
        return self._task[0]


STAGES: dict[str, StageSpec] = {}


def stage(name: str, version: str, *, needs: tuple[str, ...] = (), optional: bool = False, gpu: bool = False,
          uses_film: bool = False, secrets: tuple[str, ...] = (), preflight: Preflight | None = None,
          register: bool = True) -> Callable[[Body], StageSpec]:
    """Declare a stage. `needs` names the upstream stages whose results the body reads."""

    def wrap(body: Body) -> StageSpec:
        spec = StageSpec(name=name, version=version, body=body, needs=needs, optional=optional, gpu=gpu,
                         uses_film=uses_film, secrets=secrets, preflight=preflight)
        if register:
            STAGES[name] = spec
        return spec

    return wrap


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


def stage_logger(job: Job, stage: str) -> logging.Logger:
    """A logger writing `logs/NN_<stage>_<ts>.log` and forwarding to Prefect's run logger."""
    job.logs_dir.mkdir(parents=True, exist_ok=True)
    name = "00_orchestrator" if stage == "orchestrator" else stage_folder_name(stage)
    logger = logging.getLogger(f"filmsubs.{job.job_id}.{stage}.{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    handler = logging.FileHandler(job.logs_dir / f"{name}_{stamp}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        from prefect.logging import get_run_logger

        run_logger = get_run_logger()
        logger.addHandler(_Forward(run_logger))
    except Exception:  # noqa: BLE001 - outside a Prefect run there is no run logger
        pass
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


class _Forward(logging.Handler):
    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, record.getMessage())


def execute(spec: StageSpec, job: Job, settings: StageSettings, device: StageDevice,
            upstream: dict[str, StageResult], film: FilmSettings | None, env: RunEnv,
            progress: Callable[[float, str], None] | None = None) -> StageResult:
    """Run one stage body under the contract: logs, manifest, fault injection, GPU slot, result."""
    log = stage_logger(job, spec.name)
    started = time.monotonic()
    manifest.update_stage(job, spec.name, state="running", device=device.device, message=None)
    log.info("stage %s v%s on device %s (compute %s, batch %d)", spec.name, spec.version, device.device,
             device.compute_type, device.batch_size)
    secrets = {name: env.secrets.get(name) for name in spec.secrets}

    ctx = StageContext(job=job, stage=spec.name, device=device, upstream={k: upstream[k] for k in spec.needs},
                       log=log, film=film if spec.uses_film else None, secrets=secrets,
                       cache_root=Path(env.cache_root), progress=progress or _prefect_progress(job, spec.name),
                       gpu_limit=env.gpu_limit, publish=_prefect_markdown(job, spec.name))
    try:
        if env.fail_at == spec.name:
            raise InjectedFault(f"fault injected at {spec.name} (PIPELINE__FAIL_AT)")
        summary = _run_body(spec, ctx, settings)
        result = StageResult(stage=spec.name, version=spec.version, job_id=job.job_id, files=ctx.written(),
                             summary=summary or {}, device=device.device,
                             duration_s=round(time.monotonic() - started, 3))
        manifest.update_stage(job, spec.name, state="done", duration_s=result.duration_s,
                              outputs=[f.name for f in result.files])
        log.info("done in %.1f s: %s", result.duration_s, result.summary)
        return result
    except StageSkipped as exc:
        return _skipped(spec, job, device, log, str(exc), exc.transient, started)
    except Exception as exc:
        if spec.optional and not isinstance(exc, InjectedFault):
            return _skipped(spec, job, device, log, f"{type(exc).__name__}: {exc}", is_transient(exc), started)
        log.error("failed: %s: %s", type(exc).__name__, exc)
        manifest.update_stage(job, spec.name, state="failed", duration_s=round(time.monotonic() - started, 3),
                              message=f"{type(exc).__name__}: {exc}"[:300])
        raise
    finally:
        close_logger(log)


def _run_body(spec: StageSpec, ctx: StageContext, settings: StageSettings) -> dict[str, Any]:
    if spec.gpu and ctx.device.accelerated:
        from prefect.concurrency.sync import concurrency

        ctx.log.info("waiting for a slot of the global concurrency limit %r", ctx.gpu_limit)
        with concurrency(ctx.gpu_limit, occupy=1):
            return spec.body(ctx, settings)
    return spec.body(ctx, settings)


def _skipped(spec: StageSpec, job: Job, device: StageDevice, log: logging.Logger, reason: str, transient: bool,
             started: float) -> StageResult:
    log.warning("skipped: %s", reason)
    duration = round(time.monotonic() - started, 3)
    manifest.update_stage(job, spec.name, state="skipped", duration_s=duration, message=reason[:300])
    return StageResult(stage=spec.name, version=spec.version, job_id=job.job_id, device=device.device,
                       duration_s=duration, skipped=reason, retry_on_resume=transient)


def _in_task_run() -> bool:
    try:
        from prefect.context import TaskRunContext

        return TaskRunContext.get() is not None
    except Exception:  # noqa: BLE001
        return False


def _artifact_key(job: Job, stage: str, name: str) -> str:
    return f"{job.job_id}-{stage}-{name}".lower().replace("_", "-")


def _prefect_markdown(job: Job, stage: str) -> Callable[[str, str, str], None] | None:
    """Publishes a stage's Markdown report as an artifact keyed by job, stage and report name."""
    if not _in_task_run():
        return None

    def publish(name: str, markdown: str, description: str) -> None:
        from prefect.artifacts import create_markdown_artifact

        try:
            create_markdown_artifact(markdown=markdown, key=_artifact_key(job, stage, name), description=description)
        except Exception:  # noqa: BLE001 - a report must never fail a stage
            pass

    return publish


def _prefect_progress(job: Job, stage: str) -> Callable[[float, str], None] | None:
    """A Prefect progress artifact for this stage, when running inside a Prefect run."""
    if not _in_task_run():
        return None
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    key = _artifact_key(job, stage, "progress")
    state: dict[str, Any] = {}

    def report(fraction: float, message: str) -> None:
        percent = max(0.0, min(100.0, 100.0 * fraction))
        try:
            if "id" not in state:
                state["id"] = create_progress_artifact(progress=percent, key=key, description=f"{stage}: {message}")
            else:
                update_progress_artifact(state["id"], progress=percent, description=f"{stage}: {message}")
        except Exception:  # noqa: BLE001 - progress must never fail a stage
            pass

    return report
