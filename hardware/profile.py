"""What the machine has, read through a small probe so tests can play any machine."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

CACHE_TTL_S = 3600.0


class HardwareProfile(BaseModel):
    kind: Literal["cuda", "mps", "cpu"]
    device_name: str
    gpu_memory_gb: float = 0.0
    gpu_count: int = 0
    cpu_cores: int
    ram_gb: float
    detected_at: float

    @property
    def mode(self) -> str:
        """The word the orchestrator log uses: CUDA, MPS or CPU."""
        return self.kind.upper()


class Probe(Protocol):
    def cuda_devices(self) -> list[tuple[str, float]]: ...  # (name, memory in GB) per GPU
    def mps_available(self) -> bool: ...
    def cpu_cores(self) -> int: ...
    def ram_gb(self) -> float: ...
    def cpu_name(self) -> str: ...


class TorchProbe:
    """The real machine, as torch and psutil see it."""

    def cuda_devices(self) -> list[tuple[str, float]]:
        import torch

        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append((props.name, props.total_memory / 2**30))
        return out

    def mps_available(self) -> bool:
        import torch

        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

    def cpu_cores(self) -> int:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def ram_gb(self) -> float:
        import psutil

        return psutil.virtual_memory().total / 2**30

    def cpu_name(self) -> str:
        import platform

        return platform.processor() or platform.machine() or "cpu"


def detect(probe: Probe | None = None) -> HardwareProfile:
    probe = probe or TorchProbe()
    gpus = probe.cuda_devices()
    common = dict(cpu_cores=probe.cpu_cores(), ram_gb=round(probe.ram_gb(), 1), detected_at=time.time())
    if gpus:
        name, memory = gpus[0]
        return HardwareProfile(
            kind="cuda", device_name=name, gpu_memory_gb=round(memory, 1), gpu_count=len(gpus), **common
        )
    if probe.mps_available():
        return HardwareProfile(kind="mps", device_name="Apple MPS", **common)
    return HardwareProfile(kind="cpu", device_name=probe.cpu_name(), **common)


def cached_profile(cache_file: Path, probe: Probe | None = None, now: float | None = None) -> HardwareProfile:
    """The profile from `cache_file` while it is under an hour old, else detected afresh."""
    now = time.time() if now is None else now
    try:
        profile = HardwareProfile.model_validate_json(cache_file.read_text())
        if 0 <= now - profile.detected_at < CACHE_TTL_S:
            return profile
    except (OSError, ValueError):
        pass
    profile = detect(probe)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(profile.model_dump() | {"detected": datetime.now(UTC).isoformat()}, indent=2))
        os.replace(tmp, cache_file)
    except OSError:  # a read-only or full OUT_ROOT: detected again next time; the run's own check says why
        tmp.unlink(missing_ok=True)
    return profile
