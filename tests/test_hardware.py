"""Hardware detection through the probe seam, the one-hour cache, and the per-stage policy."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hardware.policy import DeviceError, cpu_slots, stage_device
from hardware.profile import CACHE_TTL_S, cached_profile, detect


@dataclass
class FakeProbe:
    gpus: list[tuple[str, float]] = field(default_factory=list)
    mps: bool = False
    cores: int = 8
    ram: float = 32.0
    calls: int = 0

    def cuda_devices(self):
        self.calls += 1
        return self.gpus

    def mps_available(self):
        return self.mps

    def cpu_cores(self):
        return self.cores

    def ram_gb(self):
        return self.ram

    def cpu_name(self):
        return "Test CPU"


CUDA_BOX = FakeProbe(gpus=[("NVIDIA H200", 139.8)])
APPLE_BOX = FakeProbe(mps=True, ram=16)
CPU_BOX = FakeProbe(cores=2, ram=24)


def test_detects_each_kind_of_machine() -> None:
    cuda, apple, cpu = detect(CUDA_BOX), detect(APPLE_BOX), detect(CPU_BOX)
    assert (cuda.kind, cuda.device_name, cuda.gpu_memory_gb) == ("cuda", "NVIDIA H200", 139.8)
    assert (apple.kind, apple.mode) == ("mps", "MPS")
    assert (cpu.kind, cpu.cpu_cores, cpu.ram_gb, cpu.mode) == ("cpu", 2, 24.0, "CPU")


def test_profile_is_cached_for_an_hour(tmp_path: Path) -> None:
    cache = tmp_path / "hardware_cache.json"
    probe = FakeProbe(gpus=[("GPU", 24.0)])
    first = cached_profile(cache, probe)
    again = cached_profile(cache, probe, now=first.detected_at + CACHE_TTL_S - 5)
    assert probe.calls == 1 and again == first
    assert json.loads(cache.read_text())["kind"] == "cuda"
    cached_profile(cache, probe, now=time.time() + CACHE_TTL_S + 5)
    assert probe.calls == 2


def test_policy_per_stage() -> None:
    cuda = detect(CUDA_BOX)
    asr = stage_device(cuda, "asr")
    assert (asr.device, asr.compute_type, asr.batch_size) == ("cuda", "float16", 32)
    assert stage_device(cuda, "demux").device == "cpu"
    apple = detect(APPLE_BOX)
    assert stage_device(apple, "asr").device == "cpu"  # CTranslate2 has no MPS
    assert stage_device(apple, "asr").compute_type == "int8"
    assert stage_device(apple, "diarization").device == "mps"
    cpu = detect(CPU_BOX)
    assert stage_device(cpu, "asr").compute_type == "int8"
    assert stage_device(detect(FakeProbe(gpus=[("small", 8.0)])), "asr").batch_size == 4


def test_heavy_stages_share_the_cores_by_slots() -> None:
    """On two cores one heavy stage at a time (side by side they were slower than one after the other);
    a bigger machine runs one more for each four cores."""
    import threading

    from tasks.kernel import cpu_slot

    assert cpu_slots(detect(CPU_BOX)) == 1 and cpu_slots(detect(FakeProbe(cores=16))) == 4

    class Ctx:
        log = __import__("logging").getLogger("test")
        told: list[str] = []

        def progress(self, fraction: float, message: str) -> None:
            self.told.append(message)

    def busy_together(slots: int) -> int:
        running, most, lock = [0], [0], threading.Lock()

        def stage() -> None:
            with cpu_slot(slots, Ctx()):  # type: ignore[arg-type]
                with lock:
                    running[0] += 1
                    most[0] = max(most[0], running[0])
                time.sleep(0.2)
                with lock:
                    running[0] -= 1

        threads = [threading.Thread(target=stage) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return most[0]

    assert busy_together(1) == 1 and "waiting for a CPU slot" in Ctx.told
    assert busy_together(3) == 3


def test_explicit_device_wins_and_a_missing_one_is_an_error() -> None:
    cuda = detect(CUDA_BOX)
    assert stage_device(cuda, "asr", "cpu").device == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        stage_device(detect(CPU_BOX), "asr", "cuda")
    with pytest.raises(DeviceError, match="no Apple MPS"):
        stage_device(cuda, "diarization", "mps")
    with pytest.raises(DeviceError, match="1 CUDA GPU"):
        stage_device(cuda, "asr", "cuda:1")


def test_real_probe_on_this_machine() -> None:
    profile = detect()
    assert profile.kind in {"cpu", "cuda", "mps"} and profile.cpu_cores >= 1 and profile.ram_gb > 0
