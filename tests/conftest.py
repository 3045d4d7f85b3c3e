"""Shared test set-up: offline hubs, one torch thread, the ../shared material and headless Chromium.

Outside CI a test whose material is missing (../shared, MediaPipe's model files, Chromium) skips
with the reason. Under CI=true nothing CI is given may be skipped: every skip becomes a failure
(see `pytest_runtest_makereport`), so a broken install cannot pass as green.
"""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMO_SHARED_DIR", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_MEDIAPIPE_DIR = SHARED / "models" / "mediapipe"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

if SHARED_MEDIAPIPE_DIR.is_dir():
    os.environ.setdefault("EMO_MEDIAPIPE_DIR", str(SHARED_MEDIAPIPE_DIR))

try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test media not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mediapipe_dir() -> Path:
    """The folder the code itself resolves MediaPipe's model files from ($EMO_MEDIAPIPE_DIR,
    models/mediapipe, ~/.cache/emo/mediapipe), not a path of the tests' own."""
    from emo.media.face import MEDIAPIPE_MODELS, ModelFileMissing, resolve_mediapipe_model
    try:
        paths = {resolve_mediapipe_model(name).parent for name in MEDIAPIPE_MODELS}
    except ModelFileMissing as exc:
        pytest.skip(str(exc))
    if len(paths) != 1:
        pytest.skip(f"MediaPipe model files are spread over several folders: {sorted(map(str, paths))}")
    return paths.pop()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of headless Chromium (the report and viewer tests open pages in it)."""
    from browser import find_chromium
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where everything CI is given must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true, where everything CI is given must run: {reason}"
