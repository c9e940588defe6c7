"""The typed documents stages hand each other: one pydantic model per file, its name written once.

A producer writes a document with `ctx.write(doc)`; a consumer reads it with
`ctx.read(result, DocType)` from the upstream result it was given. Neither side spells a
file name or a top-level key, so a renamed field breaks in one place, at validation time.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from settings.stages import SubtitleFormat
from tasks.glossary import Entry


class Document(BaseModel):
    """A file one stage writes for others. `file_name` is where it lives in the stage folder."""

    model_config = ConfigDict(extra="forbid")
    file_name: ClassVar[str]


class Span(BaseModel):
    start: float
    end: float


# demux ------------------------------------------------------------------------------------


class AudioStream(BaseModel):
    index: int
    position: int
    codec: str | None = None
    channels: int | None = None
    language: str | None = None
    default: bool = False


class MediaInfo(Document):
    """The demuxed audio (16 kHz mono WAV) and the ffprobe facts the later stages use."""

    file_name: ClassVar[str] = "media.json"
    audio: str  # job-relative path of the WAV
    duration_s: float
    source_duration_s: float | None = None
    fps: float | None = None
    audio_streams: list[AudioStream] = Field(default_factory=list)
    selected: AudioStream
    selection_reason: str = ""
    clip: Span | None = None
    source: str


# tmdb and pre_ner ---------------------------------------------------------------------------


class CastMember(BaseModel):
    name: str
    character: str = ""
    order: int | None = None


class CrewMember(BaseModel):
    name: str
    job: str = ""
    department: str = ""


class TmdbFilm(Document):
    file_name: ClassVar[str] = "tmdb.json"
    id: int
    title: str = ""
    original_title: str = ""
    year: int | None = None
    overview: str = ""
    tagline: str = ""
    cast: list[CastMember] = Field(default_factory=list)
    crew: list[CrewMember] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    alternative_titles: list[str] = Field(default_factory=list)


class Glossary(Document):
    """Names and terms of the film: the Whisper prompt, the names translation must keep, post_ner's targets."""

    file_name: ClassVar[str] = "glossary.json"
    entries: list[Entry] = Field(default_factory=list)
    prompt_terms: list[str] = Field(default_factory=list)
    protected_names: list[str] = Field(default_factory=list)


# silero_vad and diarization -------------------------------------------------------------------


class SpeechRegions(Document):
    file_name: ClassVar[str] = "speech_segments.json"
    segments: list[Span] = Field(default_factory=list)
    speech_ratio: float = 0.0
    duration_s: float = 0.0


class SpeechProbability(Document):
    """Silero's speech probability, averaged per hop: the lyrics stage's 'is someone talking' curve."""

    file_name: ClassVar[str] = "speech_probability.json"
    hop_s: float
    values: list[float] = Field(default_factory=list)


class SpeakerTurn(Span):
    speaker: str


class SpeakerTurns(Document):
    file_name: ClassVar[str] = "speakers.json"
    backend: str
    speakers: list[str] = Field(default_factory=list)
    turns: list[SpeakerTurn] = Field(default_factory=list)
    names: dict[str, str] = Field(default_factory=dict)


# asr, translation and post_ner -------------------------------------------------------------------


class Word(BaseModel):
    word: str
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    probability: float | None = None


class Segment(Span):
    id: int
    text: str
    speaker: str | None = None
    language: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] = Field(default_factory=list)


class Transcript(Document):
    file_name: ClassVar[str] = "transcript.json"
    language: str
    language_probability: float | None = None
    model: str
    word_timestamps: Literal["aligned", "whisper"] = "whisper"
    segments: list[Segment] = Field(default_factory=list)

    def segment_dicts(self) -> list[dict[str, Any]]:
        return [s.model_dump() for s in self.segments]


class GuardRecord(Span):
    text: str
    reason: str
    action: str  # dropped, changed, flagged, redecoded, uncovered
    after: str | None = None


class CoveredRegion(Span):
    covered_s: float  # seconds of this VAD region under recognised words


class DecodeReport(Document):
    """What the asr pass dropped, changed, flagged or decoded again, and how much VAD speech its words cover."""

    file_name: ClassVar[str] = "decode_report.json"
    records: list[GuardRecord] = Field(default_factory=list)
    regions: list[CoveredRegion] = Field(default_factory=list)


class TranslatedSegment(Span):
    id: int
    text: str
    speaker: str | None = None
    words: list[Word] = Field(default_factory=list)
    source_ids: list[int] = Field(default_factory=list)  # the transcript segments it renders


class Translation(Document):
    file_name: ClassVar[str] = "translation.json"
    backend: str
    source_language: str
    target_language: str
    passthrough: bool = False
    segments: list[TranslatedSegment] = Field(default_factory=list)
    records: list[GuardRecord] = Field(default_factory=list)  # what the translate pass dropped, redid or flagged

    def segment_dicts(self) -> list[dict[str, Any]]:
        return [s.model_dump() for s in self.segments]


class NamedTranslation(Translation):
    """post_ner's output: the translation with names spelt as the glossary spells them."""

    file_name: ClassVar[str] = "english.json"


# lyrics_detection ---------------------------------------------------------------------------


class MusicFeatures(Document):
    """Per-hop audio evidence of music (tasks.music_features.HopFeatures), for the text half of the stage."""

    file_name: ClassVar[str] = "music_features.json"
    hop_s: float
    pulse: list[float]
    tonal: list[float]
    presence: list[float]


class SongRegion(Span):
    score: float = 0.0


class Songs(Document):
    file_name: ClassVar[str] = "songs.json"
    regions: list[SongRegion] = Field(default_factory=list)
    lyric_segment_ids: list[int] = Field(default_factory=list)  # transcript segments sung, not spoken


# subtitle_gen -------------------------------------------------------------------------------


class SubtitleTrack(BaseModel):
    language: str
    role: Literal["target", "source"]
    events: int = 0
    lyric_events: int = 0
    files: dict[SubtitleFormat, str] = Field(default_factory=dict)  # format -> job-relative path


class SubtitleSet(Document):
    """The subtitle tracks of the film, the target language first: what mux puts into the film."""

    file_name: ClassVar[str] = "subtitles.json"
    tracks: list[SubtitleTrack] = Field(default_factory=list)
