"""Shared test set-up: offline hubs, one torch thread, and the ../shared material (skipped if absent)."""
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
MEDIAPIPE_DIR = SHARED / "models" / "mediapipe"

if MEDIAPIPE_DIR.is_dir():
    os.environ.setdefault("EMO_MEDIAPIPE_DIR", str(MEDIAPIPE_DIR))

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
    if not MEDIAPIPE_DIR.is_dir():
        pytest.skip(f"MediaPipe model files not found at {MEDIAPIPE_DIR}")
    return MEDIAPIPE_DIR
