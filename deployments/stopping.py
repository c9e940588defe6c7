"""A deadline on stopping: Prefect's graceful shutdowns retry their API calls for a minute or more
when the server is gone, and a service manager stopping a machine waits for none of that."""

from __future__ import annotations

import os
import sys
import threading

import psutil

STOP_GRACE_S = 7.0  # then the runs still going are killed and the process exits: within 10 s of SIGTERM


def exit_after(grace_s: float = STOP_GRACE_S) -> threading.Timer:
    """Force the exit `grace_s` from now, in case a graceful stop hangs on an unreachable server."""

    def force() -> None:
        print(f"still stopping after {grace_s:.0f} s (Prefect server unreachable?): killing runs, exiting",
              file=sys.stderr, flush=True)  # fmt: skip
        kill_children()
        os._exit(143)

    timer = threading.Timer(grace_s, force)
    timer.daemon = True
    timer.start()
    return timer


def kill_children(wait_s: float = 1.0) -> None:
    """Flow-run processes of this process: SIGTERM, then SIGKILL, so none is left orphaned."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=wait_s)
    for child in alive:
        child.kill()
