"""The Ray executor: each job is a Ray task with declared resources, on a local Ray instance
(no address) or an existing cluster (`auto`, or `host:port` / `ray://...`).

Ray re-runs a task whose worker process or node died, up to `max_retries` times (system
failures only: the work function turns Python errors into reject rows itself); after that
`ray.get` raises a RayError and the job is reported lost with Ray's reason. At most a few tasks
per schedulable slot are in flight at once, so a million-video run does not queue a million
tasks. Ray is imported here only, so the rest of the toolkit works without it.

Every node must see the raw folder and the output folder at the same paths (a shared
filesystem): tasks read the source from there and write clips and records there themselves.
"""
from __future__ import annotations

import os
import socket

from . import ExecutorError, Job, OnLost, OnResult, Work

IN_FLIGHT_PER_SLOT = 2


def import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the Ray executor needs Ray: pip install 'emo-toolkit[ray]' "
                          "(or pip install ray)") from exc
    return ray


def _call(work: Work, job: Job) -> dict:
    import ray

    return work(job, {"executor": "ray", "node_id": ray.get_runtime_context().get_node_id(),
                      "host": socket.gethostname(), "pid": os.getpid()})


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_video: float = 1.0,
                 gpus_per_video: float = 0.0, max_retries: int = 2, init_kwargs: dict | None = None):
        if cpus_per_video <= 0 or gpus_per_video < 0:
            raise ValueError("cpus_per_video must be > 0 and gpus_per_video >= 0")
        self.address = address
        self.cpus_per_video = float(cpus_per_video)
        self.gpus_per_video = float(gpus_per_video)
        self.max_retries = int(max_retries)
        self.init_kwargs = init_kwargs or {}
        self.cluster: dict = {}

    def describe(self) -> dict:
        return {"executor": self.name, "address": self.address, "cpus_per_video": self.cpus_per_video,
                "gpus_per_video": self.gpus_per_video, "max_retries": self.max_retries,
                "cluster": self.cluster}

    def _check_feasible(self, ray) -> int:
        """Fail before submitting anything when no node can ever run one task; return how many
        tasks the cluster runs at once."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = [n["Resources"].get("CPU", 0.0) for n in nodes]
        gpus = [n["Resources"].get("GPU", 0.0) for n in nodes]
        self.cluster = {"nodes": len(nodes), "cpus": sum(cpus), "gpus": sum(gpus)}
        fits = [c >= self.cpus_per_video and g >= self.gpus_per_video for c, g in zip(cpus, gpus)]
        if not any(fits):
            raise ExecutorError(f"no Ray node has {self.cpus_per_video:g} CPUs and {self.gpus_per_video:g} GPUs "
                             f"for one video (nodes: CPUs {cpus}, GPUs {gpus})")
        slots = sum(int(c // self.cpus_per_video) if self.gpus_per_video == 0
                    else min(int(c // self.cpus_per_video), int(g // self.gpus_per_video))
                    for c, g, ok in zip(cpus, gpus, fits) if ok)
        return max(1, slots)

    def run(self, work: Work, jobs: list[Job], on_result: OnResult, on_lost: OnLost) -> None:
        if not jobs:
            return
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     **self.init_kwargs)
        try:
            self._run(ray, work, jobs, on_result, on_lost)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, work, jobs, on_result, on_lost) -> None:
        from ray.exceptions import RayError, RayTaskError

        slots = self._check_feasible(ray)
        task = ray.remote(_call).options(num_cpus=self.cpus_per_video, num_gpus=self.gpus_per_video,
                                         max_retries=self.max_retries, retry_exceptions=False)
        work_ref = ray.put(work)
        todo = iter(jobs)
        in_flight: dict = {}

        def submit() -> None:
            while len(in_flight) < IN_FLIGHT_PER_SLOT * slots and (job := next(todo, None)) is not None:
                in_flight[task.remote(work_ref, job)] = job

        submit()
        try:
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    job = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayTaskError as exc:
                        raise exc.as_instanceof_cause() from None   # a bug in the work itself: stop loudly
                    except RayError as exc:                      # worker or node died, out of memory
                        on_lost(job, f"{type(exc).__name__} after {1 + self.max_retries} attempts: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                        continue
                    on_result(job, result)
                submit()
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)
