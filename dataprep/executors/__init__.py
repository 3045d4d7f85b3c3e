"""Executors: they only schedule. Each takes a picklable `work(job, worker) -> result` callable
and a list of jobs, runs every job somewhere (a local process pool, a Ray cluster), and reports
each outcome through two callbacks:

- `on_result(job, result)`: `work` returned (it has already written the job's record);
- `on_lost(job, reason)`: the process running the job died (segfault, OOM kill, node lost) on
  every one of its 1 + max_retries attempts.

`worker` is a small dict saying where the job ran (executor, host, pid, node id), which `work`
stores in the record. Executors know nothing of videos or stages (the datatrove shape: the
pipeline is a list of steps; executors run it; the merge is shared code, `dataprep.runner`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class Job:
    """One unit of work: a source video (relative path) and the key of its record."""
    name: str
    key: str


Work = Callable[[Job, dict], dict]
OnResult = Callable[[Job, dict], None]
OnLost = Callable[[Job, str], None]


class Executor(Protocol):
    name: str

    def run(self, work: Work, jobs: list[Job], on_result: OnResult, on_lost: OnLost) -> None:
        ...

    def describe(self) -> dict:
        """JSON-able settings for stats.json (resources, retries, cluster)."""
        ...


EXECUTORS = ("local", "ray")


class ExecutorError(RuntimeError):
    """The executor cannot run the jobs as asked (no node fits one task's resources, ...)."""


def make_executor(name: str, *, workers: int = 1, max_retries: int = 2, address: str | None = None,
                  cpus_per_video: float = 1.0, gpus_per_video: float = 0.0) -> Executor:
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, not {max_retries}")
    if name == "local":
        from .local import LocalExecutor
        return LocalExecutor(workers=workers, max_retries=max_retries)
    if name == "ray":
        from .ray_executor import RayExecutor
        return RayExecutor(address=address, cpus_per_video=cpus_per_video,
                           gpus_per_video=gpus_per_video, max_retries=max_retries)
    raise ValueError(f"executor must be one of {EXECUTORS}, not {name!r}")


__all__ = ["EXECUTORS", "Executor", "ExecutorError", "Job", "OnLost", "OnResult", "Work", "make_executor"]
