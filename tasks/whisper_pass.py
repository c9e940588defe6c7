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
from tasks.asr_guards import GuardSettings, Record, apply_guards, repeated_across
from tasks.whisper_models import (
    NAMES_INTRO,
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
    uncovered_speech,
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
    names_intro: str = NAMES_INTRO  # in the language of the pass: a Latin intro pulls Hindi towards Latin letters
    # Drop a sentence repeated over neighbouring segments (a translate pass's loop; a transcript's chorus is real).
    drop_repeats_across: bool = False


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


def guarded(decoded: list[Decoded], speech: list[dict[str, float]], cfg: GuardSettings,
            log: logging.Logger) -> tuple[list[Decoded], list[Record]]:  # fmt: skip
    """The segments that pass the guards, and a record of every drop or change (logged with its reason)."""
    kept, records = [], []
    for seg in sorted(decoded, key=lambda s: s.start):
        passed, found = apply_guards(seg, speech, cfg)
        records.extend(found)
        if passed is not None:
            kept.append(passed)
    for rec in records:
        log.info("guard %s %s [%.2f-%.2f]: %r", rec["action"], rec["reason"], rec["start"], rec["end"], rec["text"])
    return kept, records


def decode_uncovered(decoder: WhisperDecoder, audio: Audio, speech: list[dict[str, float]], kept: list[Decoded],
                     request: PassRequest, cfg: GuardSettings,
                     log: logging.Logger) -> tuple[list[Decoded], list[Record]]:  # fmt: skip
    """No speech left behind: each VAD region (over 0.5 s) that no kept word covers is decoded again on its own,
    without the names in the prompt (a name list can make Whisper recite instead of listen) and with temperature
    fallback, and kept when it passes the guards. Only the script-setting part of the prompt stays (Hindi's
    Devanagari sentence), since without it Hindi comes out in Latin letters."""
    options = decoder.options() | {"initial_prompt": request.initial_prompt or None, "hotwords": None}
    found: list[Decoded] = []
    records: list[Record] = []
    for number, region in enumerate(uncovered_speech(speech, kept, min_s=0.5)):
        again = decoder.decode_alone(audio, region, 10_000 + number, options)
        passed, dropped = guarded(again, speech, cfg, log)
        words = sum(len(s.text.split()) for s in passed)
        log.info("speech [%.2f-%.2f] held no words after decoding; decoded again on its own: %s", region["start"],
                 region["end"], f"{words} words kept" if passed else "nothing kept")  # fmt: skip
        found += passed
        records += dropped
        text = " ".join(s.text for s in passed)
        action = "redecoded" if passed else "uncovered"
        records.append({**region, "text": text, "action": action, "reason": "speech without words"})
    return found, records


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
        request.names_intro,
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
    cfg = GuardSettings(
        no_speech_threshold=decoding.no_speech_threshold,
        log_prob_threshold=decoding.log_prob_threshold,
        compression_ratio_threshold=decoding.compression_ratio_threshold,
        stock_phrases=tuple(decoding.stock_phrases),
        prompt_terms=prompt.terms,
        prompt=prompt.initial_prompt,
        prompt_intro=request.names_intro,
    )
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
        kept, filtered = guarded(decoded, speech, cfg, log)
        if request.drop_repeats_across:
            kept, repeats = repeated_across(kept)
            for rec in repeats:
                log.info("guard dropped %s [%.2f-%.2f]: %r", rec["reason"], rec["start"], rec["end"], rec["text"])
            filtered += repeats
        retried, records = decode_uncovered(decoder, audio, speech, kept, request, cfg, log)
        kept = sorted(kept + retried, key=lambda s: s.start)
        filtered += records
        del pipeline, decoder
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
    )
