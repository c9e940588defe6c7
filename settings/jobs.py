"""Job ids, the job folder layout, and `job.json`."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, field_validator

# ASCII digits only, and the whole string: no `..`, `/`, absolute path or trailing newline gets through.
JOB_ID_PATTERN = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})-([0-9]{4})")
FINGERPRINT_SAMPLE = 4 * 2**20


class JobNotFound(LookupError):
    pass


class InvalidJobId(JobNotFound, ValueError):
    """A job id from outside (command line, deployment parameter) that is not `YYYYMMDD-NNNN`."""


def job_id_date(job_id: object) -> tuple[str, str, str]:
    """(year, month, day) of a well-formed job id; InvalidJobId for anything else, before it nears a path."""
    match = JOB_ID_PATTERN.fullmatch(job_id) if isinstance(job_id, str) else None
    if match is None:
        raise InvalidJobId(f"{job_id!r} is not a job id (YYYYMMDD-NNNN)")
    year, month, day, _ = match.groups()
    return year, month, day


class JobFile(BaseModel):
    """`job.json`: what the job was made from."""

    job_id: str
    input_path: str
    input_size: int
    duration_s: float | None = None  # ffprobe's, for the room a run needs on the output volume
    fingerprint: str
    created: str
    user: str


class Job(BaseModel):
    job_id: str
    dir: Path

    @field_validator("job_id")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        job_id_date(value)
        return value

    @property
    def env_file(self) -> Path:
        # Never `.env`: Prefect reads ./.env.
        return self.dir / f".{self.job_id}.env"

    @property
    def job_file(self) -> Path:
        return self.dir / "job.json"

    @property
    def manifest_file(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def output_dir(self) -> Path:
        return self.dir / "output"

    @property
    def results_dir(self) -> Path:
        """Prefect's persisted stage results and cache records for this job."""
        return self.dir / ".results"

    def read_job_file(self) -> JobFile:
        return JobFile.model_validate_json(self.job_file.read_text())


def fingerprint(path: Path) -> str:
    """sha256 over the size and three 4 MiB samples: stable, and cheap on a multi-GB film."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        for offset in sorted({0, max(0, size // 2 - FINGERPRINT_SAMPLE // 2), max(0, size - FINGERPRINT_SAMPLE)}):
            fh.seek(offset)
            digest.update(fh.read(FINGERPRINT_SAMPLE))
    return digest.hexdigest()


def _ids_dir(out_root: Path, day: date) -> Path:
    return out_root / ".ids" / day.strftime("%Y%m%d")


def allocate_job_id(out_root: Path, day: date | None = None) -> str:
    """Next free `YYYYMMDD-NNNN`. `mkdir` is atomic, so racing processes never share an id."""
    day = day or date.today()
    folder = _ids_dir(out_root, day)
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    number = max(taken, default=0) + 1
    while number <= 9999:
        try:
            (folder / f"{number:04d}").mkdir()
        except FileExistsError:
            number += 1
            continue
        return f"{day:%Y%m%d}-{number:04d}"
    raise RuntimeError(f"no job ids left for {day}")


def job_dir_for(out_root: Path, job_id: str, user: str) -> Path:
    year, month, day = job_id_date(job_id)
    return out_root / year / month / day / user / job_id


def find_job(out_root: Path, job_id: str) -> Job:
    """The job with this id, whoever made it. The id is checked first: it comes from outside."""
    year, month, day = job_id_date(job_id)
    for candidate in sorted((out_root / year / month / day).glob(f"*/{job_id}")):
        if (candidate / "job.json").is_file():
            return Job(job_id=job_id, dir=candidate)
    raise JobNotFound(f"job {job_id} does not exist under {out_root}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:  # a full disk: no half file left beside the real one
        tmp.unlink(missing_ok=True)
