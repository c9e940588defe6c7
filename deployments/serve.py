"""Serve the subtitle and watch-folder deployments from this machine.

    prefect server start                      # in one terminal (SQLite by default)
    python -m deployments.serve --inbox ~/films/inbox [--interval 60]

Then `prefect deployment run 'subtitle/default' --param job_id=...`, or drop films in the inbox.

SIGTERM stops it within STOP_GRACE_S seconds, also when the Prefect server is already gone
(Prefect's own shutdown then retries its API calls for half a minute or more).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.logging import get_logger
from prefect.runner import Runner

from deployments.stopping import STOP_GRACE_S, exit_after
from flows.subtitle import subtitle
from flows.watch import SUBTITLE_DEPLOYMENT, watch_folder

SUBTITLE_NAME = SUBTITLE_DEPLOYMENT.split("/")[1]
WATCH_NAME = "inbox"
log = get_logger("deployments.serve")


class StoppingRunner(Runner):
    """Prefect's runner, with a deadline on its graceful SIGTERM shutdown."""

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        exit_after(STOP_GRACE_S)
        super().handle_sigterm(*args, **kwargs)


def serve(*deployments: Any, limit: int | None = None) -> None:
    """`prefect.serve`, on a StoppingRunner."""
    runner = StoppingRunner(pause_on_shutdown=True, limit=limit)
    for deployment in deployments:
        runner.add_deployment(deployment)
    print(f"Serving {', '.join(d.full_name for d in deployments)}; SIGTERM stops within {STOP_GRACE_S:.0f} s.")
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        log.info("received %s, shutting down", type(exc).__name__)


def deployments(inbox: Path, interval_s: float, processed: str = "ledger"):
    return [
        subtitle.to_deployment(
            name=SUBTITLE_NAME,
            tags=["filmsubs"],
            description="Subtitle a job (job_id), or prepare and subtitle a film (input_path).",
        ),
        watch_folder.to_deployment(
            name=WATCH_NAME,
            interval=timedelta(seconds=interval_s) if interval_s > 0 else None,
            tags=["filmsubs"],
            parameters={"inbox": str(inbox.expanduser().resolve()), "processed": processed},
            description="Scan the inbox; start a subtitle run for each new, fully copied film.",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inbox", type=Path, default=Path("inbox"))
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        help="seconds between inbox scans; 0 for none (scans only when triggered)",
    )
    parser.add_argument("--processed", choices=["ledger", "move"], default="ledger")
    parser.add_argument("--limit", type=int, default=None, help="most flow runs at once on this machine")
    args = parser.parse_args(argv)
    args.inbox.mkdir(parents=True, exist_ok=True)
    serve(*deployments(args.inbox, args.interval, args.processed), limit=args.limit)


if __name__ == "__main__":
    main()
