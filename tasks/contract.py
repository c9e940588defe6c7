"""The stage contract: what a stage receives, what it writes, what it returns.

A stage body is a plain function `body(ctx, settings, <upstream results by stage name>) ->
summary dict`. Its parameters after `settings` name the upstream stages it reads (and `film`
for the film's settings), so the signature is the whole of its inputs. It reads typed
documents (`tasks.documents`) with `ctx.read(result, DocType)`, writes only through `ctx`
(atomically, into its own folder) and returns a short summary. `tasks.kernel` turns it into a
cached Prefect task.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, SecretStr

from hardware.policy import StageDevice
from settings.jobs import Job, JobFile
from tasks.documents import Document

D = TypeVar("D", bound=Document)

STAGE_ORDER: tuple[str, ...] = (
    "demux",
    "tmdb",
    "pre_ner",
    "silero_vad",
    "diarization",
    "asr",
    "second_pass_translation",
    "lyrics_detection",
    "post_ner",
    "subtitle_gen",
    "mux",
)


class PermanentError(RuntimeError):
    """Cannot heal by retrying (bad input, missing model): fail at once and say what to do."""


class TransientError(RuntimeError):
    """May heal by retrying (network, a busy file)."""


class OutputFile(BaseModel):
    name: str  # relative to the job folder
    size: int
    sha256: str


class StageResult(BaseModel):
    """Small and JSON-serialisable: what a stage wrote and a short summary. Never a big array."""

    stage: str
    version: str
    job_id: str
    files: list[OutputFile] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    device: str = "cpu"
    duration_s: float = 0.0
    skipped: str | None = None  # reason, when an optional stage could not run
    retry_on_resume: bool = False  # a skip that may heal (network): the next run tries again
    inputs: list[str] = Field(default_factory=list)  # the upstream results the flow passed it
    read_from: list[str] = Field(default_factory=list)  # those whose files the body opened

    def file(self, name: str) -> OutputFile:
        for record in self.files:
            if Path(record.name).name == name or record.name == name:
                return record
        raise KeyError(f"stage {self.stage} wrote no file {name!r} (it wrote {[f.name for f in self.files]})")

    def digest(self) -> str:
        payload = json.dumps([self.stage, self.version, self.skipped, [(f.name, f.sha256) for f in self.files]])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def stage_folder_name(stage: str) -> str:
    return f"{STAGE_ORDER.index(stage) + 1:02d}_{stage}" if stage in STAGE_ORDER else f"xx_{stage}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(job_dir: Path, path: Path) -> OutputFile:
    return OutputFile(name=str(path.relative_to(job_dir)), size=path.stat().st_size, sha256=sha256_file(path))


def files_intact(job_dir: Path, result: StageResult) -> bool:
    """Every file the result lists is there with its size and digest."""
    for record in result.files:
        path = job_dir / record.name
        if not path.is_file() or path.stat().st_size != record.size or sha256_file(path) != record.sha256:
            return False
    return True


class StageContext:
    """What a stage body may touch. Writes go to its own folder (or `output/`), atomically."""

    def __init__(
        self,
        *,
        job: Job,
        stage: str,
        device: StageDevice,
        log: logging.Logger,
        secrets: dict[str, SecretStr | None] | None = None,
        cache_root: Path,
        progress: Callable[[float, str], None] | None = None,
        gpu_limit: str = "gpu",
        publish: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.job = job
        self.stage = stage
        self.device = device
        self.log = log
        self.secrets = secrets or {}
        self.cache_root = cache_root
        self.gpu_limit = gpu_limit  # the global concurrency limit a model-heavy stage takes a slot of
        self.out_dir = job.dir / stage_folder_name(stage)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._written: dict[Path, None] = {}
        self._progress = progress
        self._publish = publish
        self.read_from: set[str] = set()  # upstream stages whose files the body opened

    # Inputs ---------------------------------------------------------------
    @property
    def job_file(self) -> JobFile:
        return self.job.read_job_file()

    def file(self, result: StageResult, name: str) -> Path:
        """A file an upstream stage listed in its result (by job-relative path or base name); never guessed."""
        path = self.job.dir / result.file(name).name
        if not path.is_file():
            raise PermanentError(f"{path} (from stage {result.stage}) is missing; run that stage again")
        self.read_from.add(result.stage)
        return path

    def read(self, result: StageResult, doc_type: type[D]) -> D:
        """The document `doc_type` that an upstream stage wrote."""
        if result.skipped is not None:
            raise PermanentError(
                f"stage {result.stage} was skipped ({result.skipped}); it wrote no {doc_type.file_name}"
            )
        path = self.file(result, doc_type.file_name)
        return doc_type.model_validate_json(path.read_text(encoding="utf-8"))

    def read_optional(self, result: StageResult, doc_type: type[D]) -> D | None:
        """As `read`, or None when that (optional) stage was skipped."""
        if result.skipped is not None:
            self.read_from.add(result.stage)
            self.log.info(
                "%s was skipped (%s): going on without its %s", result.stage, result.skipped, doc_type.file_name
            )
            return None
        return self.read(result, doc_type)

    # Outputs --------------------------------------------------------------
    def _target(self, name: str, final: bool) -> Path:
        folder = self.job.output_dir if final else self.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    @contextlib.contextmanager
    def output(self, name: str, *, final: bool = False) -> Iterator[Path]:
        """Yield a temporary path; on success it is renamed to `name`, so no half file looks done."""
        target = self._target(name, final)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
        tmp.unlink(missing_ok=True)
        try:
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"stage {self.stage} did not write {name}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self._written[target] = None

    def write_text(self, name: str, text: str, *, final: bool = False) -> Path:
        with self.output(name, final=final) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return self._target(name, final)

    def relative(self, path: Path) -> str:
        """A path as documents record it: relative to the job folder, so a moved job still reads."""
        return str(path.relative_to(self.job.dir))

    def write(self, doc: Document) -> Path:
        """A typed document, under the name its class gives."""
        return self.write_text(doc.file_name, doc.model_dump_json(indent=2))

    def write_json(self, name: str, data: Any, *, final: bool = False) -> Path:
        """A file no other stage reads (a report, a record); what stages hand on goes through `write`."""
        if isinstance(data, BaseModel):
            text = data.model_dump_json(indent=2)
        else:
            text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default)
        return self.write_text(name, text, final=final)

    def written(self) -> list[OutputFile]:
        return [file_record(self.job.dir, path) for path in self._written]

    def report(self, name: str, markdown: str, description: str = "") -> Path:
        """A Markdown report: written into the stage folder and, in a Prefect run, shown as an artifact."""
        path = self.write_text(name, markdown)
        if self._publish is not None:
            self._publish(Path(name).stem, markdown, description)
        return path

    def progress(self, fraction: float, message: str = "") -> None:
        self.log.info("progress %.0f%% %s", 100 * fraction, message)
        if self._progress is not None:
            self._progress(fraction, message)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
