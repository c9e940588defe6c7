"""The one settings model, read in layers.

Priority, lowest first: defaults, project config file (`config/filmsubs.toml`), the job's
`.<JOB_ID>.env`, environment variables, command-line overrides. Secrets come from the
environment or `config/secrets.json` and never reach a job file.
"""

from __future__ import annotations

import getpass
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from settings.caches import cache_root
from settings.paths import PROJECT_ROOT, config_file, secrets_file
from settings.stages import (
    AsrSettings,
    DemuxSettings,
    DiarizationSettings,
    LyricsSettings,
    MuxSettings,
    PostNerSettings,
    PreNerSettings,
    SileroVadSettings,
    StageSettings,
    SubtitleSettings,
    TmdbSettings,
    TranslationSettings,
)

SECRET_FIELDS = ("hf_token", "tmdb_api_key")
TARGET_LANGUAGES = ("en",)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class FilmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    year: int | None = Field(None, ge=1890, le=2100)
    source_lang: str = "hi"
    target_lang: str = "en"
    audience: Literal["adult", "children"] = "adult"

    @field_validator("source_lang", "target_lang")
    @classmethod
    def _language_code(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("target_lang")
    @classmethod
    def _supported_target(cls, value: str) -> str:
        if value not in TARGET_LANGUAGES:
            raise ValueError(
                f"subtitles can be made in {', '.join(TARGET_LANGUAGES)} only (Whisper translates to "
                f"English), not {value!r}"
            )
        return value


class PipelineSettings(BaseModel):
    """Run-wide knobs that never change what a stage produces (so never in a cache key)."""

    model_config = ConfigDict(extra="forbid")

    gpu_limit: str = Field(
        "gpu",
        description="Global concurrency limit the model-heavy stages take a slot of; "
        "'gpu-{host}' gives each machine (worker) its own.",
    )
    gpu_slots: int = Field(1, ge=1, description="Size of that limit when it has to be created.")

    def gpu_limit_name(self) -> str:
        import socket

        return self.gpu_limit.format(host=socket.gethostname().split(".")[0].lower())

    fail_at: str | None = Field(None, description="Fault injection for tests: this stage raises once.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    device: str = Field("auto", description="auto, cpu, mps, cuda or cuda:N. An explicit device wins.")
    out_root: Path = PROJECT_ROOT / "out"
    cache_root: Path = Field(default_factory=cache_root)
    user: str = Field(default_factory=getpass.getuser)

    hf_token: SecretStr | None = None
    tmdb_api_key: SecretStr | None = None

    film: FilmSettings = Field(default_factory=FilmSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)

    demux: DemuxSettings = Field(default_factory=DemuxSettings)
    tmdb: TmdbSettings = Field(default_factory=TmdbSettings)
    pre_ner: PreNerSettings = Field(default_factory=PreNerSettings)
    silero_vad: SileroVadSettings = Field(default_factory=SileroVadSettings)
    diarization: DiarizationSettings = Field(default_factory=DiarizationSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    second_pass_translation: TranslationSettings = Field(default_factory=TranslationSettings)
    lyrics_detection: LyricsSettings = Field(default_factory=LyricsSettings)
    post_ner: PostNerSettings = Field(default_factory=PostNerSettings)
    subtitle_gen: SubtitleSettings = Field(default_factory=SubtitleSettings)
    mux: MuxSettings = Field(default_factory=MuxSettings)

    @field_validator("user")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        """USER names a folder under OUT_ROOT: one plain name, never a path."""
        if value in {"", ".", ".."} or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(f"USER must be a plain name (it becomes a folder under OUT_ROOT), not {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"DEVICE must be auto, cpu, mps, cuda or cuda:N, not {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        job_env = _JOB_ENV_FILE.get("path")
        if job_env is not None:
            sources.append(DotEnvSettingsSource(settings_cls, env_file=job_env))
        if config_file().is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file()))
        if secrets_file().is_file():
            sources.append(_SecretsOnly(settings_cls, json_file=secrets_file()))
        return tuple(sources)

    def stage(self, name: str) -> StageSettings:
        """The sub-model a stage receives, with what it takes from elsewhere filled in: asr decodes the
        film's language unless ASR__LANGUAGE says otherwise; the Whisper translate pass decodes as ASR__* says."""
        value = getattr(self, name, None)
        if not isinstance(value, StageSettings):
            raise KeyError(f"no settings for stage {name!r}")
        if isinstance(value, AsrSettings) and not value.language:
            return value.model_copy(update={"language": self.film.source_lang})
        if isinstance(value, TranslationSettings):
            return value.model_copy(update={"decoding": self.asr.decoding()})
        return value


class _SecretsOnly(JsonConfigSettingsSource):
    """`config/secrets.json` may hold secrets and nothing else."""

    def __call__(self) -> dict[str, Any]:
        data = {k.lower(): v for k, v in super().__call__().items()}
        unknown = sorted(set(data) - set(SECRET_FIELDS))
        if unknown:
            raise ValueError(f"{secrets_file()}: only {', '.join(SECRET_FIELDS)} belong here, not {unknown}")
        return data


_JOB_ENV_FILE: dict[str, Path | None] = {}


def load_settings(job_env: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings for a job (or for the project when job_env is None), with CLI overrides on top."""
    if job_env is not None and not job_env.is_file():
        raise FileNotFoundError(f"job settings file {job_env} is missing")
    _check_job_env_keys(job_env)
    _JOB_ENV_FILE["path"] = job_env
    try:
        return Settings(**(overrides or {}))
    finally:
        _JOB_ENV_FILE.pop("path", None)


def _check_job_env_keys(job_env: Path | None) -> None:
    """A typo in a job file must not be ignored, and secrets must never be in one."""
    if job_env is None:
        return
    top = set(Settings.model_fields)
    for key in _job_env_keys(job_env):
        name = key.lower()
        head, _, rest = name.partition("__")
        if name in SECRET_FIELDS:
            raise ValueError(f"{job_env}: secret {key} must not be stored in a job file")
        if head not in top:
            raise ValueError(f"{job_env}: unknown setting {key}")
        sub = Settings.model_fields[head].annotation
        if rest and (not isinstance(sub, type) or not issubclass(sub, BaseModel) or rest not in sub.model_fields):
            raise ValueError(f"{job_env}: unknown setting {key}")


def _job_env_keys(job_env: Path) -> list[str]:
    """The keys of a job file; a line that is not KEY=VALUE is an error, not silently dropped as dotenv does."""
    from dotenv.parser import parse_stream

    keys = []
    with job_env.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            raw = binding.original.string
            number = binding.original.line + raw.count("\n", 0, len(raw) - len(raw.lstrip()))
            line = raw.strip()
            if binding.error:
                raise ValueError(f"{job_env}: line {number} is not KEY=VALUE: {line!r}")
            if binding.key is not None and binding.value is None:
                raise ValueError(f"{job_env}: line {number} gives {binding.key} no value: {line!r}")
            if binding.key is not None:
                keys.append(binding.key)
    return keys


def job_env_text(settings: Settings) -> str:
    """The job file: every non-secret setting as KEY=value, nested keys joined by `__`."""
    data = settings.model_dump(mode="json", exclude=set(SECRET_FIELDS))
    lines = ["# Settings of this job (no secrets). Edit, then run the job again."]
    for key, value in data.items():
        if isinstance(value, dict) and key in Settings.model_fields and _is_model(key):
            for sub_key, sub_value in value.items():
                lines.append(f"{key.upper()}__{sub_key.upper()}={_env_value(sub_value)}")
        else:
            lines.append(f"{key.upper()}={_env_value(value)}")
    return "\n".join(lines) + "\n"


def _is_model(key: str) -> bool:
    annotation = Settings.model_fields[key].annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _env_value(value: Any) -> str:
    text = "null" if value is None else value if isinstance(value, str) else json.dumps(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_digest(model: BaseModel, only: tuple[str, ...] | None = None) -> str:
    """Hash of what a (sub-)model says, for cache keys (of its fields in `only`, when given). Secrets are
    never part of it."""
    import hashlib

    data = model.cache_relevant() if isinstance(model, StageSettings) else model.model_dump(mode="json")
    if only is not None:
        data = {name: value for name, value in data.items() if name in only}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
