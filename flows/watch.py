"""The watch-folder flow: prepare a job for each new film in an inbox and start its subtitle run.

Runs go through the subtitle deployment with an idempotency key made from the film's
fingerprint, so a film never runs twice, also after a restart of the server or the watcher.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.inbox import MAX_UNSETTLED_SCANS, Entry, ledger_path, needs_run, open_ledger, stable_files
from flows.prepare import InputError, prepare_job
from settings.jobs import fingerprint, now_iso
from settings.model import load_settings

SUBTITLE_DEPLOYMENT = "subtitle/default"


@flow(name="watch-folder", log_prints=True)
def watch_folder(
    inbox: str,
    processed: Literal["ledger", "move"] = "ledger",
    done_folder: str | None = None,
    deployment: str = SUBTITLE_DEPLOYMENT,
    max_unsettled_scans: int = MAX_UNSETTLED_SCANS,
) -> dict[str, int]:
    """One scan of `inbox`: follow up earlier runs, then start runs for files that are ready.

    A file still changing after `max_unsettled_scans` scans is reported once (a warning, and the
    ledger's `unsettled`), and never prepared while it changes.
    """
    from prefect.deployments import run_deployment

    log = get_run_logger()
    inbox_path = Path(inbox).expanduser()
    if not inbox_path.is_dir():
        raise ValueError(f"inbox {inbox_path} is not a folder")
    out_root = load_settings().out_root
    counts = {"started": 0, "done": 0, "failed": 0, "waiting": 0, "unsettled": 0}
    with open_ledger(ledger_path(out_root, inbox_path), inbox_path) as ledger:
        _follow_up(ledger.films.values(), processed, Path(done_folder) if done_folder else inbox_path / ".done", counts)
        reported = set(ledger.unsettled)
        ready = stable_files(inbox_path, ledger, max_unsettled_scans)
        counts["waiting"] = len(ledger.seen) - len(ready)
        counts["unsettled"] = len(ledger.unsettled)
        for name, unsettled in ledger.unsettled.items():
            if name not in reported:
                log.warning("%s: %s", Path(name).name, unsettled.note)
        for path in ready:
            key = fingerprint(path)
            if not needs_run(ledger.films.get(key), path):
                continue
            stat = path.stat()
            entry = Entry(path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            ledger.films[key] = entry
            try:
                job = prepare_job(path)
            except InputError as exc:
                entry.state, entry.note = "failed", f"not a usable film: {exc}"
                log.warning("%s: %s", path.name, entry.note)
                continue
            entry.job_id = job.job_id
            run: Any = run_deployment(  # synchronous here (Prefect's sync/async dispatch)
                deployment,
                parameters={"job_id": job.job_id},
                timeout=0,
                idempotency_key=f"filmsubs-{key}-{entry.mtime_ns}",
                tags=[f"job:{job.job_id}", "watch-folder"],
                as_subflow=False,
            )
            entry.flow_run_id = str(run.id)
            counts["started"] += 1
            log.info("%s: job %s, subtitle run %s", path.name, job.job_id, run.id)
    return counts


def _follow_up(entries, processed: str, done_folder: Path, counts: dict[str, int]) -> None:
    """Record how submitted runs ended; move finished films when asked to."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for entry in entries:
            if entry.state != "submitted" or entry.flow_run_id is None:
                continue
            state = client.read_flow_run(entry.flow_run_id).state
            if state is None or not state.is_final():
                continue
            if state.is_completed():
                entry.state, entry.note = "done", None
                counts["done"] += 1
                source = Path(entry.path)
                if processed == "move" and source.exists():
                    done_folder.mkdir(parents=True, exist_ok=True)
                    target = done_folder / source.name
                    shutil.move(source, target)
                    entry.path = str(target)
            else:
                entry.state, entry.note = "failed", f"run {entry.flow_run_id} ended {state.name}: {state.message}"
                counts["failed"] += 1
            entry.updated = now_iso()
