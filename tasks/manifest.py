"""`manifest.json`: each stage's state, duration, device and outputs, updated as stages move."""

from __future__ import annotations

import fcntl
import json
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from settings.jobs import Job, now_iso, write_text_atomic

State = Literal["pending", "running", "done", "cached", "failed", "skipped"]
_LOCK = threading.Lock()


class StageEntry(BaseModel):
    state: State = "pending"
    duration_s: float | None = None
    device: str | None = None
    outputs: list[str] = Field(default_factory=list)
    message: str | None = None
    updated: str | None = None


class Manifest(BaseModel):
    job_id: str
    flow_run_id: str | None = None
    stages: dict[str, StageEntry] = Field(default_factory=dict)
    updated: str | None = None


def read_manifest(job: Job) -> Manifest:
    if not job.manifest_file.is_file():
        return Manifest(job_id=job.job_id)
    return Manifest.model_validate_json(job.manifest_file.read_text())


def update_stage(job: Job, stage: str, **changes: Any) -> Manifest:
    """Read-modify-write under a thread lock and a file lock: stages finish concurrently."""
    lock_path = job.dir / ".manifest.lock"
    with _LOCK, lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(job)
        entry = manifest.stages.get(stage, StageEntry())
        entry = entry.model_copy(update=changes | {"updated": now_iso()})
        manifest.stages[stage] = entry
        manifest.updated = entry.updated
        write_text_atomic(job.manifest_file, manifest.model_dump_json(indent=2))
        return manifest


def set_run(job: Job, flow_run_id: str | None, stages: list[str]) -> None:
    with _LOCK, (job.dir / ".manifest.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(job)
        manifest.flow_run_id = flow_run_id
        for name in stages:
            manifest.stages.setdefault(name, StageEntry())
        manifest.updated = now_iso()
        write_text_atomic(job.manifest_file, manifest.model_dump_json(indent=2))


def status_table(manifest: Manifest) -> str:
    """Markdown table: one row a stage."""
    rows = ["| stage | state | duration | device | outputs | note |", "| --- | --- | --- | --- | --- | --- |"]
    for name, entry in manifest.stages.items():
        duration = f"{entry.duration_s:.1f} s" if entry.duration_s is not None else ""
        outputs = ", ".join(Path(o).name for o in entry.outputs)
        rows.append(f"| {name} | {entry.state} | {duration} | {entry.device or ''} | {outputs} | {entry.message or ''} |")
    return "\n".join(rows)


def dump(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), indent=2)
