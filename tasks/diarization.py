"""diarization: who speaks when, as `speakers.rttm` and `speakers.json`.

Backends (setting `backend`):
- `pyannote`: pyannote.audio's speaker-diarization pipeline (community-1 by default, 3.1
  selectable), loaded only from the local Hugging Face cache (every repo its config names is
  resolved to a cached snapshot first, so nothing reaches for the network), with HF_TOKEN.
- `embedded`: no network; silero_vad's speech regions, Resemblyzer embeddings, clustering and
  resegmentation (tasks.speaker_embedding).
- `auto`: pyannote when the token and the cached model are there, else a logged switch to
  `embedded`.
Labels are SPEAKER_00, SPEAKER_01, ... by first appearance; character names only come from
the user's `speaker_names` mapping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from settings.caches import hf_home, hub_cache
from settings.stages import DiarizationSettings
from tasks.contract import PermanentError, StageContext, StageResult
from tasks.documents import MediaInfo, SpeakerTurn, SpeakerTurns, SpeechRegions
from tasks.kernel import stage
from tasks.speaker_embedding import EmbeddedParams, diarize_embedded

COMMUNITY_MODEL = "pyannote/speaker-diarization-community-1"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
Turn = tuple[float, float, Any]


class ModelNotCached(LookupError):
    """Hub repos a pyannote pipeline needs that are not in the local cache."""

    def __init__(self, repos: list[str]) -> None:
        super().__init__(", ".join(repos))
        self.repos = repos


def is_hub_name(model: str) -> bool:
    return not Path(model).expanduser().exists() and bool(REPO_ID.match(model))


def fetch_hint(repos: list[str], cache_root: Path | None = None) -> str:
    """What the user does to get gated pyannote models into the cache."""
    pages = " and ".join(f"https://huggingface.co/{r}" for r in repos)
    downloads = "; ".join(f"`hf download {r}`" for r in repos)
    return (
        f"Accept the model conditions on {pages} (logged in), create a read token at "
        f"https://huggingface.co/settings/tokens and set HF_TOKEN (environment or config/secrets.json), then "
        f"fetch with {downloads} (older clients: `huggingface-cli download <repo>`) "
        f"with HF_HOME={hf_home(cache_root)}. "
        "Or set DIARIZATION__BACKEND=embedded (or auto) to use the packaged models."
    )


def cached_snapshot(repo_id: str, cache_root: Path | None = None) -> Path | None:
    """The cached snapshot folder of a hub repo, without any network call; None when absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hub_cache(cache_root)))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError):
        return None


def local_pipeline_config(model: str, cache_root: Path | None = None) -> dict[str, Any]:
    """The pipeline config with every model it names resolved to a local folder.

    `$model/<sub>` entries point into the pipeline's own folder; hub names (e.g. 3.1's
    pyannote/segmentation-3.0) must be cached. pyannote.audio 4 also loads a PLDA for
    SpeakerDiarization even when the config (3.1) names none: it defaults to community-1's,
    which then must be cached too. Raises ModelNotCached with every missing repo.
    """
    import yaml

    path = Path(model).expanduser()
    if path.is_file():
        root, config_file = path.parent, path
    elif path.is_dir():
        root, config_file = path, path / "config.yaml"
    else:
        snapshot = cached_snapshot(model, cache_root)
        if snapshot is None or not (snapshot / "config.yaml").is_file():
            raise ModelNotCached([model])
        root, config_file = snapshot, snapshot / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    params = config.setdefault("pipeline", {}).setdefault("params", {})
    missing: list[str] = []
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("$model/"):
            params[key] = {"checkpoint": str(root), "subfolder": value.split("/", 1)[1].split("@")[0]}
        elif isinstance(value, str) and is_hub_name(value):
            snapshot = cached_snapshot(value, cache_root)
            if snapshot is None:
                missing.append(value)
            else:
                params[key] = str(snapshot)
    if str(config["pipeline"].get("name", "")).endswith("SpeakerDiarization") and "plda" not in params:
        snapshot = root if model == COMMUNITY_MODEL else cached_snapshot(COMMUNITY_MODEL, cache_root)
        if snapshot is None:
            missing.append(COMMUNITY_MODEL)
        else:
            params["plda"] = {"checkpoint": str(snapshot), "subfolder": "plda"}
    if missing:
        raise ModelNotCached(missing)
    return config


def choose_backend(
    settings: DiarizationSettings,
    token: str | None,
    cache_root: Path | None = None,
    resolve: Callable[[str, Path | None], dict[str, Any]] = local_pipeline_config,
) -> tuple[str, str, dict | None]:
    """(backend, why, resolved pyannote config or None). `pyannote` without its token or model is a PermanentError."""
    if settings.backend == "embedded":
        return "embedded", "setting DIARIZATION__BACKEND=embedded", None
    model = settings.pyannote_model
    if is_hub_name(model) and not token:
        problem, hint = f"no Hugging Face token (HF_TOKEN) for the gated model {model}", fetch_hint([model], cache_root)
    else:
        try:
            return "pyannote", f"{model} from the local cache", resolve(model, cache_root)
        except ModelNotCached as exc:
            problem = f"{', '.join(exc.repos)} not in the model cache {hub_cache(cache_root)}"
            hint = fetch_hint(exc.repos, cache_root)
    if settings.backend == "pyannote":
        raise PermanentError(
            f"DIARIZATION__BACKEND=pyannote but {problem} (setting DIARIZATION__PYANNOTE_MODEL). {hint}"
        )
    return "embedded", f"auto: {problem}; switching to the embedded backend", None


def check_speaker_bounds(settings: DiarizationSettings) -> None:
    if settings.min_speakers and settings.max_speakers and settings.min_speakers > settings.max_speakers:
        raise PermanentError(
            f"DIARIZATION__MIN_SPEAKERS={settings.min_speakers} is above "
            f"DIARIZATION__MAX_SPEAKERS={settings.max_speakers}."
        )


def diarize_pyannote(
    wav: Path,
    config: dict[str, Any],
    token: str | None,
    device: str,
    settings: DiarizationSettings,
    progress: Callable[[float, str], None] | None = None,
) -> list[Turn]:
    """Turns from pyannote's pipeline (its exclusive, one-speaker-at-a-time diarization, for transcripts).

    The pipeline gets the waveform in memory (16 kHz float32: about 230 MB an hour), which
    spares it pyannote's own file decoding (torchcodec and the system's FFmpeg libraries).
    """
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"  # pyannote sends usage telemetry by default: no network
    import soundfile as sf
    import torch
    from pyannote.audio import Pipeline
    from pyannote.audio.telemetry import set_telemetry_metrics

    set_telemetry_metrics(False)

    try:
        pipeline = Pipeline.from_pretrained(config, token=token)
    except Exception as exc:  # noqa: BLE001 - an incomplete cache or a gated file: say what to do
        raise PermanentError(
            f"could not load {settings.pyannote_model} from the cache: {exc}. {fetch_hint([settings.pyannote_model])}"
        ) from exc
    if pipeline is None:
        raise PermanentError(f"{settings.pyannote_model} did not load. {fetch_hint([settings.pyannote_model])}")
    pipeline.to(torch.device(device))
    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    waveform = torch.from_numpy(audio.mean(axis=1)[None, :].copy())

    def hook(
        step: str, _artefact: Any, file: Any = None, completed: int | None = None, total: int | None = None, **_: Any
    ) -> None:
        if progress is not None and completed is not None and total:
            progress(min(1.0, completed / total), step)

    bounds = {
        k: v
        for k, v in (("min_speakers", settings.min_speakers), ("max_speakers", settings.max_speakers))
        if v is not None
    }
    output = pipeline({"waveform": waveform, "sample_rate": rate}, hook=hook, **bounds)  # type: ignore[arg-type]
    annotation: Any = getattr(output, "exclusive_speaker_diarization", output)
    return [(float(seg.start), float(seg.end), label) for seg, _, label in annotation.itertracks(yield_label=True)]


def labelled_turns(turns: list[Turn]) -> list[dict[str, Any]]:
    """Turns sorted by time with labels SPEAKER_00, SPEAKER_01, ... in order of first appearance."""
    labels: dict[Any, str] = {}
    result = []
    for start, end, key in sorted(turns, key=lambda t: (t[0], t[1])):
        if end - start <= 0:
            continue
        label = labels.setdefault(key, f"SPEAKER_{len(labels):02d}")
        result.append({"start": round(start, 3), "end": round(end, 3), "speaker": label})
    return result


def rttm_text(turns: list[dict[str, Any]], uri: str) -> str:
    return "".join(
        f"SPEAKER {uri} 1 {t['start']:.3f} {t['end'] - t['start']:.3f} <NA> <NA> {t['speaker']} <NA> <NA>\n"
        for t in turns
    )


def speaker_names(speakers: list[str], mapping: dict[str, str], log: Any = None) -> dict[str, str]:
    """The user's label -> name mapping for labels that exist; never guessed."""
    unknown = sorted(set(mapping) - set(speakers))
    if unknown and log is not None:
        log.warning("DIARIZATION__SPEAKER_NAMES names %s, which this run did not find (found %s)", unknown, speakers)
    return {label: mapping[label] for label in speakers if label in mapping}


def embedded_params(settings: DiarizationSettings) -> EmbeddedParams:
    return EmbeddedParams(
        window_s=settings.embedded_window_s,
        hop_s=settings.embedded_hop_s,
        min_silhouette=settings.embedded_min_silhouette,
        min_speaker_s=settings.embedded_min_speaker_s,
        switch_penalty=settings.embedded_switch_penalty,
        min_speakers=settings.min_speakers,
        max_speakers=settings.max_speakers,
    )


def token_of(secrets: dict[str, Any]) -> str | None:
    secret = secrets.get("hf_token")
    return secret.get_secret_value() if secret is not None else None


def diarization_preflight(
    settings: DiarizationSettings, _device: Any, cache_root: Path, secrets: dict[str, Any]
) -> str:
    """Bad speaker bounds, or DIARIZATION__BACKEND=pyannote without its token or model, stop the run
    before it starts."""
    check_speaker_bounds(settings)
    backend, reason, _config = choose_backend(settings, token_of(secrets), cache_root)
    return f"backend {backend} ({reason})"


@stage("diarization", version="3", gpu=True, secrets=("hf_token",), preflight=diarization_preflight)
def diarization(ctx: StageContext, settings: DiarizationSettings, demux: StageResult, silero_vad: StageResult) -> dict:
    check_speaker_bounds(settings)
    wav = ctx.file(demux, ctx.read(demux, MediaInfo).audio)
    token = token_of(ctx.secrets)
    backend, reason, config = choose_backend(settings, token, ctx.cache_root)
    log = ctx.log.warning if reason.startswith("auto:") else ctx.log.info
    log("diarization backend %s (%s) on device %s", backend, reason, ctx.device.device)
    facts: dict[str, Any] = {}
    if backend == "pyannote":
        turns = diarize_pyannote(wav, config or {}, token, ctx.device.device, settings, ctx.progress)
    else:
        regions = [r.model_dump() for r in ctx.read(silero_vad, SpeechRegions).segments]
        turns, facts = diarize_embedded(
            wav, regions, ctx.device.device, embedded_params(settings), log=ctx.log, progress=ctx.progress
        )
    labelled = labelled_turns(turns)
    speakers = sorted({t["speaker"] for t in labelled})
    names = speaker_names(speakers, settings.speaker_names, ctx.log)
    ctx.write_text("speakers.rttm", rttm_text(labelled, ctx.job.job_id))
    ctx.write(SpeakerTurns(backend=backend, speakers=speakers, turns=[SpeakerTurn(**t) for t in labelled], names=names))
    ctx.log.info("%d speakers, %d turns", len(speakers), len(labelled))
    summary = {"backend": backend, "speakers": len(speakers), "turns": len(labelled), "device": ctx.device.device}
    if facts:
        summary["count_reason"] = facts.get("reason")
    return summary
