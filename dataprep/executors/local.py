"""The local executor: worker processes on this machine.

Each of the `workers` lanes is a thread that owns a one-process pool and feeds it one job at a
time, so a process that dies (segfault, OOM kill, os._exit) can only have been running that
job: the job is retried in a fresh process, up to `max_retries` times, then reported lost, and
no other job is disturbed. A lane's process lives on between jobs, so models loaded by the stages
stay loaded. Jobs always run in a child process (also with one worker), so a crash in native
code never takes the run down.
"""
from __future__ import annotations

import os
import socket
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import Job, OnLost, OnResult, Work


def _call(work: Work, job: Job) -> dict:
    host = socket.gethostname()
    return work(job, {"executor": "local", "node_id": host, "host": host, "pid": os.getpid()})


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1, max_retries: int = 2):
        self.workers = max(1, int(workers))
        self.max_retries = max_retries

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers, "max_retries": self.max_retries}

    def run(self, work: Work, jobs: list[Job], on_result: OnResult, on_lost: OnLost) -> None:
        queue = deque(jobs)
        lock = threading.Lock()          # one job taken, one callback run, at a time
        failure: list[BaseException] = []

        def next_job() -> Job | None:
            with lock:
                return queue.popleft() if queue and not failure else None

        def lane() -> None:
            pool = ProcessPoolExecutor(max_workers=1)
            try:
                while (job := next_job()) is not None:
                    for _ in range(1 + self.max_retries):
                        try:
                            result = pool.submit(_call, work, job).result()
                        except BrokenProcessPool:
                            pool.shutdown(wait=False)
                            pool = ProcessPoolExecutor(max_workers=1)
                            continue
                        with lock:
                            on_result(job, result)
                        break
                    else:
                        with lock:
                            on_lost(job, f"the worker process died on each of {1 + self.max_retries} "
                                         "attempts (killed, segfault or out of memory)")
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
                with lock:
                    failure.append(exc)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

        lanes = [threading.Thread(target=lane, daemon=True, name=f"dataprep-lane-{i}")
                 for i in range(min(self.workers, len(jobs)))]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        if failure:
            raise failure[0]
