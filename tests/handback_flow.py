"""A flow for the worker's hand-back test: its first attempt runs until stopped, later ones finish.

The first attempt ignores SIGTERM, as a process busy in a model stage can, so the worker has to
kill it.

Deployed from source to a process pool, as deployments.work_pool deploys the subtitle flow."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prefect import flow


@flow(name="handback-test")
def handed_back(attempts_file: str) -> int:
    """Counts its attempts in `attempts_file`; returns the count."""
    path = Path(attempts_file)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    return attempts
