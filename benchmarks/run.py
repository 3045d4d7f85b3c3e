"""Discover and run the benchmark modules (`benchmarks/*_bench.py`, each with `run(out_dir) -> dict`)."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from emo.fileio import atomic_write

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem[: -len("_bench")] for p in HERE.glob("*_bench.py"))


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1, default=str))


def run_one(name: str, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{name}_bench")
        result = module.run(out_dir)
    except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
        result = {"status": "failed", "traceback": traceback.format_exc()}
    result.setdefault("status", "ok")
    result["bench_seconds"] = round(time.perf_counter() - t0, 2)
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "cpus": os.cpu_count()}
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(out_dir / f"{name}.json", result)
    return result


def main(argv=None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=names, help="run only these (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.only or names:
        result = run_one(name, args.out)
        summary = result.get("summary", result["status"])
        print(f"{name}: {summary}  -> {args.out / (name + '.json')}")
        failed += result["status"] == "failed"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
