"""Benchmarks: `python -m benchmarks.run [--only NAME]` runs every `benchmarks/<NAME>_bench.py`
module's `run(out_dir) -> dict` and writes the dict to `<out_dir>/<NAME>.json`."""
