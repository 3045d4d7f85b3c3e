"""Headless Chromium for the tests that check a page as a reader sees it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def run_chromium(chromium: str, args: list[str], tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [chromium, *CHROME_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
