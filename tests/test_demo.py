"""`make demo`'s code path, shortened: synthetic corpus -> dataset -> 3 + 3 training steps (the second
call resumes the first) -> two checkpoints and the baselines scored -> report, checked as a reader
sees it in headless Chromium. Needs MediaPipe's model files (../shared/models/mediapipe)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from browser import run_chromium

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, mediapipe_dir):
    root = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "demo", "--root", str(root), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_demo_builds_every_product(demo_root):
    root, out = demo_root
    assert (root / "manifests/sample/manifest.parquet").is_file()
    assert sorted(p.name for p in (root / "checkpoints/tiny").glob("step-*")) == ["step-000003", "step-000006"]
    results = sorted(p.name for p in (root / "results/sample").glob("*.json"))
    assert results == ["baseline_audio_shifted_+5.json", "baseline_ground_truth.json", "baseline_ground_truth_halves.json",
                       "baseline_reference_repeated.json", "tiny_step-000003.json", "tiny_step-000006.json"]
    steps = sorted(json.loads((root / "results/sample" / r).read_text())["system"]["step"] for r in results[4:])
    assert steps == [3, 6]
    report = root / "reports/sample/index.html"
    assert f"Report: {report}" in out
    timing = json.loads((root / "reports/sample/demo_timing.json").read_text())
    assert timing["total_s"] > 0 and len(timing["steps_s"]) == 6
    # every checkpoint diagnosed, the figures beside it and in the report's sensitivity table
    for ckpt in (root / "checkpoints/tiny").glob("step-*"):
        assert json.loads((ckpt / "diagnose.json").read_text())["schema"] == "emo.diagnose/1"
    sensitivity = (root / "reports/sample/report.md").read_text().split("## What each checkpoint uses")[1]
    assert "step-000003" in sensitivity and "step-000006" in sensitivity


def test_rerun_reuses_what_is_built(demo_root):
    root, _ = demo_root
    manifest = root / "manifests/sample/manifest.parquet"
    before = manifest.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "demo", "--root", str(root), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("reused") == 6
    assert manifest.stat().st_mtime_ns == before


def test_report_shows_checkpoints_baselines_and_plots(demo_root, tmp_path, chromium):
    root, _ = demo_root
    url = (root / "reports/sample/index.html").resolve().as_uri()
    dom = run_chromium(chromium, ["--virtual-time-budget=5000", "--dump-dom", url], tmp_path, timeout=120).stdout
    table = re.search(r'<table id="metrics-table">.*?</table>', dom, re.S).group(0)
    assert re.findall(r'data-system="([^"]+)"', table) == [
        "tiny/step-000003", "tiny/step-000006", "ground_truth", "reference_repeated", "audio_shifted_+5",
        "ground_truth_halves"]
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert int(re.search(r'data-images="(\d+)"', body).group(1)) >= 3        # plots + frame strips
    assert re.search(r'data-broken-images="(\d+)"', body).group(1) == "0"
    assert "tiny EMO model" in re.search(r'id="note">(.*?)</p>', dom, re.S).group(1)
    # the real measures are numbers on the baselines (the ceiling must score as the ceiling)
    ssim_row = re.search(r'data-metric="ssim".*?</tr>', table, re.S).group(0)
    assert re.search(r">1 \[1, 1\]<", ssim_row)
    # what each checkpoint was measured to use, as a section of the report itself
    section = re.search(r'<h2 id="sensitivity">.*?(?=<h2|</body>)', dom, re.S).group(0)
    assert "step-000003" in section and "step-000006" in section
