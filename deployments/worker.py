"""A process work-pool worker that stops within 10 s of SIGTERM and hands its runs back.

    PIPELINE__GPU_LIMIT='gpu-{host}' python -m deployments.worker --pool filmsubs --limit 1

On SIGTERM or Ctrl-C (a service manager stopping the machine, a person at the terminal) it stops
taking runs, stops its flow-run processes and puts their runs back in the pool's queue
(AwaitingRetry): another worker then resumes each from the job folder's cache. It exits within
STOP_GRACE_S, also when the server is gone. `prefect worker start` instead forwards SIGTERM as a
SIGINT that its start-up can lose, and leaves the runs it had marked Running or Crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import warnings
from typing import Any

TERM_S = 2.5  # for a flow-run process to stop on SIGTERM; then it is killed, and its run put back within STOP_GRACE_S
STOPPED_BY_SIGNAL = 143


def stop_now(signum: int, frame: Any) -> None:
    """Before the worker runs (Prefect's imports take seconds) a stop signal just exits."""
    raise SystemExit(STOPPED_BY_SIGNAL)


def handing_back_worker(**kwargs: Any) -> Any:
    """Prefect's ProcessWorker, able to stop taking runs and to put back the ones it has."""
    import httpx
    from prefect.states import AwaitingRetry
    from prefect.workers.process import ProcessWorker

    with warnings.catch_warnings():  # it registers as the "process" type again, over ProcessWorker
        warnings.simplefilter("ignore", UserWarning)

        class HandingBackWorker(ProcessWorker):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.stopping = False
                self.running: set[Any] = set()  # ids of the flow runs whose processes are going
                self.handed_back: list[Any] = []

            async def get_and_submit_flow_runs(self) -> Any:
                return [] if self.stopping else await super().get_and_submit_flow_runs()

            async def run(self, flow_run: Any, *args: Any, **kwargs: Any) -> Any:
                self.running.add(flow_run.id)
                try:
                    return await super().run(flow_run, *args, **kwargs)
                finally:
                    self.running.discard(flow_run.id)

            async def _propose_crashed_state(self, flow_run: Any, *args: Any, **kwargs: Any) -> None:
                if not self.stopping:  # a run stopped by us is put back, not crashed
                    await super()._propose_crashed_state(flow_run, *args, **kwargs)

            async def put_back(self, run_id: Any, deadline: float) -> None:
                """Queue the run again unless it finished before its process stopped.

                First waits (to `deadline`) for the crash that Prefect reports when the process
                has gone, so that report cannot land after the run is queued."""
                try:
                    state = (await self.client.read_flow_run(run_id)).state
                    while (state is None or not state.is_final()) and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                        state = (await self.client.read_flow_run(run_id)).state
                    if state is not None and (state.is_completed() or state.is_failed() or state.is_cancelled()):
                        return
                    await self.client.set_flow_run_state(
                        run_id, AwaitingRetry(message="its worker stopped"), force=True
                    )
                    self.handed_back.append(run_id)
                except httpx.HTTPError as exc:  # the server gone: the run stays as its process left it
                    print(f"could not put back flow run {run_id}: {exc}", flush=True)

            async def hand_back(self, wait_s: float = 2.0) -> list[Any]:
                """Stop the flow-run processes and put their runs back in the queue; their ids."""
                self.stopping = True
                runs = sorted(self.running, key=str)
                if await asyncio.to_thread(stop_runs):
                    print("some flow-run processes would not stop", flush=True)
                deadline = time.monotonic() + wait_s
                for run_id in runs:
                    await self.put_back(run_id, deadline)
                return self.handed_back

    return HandingBackWorker(**kwargs)


def stop_runs(term_s: float = TERM_S, kill_s: float = 1.0) -> int:
    """SIGTERM to each flow-run process, SIGKILL to what is left of them after `term_s` (a stage
    decoding in a thread does not stop for SIGTERM, and every stage resumes from its cache after a
    kill); returns how many are still there after that."""
    import psutil

    runs = psutil.Process().children()
    for run in runs:
        run.terminate()
    _, alive = psutil.wait_procs(runs, timeout=term_s)
    if alive:
        print(f"{len(alive)} flow-run processes still going {term_s:.0f} s after SIGTERM: killing them", flush=True)
        left = [child for run in alive for child in _tree(run)]
        for proc in left:
            proc.kill()
        _, alive = psutil.wait_procs(left, timeout=kill_s)
    return len(alive)


def _tree(proc: Any) -> list[Any]:
    import psutil

    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


async def work(pool: str, name: str | None, limit: int | None) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS

    from deployments.stopping import STOP_GRACE_S, exit_after

    worker = handing_back_worker(
        work_pool_name=pool,
        name=name,
        limit=limit,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()

    async def stop() -> None:
        exit_after(STOP_GRACE_S)
        try:
            handed = await worker.hand_back()
            print(f"handed back {len(handed)} flow runs: {', '.join(map(str, handed)) or '-'}", flush=True)
        finally:
            main.cancel()

    def on_signal(signum: int) -> None:
        if worker.stopping:
            return
        worker.stopping = True
        print(f"received {signal.Signals(signum).name}: handing back runs, stopping", flush=True)
        loop.create_task(stop())

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    print(f"Worker on pool {pool!r}; SIGTERM hands back its runs and stops within {STOP_GRACE_S:.0f} s.", flush=True)
    try:
        await worker.start(printer=lambda *a, **_: print(*a, flush=True))
    except asyncio.CancelledError:
        print(f"Worker {worker.name!r} stopped.", flush=True)


def main(argv: list[str] | None = None) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_now)
    parser = argparse.ArgumentParser(
        prog="python -m deployments.worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", default="filmsubs", help="the process work pool (deployments.work_pool makes it)")
    parser.add_argument("--name", default=None, help="the worker's name (default: Prefect's, from the host)")
    parser.add_argument("--limit", type=int, default=None, help="most flow runs at once on this machine")
    args = parser.parse_args(argv)
    try:
        asyncio.run(work(args.pool, args.name, args.limit))
    except KeyboardInterrupt:
        sys.exit(STOPPED_BY_SIGNAL)


if __name__ == "__main__":
    main()
