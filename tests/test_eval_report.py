"""The comparison report: built from results JSONs of two systems and the baselines, checked as
HTML/Markdown and as a reader sees it in headless Chromium (skipped when Chromium is absent)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from browser import run_chromium
from eval_harness_helpers import make_dataset, toy_metrics, write_generated
from eval.cli import main as cli
from eval.harness import ScoreConfig, directory_system, load_heldout, score
from eval.report import ReportOptions, build_report
from eval.report.data import build_report_data
from eval.results import ResultsError
from eval.scoring import BootstrapConfig



@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    ds = make_dataset(tmp / "ds", n_test=3, n_frames=26)
    clips = load_heldout(ds)
    ids = [c.clip_id for c in clips]
    good = write_generated(tmp / "good", ds, ids, fps=25.0, scale=1.0, extra_s=0.0, noise=4.0, seed=1)
    bad = write_generated(tmp / "bad", ds, ids, fps=30.0, scale=2.0, extra_s=0.2, noise=30.0, seed=2)
    cfg = ScoreConfig(bootstrap=BootstrapConfig(n_bootstrap=100))
    systems = [directory_system(good, clips, "good"), directory_system(bad, clips, "bad")]
    written = score(ds, systems, tmp / "results", metrics=toy_metrics(), cfg=cfg, clips=clips)
    return written, tmp


@pytest.fixture(scope="module")
def report(results):
    written, tmp = results
    html, md = build_report(written, tmp / "report", ReportOptions(title="Toy comparison", strip_clips=2))
    return html, md


def test_table_marks_best_and_directions(results):
    data = build_report_data(results[0])
    assert [s.name for s in data.evaluated] == ["good", "bad"]
    assert [s.name for s in data.baselines] == ["ground_truth", "reference_repeated", "audio_shifted_+5",
                                                "ground_truth_halves"]
    assert data.cells[("good", "pixel_l1")].best and not data.cells[("bad", "pixel_l1")].best
    assert not data.cells[("ground_truth", "pixel_l1")].best          # baselines are never ranked
    assert data.cells[("good", "needs_weights")].text == "unavailable"
    (why, systems), = data.unavailable["needs_weights"].items()
    assert "python -m eval weights fetch" in why and len(systems) == 5
    from eval.report.data import grouped_unavailable
    assert ("needs_weights" in grouped_unavailable(data)[0][1]) and grouped_unavailable(data)[0][2] == "all systems"
    assert any("bad: the alignment rule changed 3 of 3" in w for w in data.warnings)
    assert data.cells[("good", "flaky")].text.endswith("(partial: 2/3 clips)")          # clip01 failed
    assert not data.cells[("good", "flaky")].best and not data.cells[("bad", "flaky")].best   # partial: no star
    from eval.report.data import metric_errors
    system, metric, n_failed, first = metric_errors(data)[0]
    assert (system, metric, n_failed) == ("good", "flaky", 1)
    assert first.startswith("clip01: RuntimeError: no face found (eval_harness_helpers.py:")


def test_html_and_markdown_contents(report):
    html_path, md_path = report
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") >= 2 and "data:image/jpeg;base64," in html
    assert "data:video/mp4;base64," in html and 'src="http' not in html     # self-contained
    for name in ("good", "bad", "ground_truth", "reference_repeated", "audio_shifted_+5", "<b>pixel_l1</b> ↓", "<b>toy_conf</b> ↑"):
        assert name in html
    md = md_path.read_text()
    assert "| metric | good | bad | *ground_truth* (baseline)" in md and "★" in md
    assert re.search(r"^\| pixel_l1 ↓ \| \*\*[0-9.]+ \[.*\]\*\* ★ \|", md, re.M)
    links = re.findall(r"\]\((assets/[^)]+)\)", md)
    assert links and all((md_path.parent / link).is_file() for link in links)
    assert any(link.endswith(".mp4") for link in links)


def test_step_plot_only_for_runs_of_one_training(results, tmp_path):
    written, _ = results
    docs = []
    for i, step in enumerate((100, 300)):
        d = json.loads(Path(written[i]).read_text())
        d["system"].update(kind="checkpoint", step=step, name=f"tiny/step-{step:06d}",
                           path=f"/runs/tiny/step-{step:06d}")
        p = tmp_path / f"s{step}.json"
        p.write_text(json.dumps(d))
        docs.append(p)
    data = build_report_data(docs + list(written[2:]))
    assert [s.step for s in data.stepped] == [100, 300] and list(data.trainings) == ["tiny"]
    assert not build_report_data(written).stepped
    html, _ = build_report(docs, tmp_path / "r", ReportOptions(videos=False, strip_clips=0))
    assert "vs_step plot" in html.read_text()


def test_bad_results_file_is_refused(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema": "emo-eval-results/0"}))
    with pytest.raises(ResultsError, match="x.json"):
        build_report([bad], tmp_path / "out")
    res = CliRunner().invoke(cli, ["report", str(bad), "--out", str(tmp_path / "out")])
    assert res.exit_code != 0 and "missing keys" in res.output
    assert not (tmp_path / "out" / "index.html").exists()


def test_report_as_rendered_in_chromium(report, tmp_path, chromium):
    html_path, _ = report
    url = html_path.resolve().as_uri()
    dom = run_chromium(chromium, ["--virtual-time-budget=5000", "--dump-dom", url], tmp_path).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    n_images = int(re.search(r'data-images="(\d+)"', body).group(1))
    broken = int(re.search(r'data-broken-images="(\d+)"', body).group(1))
    # 2 plots (intervals, per clip) + 2 clips x (GT, good, bad, reference_repeated) strips
    assert n_images >= 2 + 2 * 4 and broken == 0
    table = re.search(r'<table id="metrics-table">.*?</table>', dom, re.S).group(0)
    columns = re.findall(r'data-system="([^"]+)"', table)
    assert columns == ["good", "bad", "ground_truth", "reference_repeated", "audio_shifted_+5", "ground_truth_halves"]
    metric_rows = re.findall(r'data-metric="([^"]+)"', table)
    assert metric_rows[:3] == ["pixel_l1", "toy_offset", "toy_conf"]
    # unavailable for every system: not a row of red cells, one grouped line instead
    assert "needs_weights" not in metric_rows
    unavailable = re.search(r'<ul id="unavailable">.*?</ul>', dom, re.S).group(0)
    assert unavailable.count("<li>") == 1 and "needs_weights" in unavailable and "all systems" in unavailable
    pixel_row = re.search(r'data-metric="pixel_l1".*?</tr>', table, re.S).group(0)
    assert pixel_row.count("★") == 1 and re.search(r'class="\s*best[^"]*"[^>]*>[0-9.]+ \[', pixel_row)
    flaky_row = re.search(r'data-metric="flaky".*?</tr>', table, re.S).group(0)
    assert "partial: 2/3 clips" in flaky_row and "★" not in flaky_row        # partial: never starred
    # the calibration baseline has its set-level number, "n/a" for per-clip metrics
    fd_row = re.search(r'data-metric="mean_colour_fd".*?</tr>', table, re.S).group(0)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", fd_row)[-1][0].isdigit() and "n/a" in pixel_row
    # comparisons: good is better than bad on pixel_l1 (▲ in good's row, bad's column), shown as a matrix
    matrix = re.search(r'<table class="matrix" data-metric="pixel_l1">.*?</table>', dom, re.S).group(0)
    heads = re.findall(r"<th>([^<]+)</th>", matrix)
    good_row = re.findall(r"<td[^>]*>([^<]*)</td>", re.search(r"<tr><td class=\"name\">good</td>.*?</tr>", matrix, re.S).group(0))[1:]
    assert good_row[heads.index("bad")] == "▲" and good_row[heads.index("ground_truth")] == "▼"
    protocols = re.search(r'<table id="protocols">.*?</table>', dom, re.S)
    assert protocols is not None
    assert dom.count("<video") == 5          # GT + good + bad + reference_repeated + audio_shifted
    assert re.search(r'data-videos-failed="(\d+)"', body).group(1) == "0"
    assert re.search(r'data-videos-ready="(\d+)"', body).group(1) == "5"   # every video decodes
    shot = tmp_path / "shot.png"
    run_chromium(chromium, [f"--screenshot={shot}", "--window-size=1200,1600", "--virtual-time-budget=3000", url], tmp_path)
    from PIL import Image
    img = np.asarray(Image.open(shot).convert("L"), np.float32)
    # a rendered page with a table and plots: not blank, with dark text/lines on a light page
    assert img.shape[0] >= 1000 and img.std() > 20 and (img < 100).mean() > 0.005


def test_baselines_only_report_ranks_nothing(results, tmp_path):
    written, _ = results
    data = build_report_data([p for p in written if p.stem.startswith("baseline_")])
    assert not any(c.best or c.tied for c in data.cells.values())


def test_baseline_given_twice_is_shown_once_and_duplicate_systems_refused(results, tmp_path):
    written, _ = results
    data = build_report_data(list(written) + [p for p in written if p.stem == "baseline_ground_truth"])
    assert [s.name for s in data.systems].count("ground_truth") == 1
    assert any("given more than once" in w for w in data.warnings)
    res = CliRunner().invoke(cli, ["report", str(written[0]), str(written[0]), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "distinct --name" in res.output


def test_value_outside_its_interval_still_plots(results, tmp_path):
    """Set-level bootstraps can put the full-set value outside its interval; the report must cope."""
    written, _ = results
    d = json.loads(Path(written[0]).read_text())
    m = d["metrics"]["mean_colour_fd"]
    m["ci_low"], m["ci_high"] = m["value"] + 1.0, m["value"] + 2.0
    p = tmp_path / "outside.json"
    p.write_text(json.dumps(d))
    html, _ = build_report([p], tmp_path / "r", ReportOptions(videos=False, strip_clips=0))
    assert "intervals plot" in html.read_text()
