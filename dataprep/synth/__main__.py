"""Trials: python -m dataprep.synth [OUT] [SEED] renders the corpus and prints time and size.

(The user-facing command is the dataprep CLI's; this is for working on the corpus itself.)
"""
import sys
import time
from pathlib import Path

from .corpus import generate_corpus

t = time.time()
out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/sample/raw")
paths = generate_corpus(out, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
print(f"{len(paths)} videos in {out} ({time.time() - t:.1f} s, {size / 1e6:.2f} MB)")
