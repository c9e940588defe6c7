"""Register the deployments on a process work pool, for several GPU machines.

    python -m deployments.work_pool --pool filmsubs --inbox /shared/inbox
    PIPELINE__GPU_LIMIT='gpu-{host}' python -m deployments.worker --pool filmsubs --limit 1   # on each GPU machine

Workers run the flow from this checkout (the same path on every machine, e.g. shared storage),
and jobs and results live under OUT_ROOT, which must be shared storage too.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import Flow

from deployments.serve import SUBTITLE_NAME, WATCH_NAME
from settings.paths import PROJECT_ROOT


def ensure_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def register(pool: str, inbox: Path | None, interval_s: float, source: Path = PROJECT_ROOT) -> list[str]:
    """Deploy both flows to `pool`; returns the deployment ids."""
    ensure_pool(pool)
    ids = []
    subtitle: Any = Flow.from_source(source=str(source), entrypoint="flows/subtitle.py:subtitle")  # sync dispatch
    ids.append(
        str(
            subtitle.deploy(
                name=SUBTITLE_NAME,
                work_pool_name=pool,
                tags=["filmsubs"],
                build=False,
                push=False,
                print_next_steps=False,
            )
        )
    )
    if inbox is not None:
        watch: Any = Flow.from_source(source=str(source), entrypoint="flows/watch.py:watch_folder")
        ids.append(
            str(
                watch.deploy(
                    name=WATCH_NAME,
                    work_pool_name=pool,
                    tags=["filmsubs"],
                    build=False,
                    push=False,
                    print_next_steps=False,
                    interval=timedelta(seconds=interval_s),
                    parameters={"inbox": str(inbox.expanduser().resolve())},
                )
            )
        )
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.work_pool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pool", default="filmsubs")
    parser.add_argument("--inbox", type=Path)
    parser.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args(argv)
    for deployment_id in register(args.pool, args.inbox, args.interval):
        print(deployment_id)


if __name__ == "__main__":
    main()
