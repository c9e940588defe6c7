"""One Whisper pass over the speech regions, shared by asr (transcribe) and second_pass_translation
(translate): resolve the model, merge regions into windows, build the prompt, load, decode in
batches (with temperature fallback and re-decoding of skipped speech), then apply the guards.

What differs between the two stages is only the request and which language to decode in,
which `choose_language` answers once the model is loaded (asr detects or checks it, the
translate pass insists on a multilingual model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hardware.policy import StageDevice
from settings.stages import WhisperDecoding
from tasks.asr_guards import GuardSettings, Record, apply_guards
from tasks.whisper_models import (
    Audio,
    Decoded,
    ModelChoice,
    Prompt,
    WhisperDecoder,
    load_pipeline,
    loaded,
    model_prompt,
    resolve_model,
    speech_audio,
    speech_chunks,
)

# (loaded pipeline, the speech of the first windows) -> (language to decode in, its probability)
LanguageChoice = Callable[[Any, np.ndarray], tuple[str, float | None]]


@dataclass(frozen=True)
class PassRequest:
    model: str  # a model setting value (ASR__MODEL, ...)
    setting: str  # its name, for messages
    task: Literal["transcribe", "translate"]
    language: str | None  # the language the model is loaded for; None to detect
    decoding: WhisperDecoding
    terms: list[str] = field(default_factory=list)  # glossary names for the prompt
    prompt_budget: int = 160
    initial_prompt: str = ""
    hotword_share: float = 0.0


@dataclass
class PassResult:
    choice: ModelChoice
    prompt: Prompt
    language: str
    language_probability: float | None
    kept: list[Decoded]
    filtered: list[Record]
    windows: int
    redecoded: int
    compute_type: str
    batch_size: int
    seconds: float


def whisper_pass(
    request: PassRequest,
    audio: Audio,
    speech: list[dict[str, float]],
    device: StageDevice,
    cache_root: Path,
    log: logging.Logger,
    progress: Callable[[float, str], None],
    choose_language: LanguageChoice,
) -> PassResult:
    """Decode the speech and guard the text; the model is released before this returns."""
    decoding = request.decoding
    compute_type = decoding.compute_type or device.compute_type
    batch_size = decoding.batch_size or device.batch_size
    choice = resolve_model(request.model, device.device, cache_root, request.setting, request.language)
    chunks = speech_chunks(speech, audio, decoding.chunk_s)
    prompt = model_prompt(
        choice.path,
        request.initial_prompt,
        request.terms,
        request.prompt_budget,
        request.setting,
        request.hotword_share,
    )
    if choice.reason:
        log.info("%s", choice.reason)
    log.info(
        "Whisper %s on %s (compute %s, batch %d) with %s from %s; %d speech windows; prompt %d tokens, %d terms",
        request.task,
        device.device,
        compute_type,
        batch_size,
        choice.spec,
        choice.path,
        len(chunks),
        prompt.tokens,
        len(prompt.terms),
    )
    options = {
        "beam_size": decoding.beam_size,
        "initial_prompt": prompt.initial_prompt,
        "hotwords": prompt.hotwords,
        "no_speech_threshold": decoding.no_speech_threshold,
        "log_prob_threshold": decoding.log_prob_threshold,
        "compression_ratio_threshold": decoding.compression_ratio_threshold,
        "condition_on_previous_text": False,
    }
    started = time.monotonic()
    with loaded(
        lambda: load_pipeline(
            choice,
            device.device,
            compute_type,
            request.language,
            request.task,
            options,
            f"{request.setting.split('__')[0]}__COMPUTE_TYPE",
        )
    ) as held:
        pipeline = held[0]
        language, probability = choose_language(pipeline, speech_audio(audio, chunks))
        decoder = WhisperDecoder(pipeline, language, request.task, decoding.chunk_s)

        def on_batch(done: int, total: int) -> None:
            progress(0.85 * done / total, f"decoded {done}/{total} windows")

        decoded = decoder.decode(audio, chunks, batch_size, on_batch, speech=speech)
        redecoded = decoder.redecoded + decoder.repaired
        log.info(
            "decoded %d windows in %.1f s (%d decoded again with temperature fallback; %d windows of speech "
            "left out by the batched pass decoded again)",
            len(chunks),
            time.monotonic() - started,
            decoder.redecoded,
            decoder.repaired,
        )
        del pipeline, decoder
    cfg = GuardSettings(
        no_speech_threshold=decoding.no_speech_threshold,
        log_prob_threshold=decoding.log_prob_threshold,
        compression_ratio_threshold=decoding.compression_ratio_threshold,
        stock_phrases=tuple(decoding.stock_phrases),
        prompt_terms=prompt.terms,
        prompt=prompt.initial_prompt,
    )
    kept, filtered = [], []
    for seg in sorted(decoded, key=lambda s: s.start):
        guarded, records = apply_guards(seg, speech, cfg)
        filtered.extend(records)
        if guarded is not None:
            kept.append(guarded)
    for rec in filtered:
        log.info("guard %s %s [%.2f-%.2f]: %r", rec["action"], rec["reason"], rec["start"], rec["end"], rec["text"])
    return PassResult(
        choice=choice,
        prompt=prompt,
        language=language,
        language_probability=probability,
        kept=kept,
        filtered=filtered,
        windows=len(chunks),
        redecoded=redecoded,
        compute_type=compute_type,
        batch_size=batch_size,
        seconds=round(time.monotonic() - started, 1),
    )
