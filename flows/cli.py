"""The command line.

    python -m flows.subtitle prepare FILM [--title T --year Y --source-lang hi --target-lang en --device D]
    python -m flows.subtitle JOB_ID [--stages asr,subtitle_gen | --from-stage asr] [--set KEY=VALUE ...]
    python -m flows.subtitle status JOB_ID
    python -m flows.subtitle demo

Every mistake a user can make here (a wrong job id, setting, value or device) is answered with
one line and exit status 2 before Prefect is imported, a server started or a run recorded.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import weakref
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from flows.temporary_server import TemporaryServer, serving, start_early
from hardware.policy import DeviceError, resolve_device
from hardware.profile import cached_profile
from settings.jobs import Job, JobNotFound, find_job
from settings.model import Settings, load_settings
from tasks.contract import STAGE_ORDER


class UsageError(ValueError):
    """A mistake on the command line: one line to the user, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line and exit status 2, like every other usage error here."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def refuse_option_like_films(argv: list[str]) -> None:
    """A film whose name begins with `-` would be parsed as an option: say how to pass it instead."""
    for token in argv:
        if token == "--":
            return
        if token.startswith("-") and Path(token).is_file():
            raise UsageError(
                f"{token!r} begins with '-' and would be read as an option; "
                f"write `prepare -- {token}` or `prepare ./{token}`"
            )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` or `SECTION__KEY=VALUE` pairs as nested overrides (the command line wins over everything)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set wants KEY=VALUE, not {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: {part.upper()} is a value, not a section")
        node[parts[-1]] = value
    return out


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line naming the setting the way the user writes it (ASR__BEAM_SIZE)."""
    problems = []
    for error in exc.errors():
        key = "__".join(str(part) for part in error["loc"]).upper() or "settings"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {key}")
        else:
            problems.append(f"{key}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(problems) + ". The settings are listed in README.md (Configuration)."


def checked_settings(job_env: Path | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(job_env, overrides=overrides or None)
    except ValidationError as exc:
        raise UsageError(validation_message(exc)) from None
    except ValueError as exc:  # a job file with an unknown key or a secret
        raise UsageError(str(exc)) from None


def checked_device(settings: Settings) -> str:
    """The device this machine gives the job; a DEVICE it lacks is a usage error."""
    try:
        return resolve_device(cached_profile(settings.out_root / "hardware_cache.json"), settings.device)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def checked_job(job_id: str, overrides: dict[str, Any]) -> Job:
    try:
        return find_job(checked_settings(None, overrides).out_root, job_id)
    except JobNotFound as exc:
        raise UsageError(f"{exc}; `python -m flows.subtitle prepare FILM` makes a job and prints its id") from None


def run_command(argv: list[str] | None = None) -> NoReturn:
    """`python -m flows.subtitle`: `main`, then an exit that skips the interpreter's teardown.

    Once the exit hooks have run (Prefect's log and event queues drained, the temporary server stopped),
    tearing the interpreter down only frees what the process is about to give back, and took 0.9 s of
    every run here (unloading torch alone 0.55 s), a third of a cached re-run. So the last exit hook
    flushes the streams and the logs, runs the finalizers and ends the process with main's status.
    """
    status = [1]  # an exception out of main ends the process with 1, as Python's own exit does

    def quick_exit() -> None:
        weakref.finalize._exitfunc()  # type: ignore[attr-defined]  # temporary folders and the like
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
                pass
        os._exit(status[0])

    atexit.register(quick_exit)  # registered first, so it runs last
    try:
        status[0] = main(argv)
    except SystemExit as exc:
        status[0] = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    except KeyboardInterrupt:
        status[0] = 130
        raise
    sys.exit(status[0])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = {"prepare": _prepare, "status": _status, "demo": _demo}.get(argv[0] if argv else "", _run)
    try:
        return command(argv[1:] if command is not _run else argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _demo(argv: list[str]) -> int:
    from flows.demo import main as demo_main

    return demo_main(argv)


def _prepare(argv: list[str]) -> int:
    from flows.prepare import InputError, prepare_job
    from settings.volume import OutputVolumeError

    refuse_option_like_films(argv)
    parser = Parser(prog="python -m flows.subtitle prepare")
    parser.add_argument("film", type=Path)
    parser.add_argument("--title")
    parser.add_argument("--year", type=int)
    parser.add_argument("--source-lang", help="the film's language: what ASR decodes (default hi)")
    parser.add_argument("--target-lang", help="the subtitles' language (en)")
    parser.add_argument("--audience", choices=["adult", "children"])
    parser.add_argument("--device", help="pin a device (cpu, cuda, cuda:N, mps); default: chosen where the job runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    film = {
        k: v
        for k, v in {
            "title": args.title,
            "year": args.year,
            "source_lang": args.source_lang,
            "target_lang": args.target_lang,
            "audience": args.audience,
        }.items()
        if v is not None
    }
    if film:
        overrides.setdefault("film", {}).update(film)
    if args.device:
        overrides["device"] = args.device
    settings = checked_settings(None, overrides)
    if settings.device != "auto":  # a pinned device must exist here; `auto` is decided where the job runs
        checked_device(settings)
    try:
        job = prepare_job(args.film, overrides)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    except OutputVolumeError as exc:
        raise UsageError(str(exc.strerror)) from None
    print(job.job_id)
    print(f"job folder: {job.dir}", file=sys.stderr)
    return 0


def _status(argv: list[str]) -> int:
    from tasks.kernel import job_running, read_manifest

    parser = Parser(prog="python -m flows.subtitle status")
    parser.add_argument("job_id")
    job = checked_job(parser.parse_args(argv).job_id, {})
    current = read_manifest(job)
    running = job_running(job)
    mode = f"  device {current.device_mode}" if current.device_mode else ""
    print(f"job {job.job_id}  ({job.dir}){mode}{'  - running now' if running else ''}")
    if not current.stages:
        print("no stage has run yet")
    for name, entry in current.stages.items():
        duration = f"{entry.duration_s:7.1f} s" if entry.duration_s is not None else " " * 9
        note = f"  {entry.message}" if entry.message else ""
        state = entry.state if running or entry.state != "running" else "interrupted"
        print(f"  {name:<24} {state:<11} {duration}  {entry.device or '':<6}{note}")
    return 0


def _stage_list(value: str | None) -> list[str] | None:
    stages = [s.strip() for s in value.split(",") if s.strip()] if value else None
    unknown = [s for s in stages or [] if s not in STAGE_ORDER]
    if unknown:
        raise UsageError(f"unknown stage {', '.join(unknown)}; stages are: {', '.join(STAGE_ORDER)}")
    return stages


def _run(argv: list[str]) -> int:
    parser = Parser(
        prog="python -m flows.subtitle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("job_id")
    parser.add_argument(
        "--stages", help="comma-separated stages to run again (their upstream from the cache, nothing downstream)"
    )
    parser.add_argument("--from-stage", help="run this stage and every later one again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--verbose", action="store_true", help="Prefect's log lines as well as the progress board")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    stages = _stage_list(args.stages)
    from_stages = _stage_list(args.from_stage)
    from_stage = from_stages[0] if from_stages else None
    if stages and from_stage:
        raise UsageError("give either --stages or --from-stage, not both")
    job = checked_job(args.job_id, overrides)
    checked_room(job, stages, from_stage)
    device = checked_device(checked_settings(job.env_file, overrides))
    server = start_early()  # boots on another core while the run imports its stages
    return _run_flow(job, stages, from_stage, overrides, device, args.verbose, server)


def checked_room(job: Job, stages: list[str] | None, from_stage: str | None) -> None:
    """A read-only or full output volume is refused before a server starts or a model loads."""
    from tasks.kernel import check_room, selected_stages

    try:
        if stages or from_stage:  # which stages run again depends on the graph, which the flow module holds
            from flows.subtitle import PIPELINE

            check_room(job, *selected_stages(PIPELINE, stages, from_stage))
        else:  # a whole run: every stage, none forced (no Prefect import before the temporary server starts)
            check_room(job, set(STAGE_ORDER), set())
    except OSError as exc:
        raise UsageError(str(exc.strerror)) from None


def _run_flow(job: Job, stages: list[str] | None, from_stage: str | None, overrides: dict[str, Any], device: str,
              verbose: bool, server: TemporaryServer | None = None) -> int:  # fmt: skip
    from flows.progress import followed
    from flows.subtitle import subtitle
    from tasks.kernel import JobBusy, PipelineError, job_running

    if job_running(job):
        raise UsageError(f"job {job.job_id} is already running; wait for it to finish")
    print(f"job {job.job_id}: running on {device} (a Prefect server is started if none is configured)", file=sys.stderr)
    try:
        with serving(server), followed(list(STAGE_ORDER), verbose):
            results = subtitle(job_id=job.job_id, stages=stages, from_stage=from_stage, overrides=overrides or None)
    except JobBusy as exc:
        raise UsageError(str(exc)) from None
    except PipelineError as exc:
        print(
            f"error: {exc}\nThe stage logs are in {job.logs_dir}; run the job again to resume from there.",
            file=sys.stderr,
        )
        return 1
    print(f"job {job.job_id} finished: {len(results)} stages; outputs in {job.output_dir}")
    print(finish_message(results))
    return 0


def finish_message(results: dict[str, Any]) -> str:
    """Which Whisper model the run used (and why, and how to get a better one), the subtitle QC in brief, the mux."""
    lines = []
    asr = results.get("asr")
    if asr is not None:
        reason = asr.summary.get("model_reason")
        lines.append(f"ASR model: {asr.summary.get('model')}" + (f" ({reason})" if reason else ""))
    subtitles = results.get("subtitle_gen")
    if subtitles is not None:
        lines += subtitle_lines(subtitles.summary)
    muxed = results.get("mux")
    if muxed is not None and muxed.skipped:
        lines.append(f"mux skipped: {muxed.skipped}")
    elif muxed is not None and muxed.summary.get("output"):
        lines.append(f"subtitled copy: {muxed.summary['output']}")
    return "\n".join(lines)


def subtitle_lines(summary: dict[str, Any]) -> list[str]:
    """Events per track, hard-rule breaks and speech coverage; with no events, the note saying why instead."""
    tracks = ", ".join(f"{t['language']} {t['events']} events" for t in summary.get("tracks", []))
    line = f"subtitles: {tracks}; {summary.get('hard_violations')} hard-rule breaks"
    notes = summary.get("notes", [])
    if not notes:  # with no speech at all, "100 % covered" would mislead
        line += f"; speech covered {100 * float(summary.get('speech_coverage', 1.0)):.0f} %"
    return [line, *(f"note: {note}" for note in notes)]
