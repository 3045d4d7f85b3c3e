"""Peak resident memory of this process.

Linux's ru_maxrss survives exec: a child started by subprocess reports at least the RSS its parent
had when it forked (a benchmark parent holding a 300-s test signal made every child "peak" at the
parent's 631 MB). VmHWM belongs to the process's own address space, which exec replaces, so it is
the child's own peak; other systems fall back to ru_maxrss.
"""
from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024          # kB
    except OSError:
        pass
    per_mb = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mb
