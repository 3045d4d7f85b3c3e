"""The Ray executor against the local one: the same rows from the synthetic corpus; a killed run
restarted redoes only the unfinished videos; a two-node cluster (ray.cluster_utils.Cluster on
this machine) runs tasks on both nodes; a task whose process is killed is retried, then becomes a
"runner: worker lost" row, and the run completes.

Ray starts small (2 CPUs, an 80 MB object store, no dashboard). Two of the cached corpus's five
videos are used: the executors, not the stages, are under test, and each
video costs seconds of CPU. Without Ray the module skips, except under CI, where it fails.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

try:
    import ray
except ImportError:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip("Ray is not installed (pip install 'emo-toolkit[ray]')", allow_module_level=True)

from dataprep import runner
from dataprep.config import CONFIG_DIR, load_config
from dataprep.executors.ray_executor import RayExecutor
from dataprep.stages.probe import probe
from emo.manifest import read_manifest, read_rejects

pytestmark = pytest.mark.slow

OBJECT_STORE = 80 * 1024 ** 2
SUBSET = ("synth_v1.mp4", "synth_v2.mp4")        # between them: every shot kind but two


@pytest.fixture(scope="module")
def corpus(mediapipe_dir) -> dict[str, Path]:
    from dataprep.synth import cached_corpus

    return {p.name: p for p in cached_corpus(0)}


def _raw(folder: Path, corpus: dict, names) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        os.symlink(corpus[name], folder / name)
    return folder


def _config_file(folder: Path) -> Path:
    """sample.yaml with smaller crops (a cheaper encode: the executors are under test)."""
    data = yaml.safe_load((CONFIG_DIR / "sample.yaml").read_text())
    data["faces"]["crop_size"] = 128
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """The local executor's dataset from SUBSET: what every Ray run must reproduce."""
    root = tmp_path_factory.mktemp("local")
    cfg_path = _config_file(root)
    raw = _raw(root / "raw", corpus, SUBSET)
    runner.run(raw, root / "out", load_config(cfg_path), workers=2, progress=False)
    return root / "out", cfg_path


def _assert_same_dataset(out: Path, ref: Path) -> None:
    pd.testing.assert_frame_equal(read_manifest(out), read_manifest(ref))
    pd.testing.assert_frame_equal(read_rejects(out), read_rejects(ref))
    for row in read_manifest(ref).itertuples():     # the same clips, byte for byte
        assert (out / row.clip_path).read_bytes() == (ref / row.clip_path).read_bytes()


def _records(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["source_video"]: json.loads(p.read_text())
            for p in (out / ".work").glob("*.json")}


# Steps for the retry test, run inside Ray workers: pickled by value, since workers cannot
# import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _die(record, cfg):
    """Kill the worker process on a video's first attempt (`always*`: on every attempt)."""
    attempts = Path(record.out_dir).parent / "attempts"
    attempts.mkdir(exist_ok=True)
    stem = record.source_video.rsplit(".", 1)[0]
    n = len(list(attempts.glob(f"{stem}.*")))
    (attempts / f"{stem}.{n}").touch()
    if stem == "always" or (stem == "once" and n == 0):
        os._exit(1)
    return record


class TestOneNode:
    @pytest.fixture(scope="class")
    def address(self):
        ray.init(num_cpus=2, object_store_memory=OBJECT_STORE, include_dashboard=False,
                 log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()

    def test_same_rows_as_the_local_executor(self, address, reference, corpus, tmp_path):
        ref, cfg_path = reference
        raw = _raw(tmp_path / "raw", corpus, SUBSET)
        stats = runner.run(raw, tmp_path / "out", load_config(cfg_path), progress=False,
                           executor=RayExecutor())
        _assert_same_dataset(tmp_path / "out", ref)
        node = ray.get_runtime_context().get_node_id()
        assert stats["run"]["executor"]["executor"] == "ray"
        assert stats["run"]["videos_by_node_this_run"] == {node: len(SUBSET)}
        assert {r["worker"]["executor"] for r in _records(tmp_path / "out").values()} == {"ray"}

    def test_killed_task_is_retried_then_reported_lost(self, address, corpus, tmp_path):
        raw = tmp_path / "raw"
        raw.mkdir()
        for name in ("ok", "once", "always"):
            os.symlink(corpus[SUBSET[0]], raw / f"{name}.mp4")
        steps = [("probe", probe), ("die", _die)]
        stats = runner.run(raw, tmp_path / "out", load_config(CONFIG_DIR / "sample.yaml"), progress=False,
                           steps=steps, executor=RayExecutor(max_retries=1))
        attempts = sorted(p.name for p in (tmp_path / "attempts").iterdir())
        assert attempts == ["always.0", "always.1", "ok.0", "once.0", "once.1"]   # 1 + max_retries
        rejects = read_rejects(tmp_path / "out")
        assert len(rejects) == 1
        lost = rejects.iloc[0]
        assert (lost.source_video, lost.stage, lost.reason) == ("always.mp4", "runner", "worker lost")
        assert "after 2 attempts" in lost.detail
        assert stats["run"]["videos_lost_this_run"] == 1 and stats["videos"] == 3

    def test_killed_run_resumes_without_redoing_finished_videos(self, address, reference, corpus, tmp_path):
        _, cfg_path = reference
        names = SUBSET
        raw, out = _raw(tmp_path / "raw", corpus, names), tmp_path / "out"
        # a driver in its own process, on this cluster, killed (SIGKILL) once a video is done;
        # 2 CPUs per video on this 2-CPU node: one video at a time, so the other is unfinished
        cmd = [sys.executable, "-m", "dataprep", "run", "--raw", str(raw), "--out", str(out), "--quiet",
               "--config", str(cfg_path), "--executor", "ray", "--address", address,
               "--cpus-per-video", "2"]
        with open(tmp_path / "driver.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.time() + 300
            while not list((out / ".work").glob("*.json")) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(3)          # Ray cancels a dead driver's tasks; give it the time to
        done = {name: (out / ".work" / f"{r['key']}.json").stat().st_mtime_ns
                for name, r in _records(out).items()}
        assert len(done) == 1
        assert not (out / "manifest.parquet").exists()

        stats = runner.run(raw, out, load_config(cfg_path), progress=False, executor=RayExecutor())
        records = _records(out)
        redone = {name for name, r in records.items()
                  if (out / ".work" / f"{r['key']}.json").stat().st_mtime_ns != done.get(name)}
        assert redone == set(names) - set(done)
        assert stats["run"]["videos_processed_this_run"] == len(names) - len(done)
        assert set(read_manifest(out).source_video) == set(names)


class TestTwoNodes:
    @pytest.fixture(scope="class")
    def cluster(self):
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
        cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster
        ray.shutdown()
        cluster.shutdown()

    def test_tasks_run_on_both_nodes_with_the_same_rows(self, cluster, reference, corpus, tmp_path):
        ref, cfg_path = reference
        raw = _raw(tmp_path / "raw", corpus, SUBSET)
        stats = runner.run(raw, tmp_path / "out", load_config(cfg_path), progress=False,
                           executor=RayExecutor())
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        by_node = stats["run"]["videos_by_node_this_run"]
        print("videos by node:", by_node)
        assert len(nodes) == 2 and set(by_node) == nodes and sum(by_node.values()) == len(SUBSET)
        assert {r["worker"]["node_id"] for r in _records(tmp_path / "out").values()} == nodes
        assert stats["run"]["executor"]["cluster"] == {"nodes": 2, "cpus": 2.0, "gpus": 0.0}
        _assert_same_dataset(tmp_path / "out", ref)


def _hold(record, cfg):
    """Say which node runs this video, then wait (at most 60 s) for the test's go-ahead."""
    import ray as ray_in_worker

    marks = Path(record.out_dir).parent / "running"
    marks.mkdir(exist_ok=True)
    node = ray_in_worker.get_runtime_context().get_node_id()
    (marks / f"{record.source_video}.{node}").touch()
    deadline = time.time() + 60
    while not (marks.parent / "go").exists() and time.time() < deadline:
        time.sleep(0.05)
    return record


class TestNodeLoss:
    """A worker node removed (its raylet and workers killed) while it runs a video: the run
    completes, and every video is either done or a "runner: worker lost" row (no retries here,
    so the lost one cannot be rescued by the surviving node)."""

    @pytest.fixture(scope="class")
    def cluster(self):
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False,
            # notice a dead node in about a second, not Ray's default ~30 s
            "_system_config": {"health_check_period_ms": 200, "health_check_failure_threshold": 3,
                               "health_check_initial_delay_ms": 0}})
        worker = cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster, worker
        ray.shutdown()
        cluster.shutdown()

    def test_run_completes_when_a_node_is_lost(self, cluster, corpus, tmp_path):
        import threading

        cluster, worker = cluster
        raw = tmp_path / "raw"
        raw.mkdir()
        names = [f"v{i}.mp4" for i in range(3)]
        for name in names:
            os.symlink(corpus[SUBSET[0]], raw / name)
        steps = [("probe", probe), ("hold", _hold)]
        outcome = {}

        def drive():
            outcome["stats"] = runner.run(raw, tmp_path / "out", load_config(CONFIG_DIR / "sample.yaml"),
                                          progress=False, steps=steps, executor=RayExecutor(max_retries=0))

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        marks = tmp_path / "running"
        deadline = time.time() + 60
        on_worker = []
        while not on_worker and time.time() < deadline:
            on_worker = [p.name for p in marks.glob("*") if p.name.endswith(worker.node_id)] if marks.exists() else []
            time.sleep(0.05)
        assert on_worker, "no video started on the worker node"
        cluster.remove_node(worker, allow_graceful=False)
        (tmp_path / "go").touch()
        driver.join(timeout=90)
        assert not driver.is_alive(), "the run did not complete after the node was lost"

        stats = outcome["stats"]
        rejects = read_rejects(tmp_path / "out")
        lost = set(rejects[(rejects.stage == "runner") & (rejects.reason == "worker lost")].source_video)
        done = {name for name, r in _records(tmp_path / "out").items() if name not in lost}
        print("lost:", sorted(lost), "done:", sorted(done), "on the removed node:", on_worker)
        assert on_worker[0].rsplit(".", 1)[0] in lost
        assert lost | done == set(names) and not lost & done
        assert stats["videos"] == len(names) and stats["run"]["videos_lost_this_run"] == len(lost)
