"""The dataset viewer (`python -m dataprep inspect OUT --html`) as rendered by headless Chromium:
every kept clip present and playable, every reject present, no broken image, the sync backend named."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dataprep.cli import main as cli
from emo.manifest import LABEL_KEYS, save_labels, write_manifest, write_rejects
from emo.media import write_video

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]
FPS, RATE = 25.0, 16000


def _frames(n, seed, size=64):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, size, size, 3))
    return np.clip(base + np.arange(n)[:, None, None, None] * 3, 0, 255).astype(np.uint8)


@pytest.fixture
def dataset(tmp_path):
    """A small dataset folder (3 kept clips, 3 rejects: one with its source readable, one whole
    video whose source is gone, one clip-level) with stats.json as the runner writes it."""
    root, raw = tmp_path / "ds", tmp_path / "raw"
    write_video(raw / "src.mp4", _frames(100, 9), FPS, audio=np.zeros(int(4 * RATE), np.float32))
    rows = []
    for i in range(3):
        cid = f"clip{i}"
        t = 30 + i
        audio = (0.1 * np.sin(np.arange(int(t / FPS * RATE)) * 0.05)).astype(np.float32)
        write_video(root / "clips" / f"{cid}.mp4", _frames(t, i), FPS, audio=audio)
        save_labels(root / "clips" / f"{cid}.npz",
                    {k: np.zeros(tuple(t if d == "T" else d for d in s), np.float32) for k, s in LABEL_KEYS.items()})
        rows.append(dict(clip_id=cid, clip_path=f"clips/{cid}.mp4", labels_path=f"clips/{cid}.npz",
                         source_video="src.mp4", source_start=float(i), source_end=i + t / FPS, fps=FPS, n_frames=t,
                         size=64, split="train", group="g", speaker="spk0", speech_ratio=0.8, sync_offset=i - 1,
                         sync_confidence=0.3, sync_corrected=i == 2, sync_trusted=i != 1,
                         sync_reason="" if i != 1 else "second peak within 0.010 of the best",
                         sync_backend="offline", face_size=40.0, face_frac=0.5, yaw_range=5.0 + i,
                         yaw_abs_max=3.0, mean_speed=0.2, sharpness=100.0,
                         face_box=np.array([0.2, 0.2, 0.8, 0.8], np.float32)))
    write_manifest(pd.DataFrame(rows), root)
    rejects = [dict(source_video="src.mp4", stage="faces", reason="no face", detail="face in 0% of analysed frames",
                    source_start=1.0, source_end=3.0, clip_id="src-x"),
               dict(source_video="gone.mp4", stage="probe", reason="unreadable", detail="moov atom not found",
                    source_start=float("nan"), source_end=float("nan"), clip_id=""),
               dict(source_video="src.mp4", stage="sync", reason="out of sync", detail="offline: offset +10 frames",
                    source_start=2.0, source_end=4.0, clip_id="src-y")]
    write_rejects(pd.DataFrame(rejects), root)
    (root / "stats.json").write_text(json.dumps({"videos": 2, "source_seconds": 4.0, "run": {"raw": str(raw)},
                                                 "sync_backends": {"offline": 1},
                                                 "config": {"sync": {"backend": "auto", "untrusted": "keep"}}}))
    return root, rows, rejects


def test_inspect_html_writes_a_self_contained_page(dataset):
    root, rows, rejects = dataset
    res = CliRunner().invoke(cli, ["inspect", str(root), "--html"])
    assert res.exit_code == 0, res.output
    html = (root / "report.html").read_text()
    assert 'src="clips/clip0.mp4"' in html                      # relative: the folder can move
    assert html.count('class="reject"') == len(rejects)
    assert "offline" in re.search(r'id="sync-backend".*?</p>', html, re.S).group(0)
    assert html.count("data:image/jpeg;base64") == 3 + 2          # 3 strips + 2 readable sources
    assert "source not readable" in html                          # the vanished source says so


def _chromium(args, tmp, timeout=90):
    cmd = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_viewer_in_chromium(dataset, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI: headless Chromium is required for the viewer check (apt-get install chromium)")
        pytest.skip("headless Chromium (/usr/bin/chromium) not installed")
    root, rows, rejects = dataset
    from dataprep.viewer import build_dataset_report
    page = build_dataset_report(root)
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()], tmp_path).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert re.search(r'data-broken-images="(\d+)"', body).group(1) == "0"
    assert int(re.search(r'data-images="(\d+)"', body).group(1)) == 2 + 3 + 2   # 2 charts, 3 strips, 2 thumbnails
    assert re.search(r'data-videos-failed="(\d+)"', body).group(1) == "0"
    assert re.search(r'data-videos-ready="(\d+)"', body).group(1) == str(len(rows))   # every clip decodes
    assert sorted(re.findall(r'data-clip-id="([^"]+)"', dom)) == [r["clip_id"] for r in rows]
    shown = re.findall(r'<tr class="reject" data-stage="([^"]+)" data-reason="([^"]+)"', dom)
    assert sorted(shown) == sorted((r["stage"], r["reason"]) for r in rejects)
    assert dom.count("sync ambiguous") >= 1 and "audio shifted" in dom
