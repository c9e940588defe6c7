"""Per-stage device, compute type and batch size."""

from __future__ import annotations

from pydantic import BaseModel

from hardware.profile import HardwareProfile

# Stages that run a model and may use an accelerator; the rest are plain CPU work.
ACCELERATED_STAGES = {"diarization", "asr", "second_pass_translation"}
# CTranslate2 (the engine under WhisperX) has no MPS backend.
NO_MPS_STAGES = {"asr", "second_pass_translation"}


class DeviceError(RuntimeError):
    """The device asked for is not on this machine."""


class StageDevice(BaseModel):
    device: str
    compute_type: str
    batch_size: int

    @property
    def accelerated(self) -> bool:
        return self.device != "cpu"


def resolve_device(profile: HardwareProfile, requested: str) -> str:
    """The run's device: the profile's best unless DEVICE names one, which must exist."""
    requested = requested.lower()
    if requested == "auto":
        return {"cuda": "cuda", "mps": "mps", "cpu": "cpu"}[profile.kind]
    if requested.startswith("cuda"):
        if profile.kind != "cuda":
            raise DeviceError(
                f"DEVICE={requested} but this machine has no CUDA GPU ({profile.device_name}). Set DEVICE=auto or cpu."
            )
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= profile.gpu_count:
            raise DeviceError(f"DEVICE={requested} but this machine has {profile.gpu_count} CUDA GPU(s).")
        return requested
    if requested == "mps" and profile.kind != "mps":
        raise DeviceError(
            f"DEVICE=mps but this machine has no Apple MPS device ({profile.device_name}). Set DEVICE=auto or cpu."
        )
    return requested


def _batch_size(profile: HardwareProfile, device: str) -> int:
    if device.startswith("cuda"):
        memory = profile.gpu_memory_gb
        return 32 if memory >= 40 else 16 if memory >= 20 else 8 if memory >= 10 else 4
    if device == "mps":
        return 8 if profile.ram_gb >= 32 else 4
    return 8 if profile.ram_gb >= 16 else 4 if profile.ram_gb >= 8 else 2


CORES_PER_SLOT = 4


def cpu_slots(profile: HardwareProfile) -> int:
    """How many heavy stages may run on the CPU at once (a stage on the GPU takes none).

    Whisper decoding (CTranslate2) and torch each use several threads; on two cores, the WhisperX CLI
    beside the lyrics features took 51 s where one after the other took 48 s, and beside the speaker
    embeddings 64 s against 48 s. So a small machine runs them one at a time, and one with more cores
    runs one more at a time for each 4 cores.
    """
    return max(1, profile.cpu_cores // CORES_PER_SLOT)


def stage_device(profile: HardwareProfile, stage: str, requested: str = "auto") -> StageDevice:
    run_device = resolve_device(profile, requested)
    device = run_device if stage in ACCELERATED_STAGES else "cpu"
    if device == "mps" and stage in NO_MPS_STAGES:
        device = "cpu"
    compute_type = "float16" if device.startswith("cuda") else "float32" if device == "mps" else "int8"
    return StageDevice(device=device, compute_type=compute_type, batch_size=_batch_size(profile, device))
