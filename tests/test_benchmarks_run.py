"""benchmarks.run: discovery of *_bench.py modules and one JSON per benchmark, failures included."""
import json
import sys
import types

from benchmarks import run as bench_run


def test_discovers_bench_modules():
    assert "dataprep" in bench_run.discover()


def test_results_and_failures_are_written(tmp_path, monkeypatch):
    ok = types.ModuleType("benchmarks.fakeok_bench")
    ok.run = lambda out_dir: {"summary": "fine", "value": 3}
    bad = types.ModuleType("benchmarks.fakebad_bench")

    def explode(out_dir):
        raise ValueError("no luck")

    bad.run = explode
    monkeypatch.setitem(sys.modules, "benchmarks.fakeok_bench", ok)
    monkeypatch.setitem(sys.modules, "benchmarks.fakebad_bench", bad)
    assert bench_run.run_one("fakeok", tmp_path)["status"] == "ok"
    assert json.loads((tmp_path / "fakeok.json").read_text())["value"] == 3
    assert bench_run.run_one("fakebad", tmp_path)["status"] == "failed"
    failed = json.loads((tmp_path / "fakebad.json").read_text())
    assert failed["status"] == "failed" and "ValueError: no luck" in failed["traceback"]
