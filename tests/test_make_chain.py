"""The Make targets build what they need: from an empty tree `make report` runs the whole chain in
order; existing products are reused; a missing input of the user's own is a clear error."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


@pytest.fixture
def tree(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "constraints", tmp_path / "constraints")
    return tmp_path


def _make(tree, *args, dry=True):
    cmd = ["make", "--no-print-directory", *(["-n"] if dry else []), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=60, env=env)


def _project_commands(out: str) -> list[str]:
    """The project's own commands of a dry run (venv set-up lines left out)."""
    return [" ".join(line.split()[1:4]) for line in out.splitlines() if line.startswith(".venv/bin/python -m ")
            and " pip " not in line]


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def test_report_from_an_empty_tree_runs_the_whole_chain_in_order(tree):
    proc = _make(tree, "report")
    assert proc.returncode == 0, proc.stderr
    assert _project_commands(proc.stdout) == [
        "-m dataprep synth", "-m dataprep run", "-m emo train", "-m eval score", "-m eval report"]
    assert "pip install" in proc.stdout               # the venv is set up first


def test_existing_products_are_reused(tree):
    _touch(tree / ".venv/.installed")
    _touch(tree / "manifests/sample/manifest.parquet")
    assert _project_commands(_make(tree, "eval").stdout) == ["-m emo train", "-m eval score"]
    _touch(tree / "checkpoints/tiny/latest")
    assert _project_commands(_make(tree, "eval").stdout) == ["-m eval score"]
    _touch(tree / "results/sample/baseline_ground_truth.json")
    assert _project_commands(_make(tree, "report").stdout) == ["-m eval report"]
    # `make train` always runs: `emo train` continues an unfinished run or says it is complete
    assert _project_commands(_make(tree, "train").stdout) == ["-m emo train"]


def test_a_missing_input_of_the_users_own_is_a_clear_error(tree):
    _touch(tree / ".venv/.installed")
    proc = _make(tree, "train", "DATASET=my_dataset", dry=False)
    assert proc.returncode != 0
    assert "no manifest at my_dataset/manifest.parquet" in proc.stderr
    assert "make dataset RAW=<your videos> OUT=my_dataset" in proc.stderr
    assert not (tree / "data").exists()              # the sample is not built in its place
    proc = _make(tree, "report", "RESULTS=my_results", dry=False)
    assert proc.returncode != 0 and "no results in my_results" in proc.stderr
