"""The subtitle flow and its command line.

    python -m flows.subtitle prepare FILM [--title T --year Y --source-lang hi --target-lang en]
    python -m flows.subtitle JOB_ID [--stages asr,subtitle_gen | --from-stage asr] [--set KEY=VALUE ...]
    python -m flows.subtitle status JOB_ID
    python -m flows.subtitle demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, tags
from prefect.runtime import flow_run

from flows.pipeline import JobBusy, PipelineError, job_running, run_job
from flows.prepare import InputError, prepare_job
from settings.jobs import JobNotFound, find_job
from settings.model import load_settings
from tasks import manifest
from tasks.contract import StageResult
from tasks.registry import pipeline_stages


def _run_name() -> str:
    params = flow_run.parameters
    return f"subtitle-{params.get('job_id') or Path(params.get('input_path') or 'new').stem}"


@flow(name="subtitle", flow_run_name=_run_name, log_prints=True)
def subtitle(job_id: str | None = None, input_path: str | None = None, stages: list[str] | None = None,
             from_stage: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, StageResult]:
    """Subtitle one job; with `input_path` instead of `job_id`, prepare the job first."""
    if job_id is None:
        if input_path is None:
            raise ValueError("give job_id, or input_path to prepare a new job")
        job_id = prepare_job(Path(input_path), overrides).job_id
    _tag_run(job_id)
    return run_job(job_id, pipeline_stages(), stages=stages, from_stage=from_stage, overrides=overrides)


def _tag_run(job_id: str) -> None:
    """Put the job id in the run's tags and name, also for runs started from a deployment."""
    from prefect.client.orchestration import get_client

    run_id = flow_run.id
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        client.update_flow_run(run_id, name=f"subtitle-{job_id}",
                               tags=sorted(set(current.tags or []) | {f"job:{job_id}", "filmsubs"}))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` or `SECTION__KEY=VALUE` pairs as nested overrides (CLI wins over everything)."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants KEY=VALUE, not {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prepare":
        return _prepare(argv[1:])
    if argv and argv[0] == "status":
        return _status(argv[1:])
    if argv and argv[0] == "demo":
        from flows.demo import main as demo_main

        return demo_main(argv[1:])
    return _run(argv)


def _prepare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.subtitle prepare")
    parser.add_argument("film", type=Path)
    parser.add_argument("--title")
    parser.add_argument("--year", type=int)
    parser.add_argument("--source-lang")
    parser.add_argument("--target-lang")
    parser.add_argument("--audience", choices=["adult", "children"])
    parser.add_argument("--device")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    film = {k: v for k, v in {"title": args.title, "year": args.year, "source_lang": args.source_lang,
                              "target_lang": args.target_lang, "audience": args.audience}.items() if v is not None}
    if film:
        overrides.setdefault("film", {}).update(film)
    if args.device:
        overrides["device"] = args.device
    try:
        job = prepare_job(args.film, overrides)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(job.job_id)
    print(f"job folder: {job.dir}", file=sys.stderr)
    return 0


def _status(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.subtitle status")
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    try:
        job = find_job(load_settings().out_root, args.job_id)
    except JobNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    current = manifest.read_manifest(job)
    running = job_running(job)
    print(f"job {job.job_id}  ({job.dir}){'  - running now' if running else ''}")
    if not current.stages:
        print("no stage has run yet")
    for name, entry in current.stages.items():
        duration = f"{entry.duration_s:7.1f} s" if entry.duration_s is not None else " " * 9
        note = f"  {entry.message}" if entry.message else ""
        state = entry.state if running or entry.state != "running" else "interrupted"
        print(f"  {name:<24} {state:<11} {duration}  {entry.device or '':<6}{note}")
    return 0


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.subtitle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_id")
    parser.add_argument("--stages", help="comma-separated stages to run again (upstream from the cache)")
    parser.add_argument("--from-stage", help="run this stage and every later one again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        with tags(f"job:{args.job_id}"):
            results = subtitle(job_id=args.job_id, stages=stages, from_stage=args.from_stage,
                               overrides=parse_overrides(args.set) or None)
    except (JobNotFound, JobBusy, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        job = find_job(load_settings().out_root, args.job_id)
        print(f"error: {exc}\nThe stage logs are in {job.logs_dir}; run the job again to resume from there.",
              file=sys.stderr)
        return 1
    job = find_job(load_settings().out_root, args.job_id)
    print(f"job {args.job_id} finished: {len(results)} stages; outputs in {job.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
