"""The pipeline on the real multi-shot video (../shared/data/raw) against its ground truth:
cuts within 2 frames, the faceless and small-face shots rejected for those reasons, the talking
shots tracked and cropped."""
import json
import os

import av
import numpy as np
import pytest

from dataprep.config import load_config
from dataprep.groundtruth import cut_precision_recall, shot_decisions
from emo.manifest import load_labels, read_manifest, read_rejects

pytestmark = [pytest.mark.slow, pytest.mark.realmedia]

TALK_KINDS = {"talk", "talk_two_speakers_A", "talk_two_speakers_B", "talk_audio_shifted"}


@pytest.fixture(scope="module")
def multishot(shared_data, mediapipe_dir, tmp_path_factory):
    from dataprep.runner import run

    raw = tmp_path_factory.mktemp("multishot_raw")
    os.symlink(shared_data / "raw" / "raw_multishot_shared.mp4", raw / "raw_multishot_shared.mp4")
    os.symlink(shared_data / "raw" / "raw_multishot_shared.groundtruth.json",
               raw / "raw_multishot_shared.groundtruth.json")
    out = tmp_path_factory.mktemp("multishot_out")
    run(raw, out, load_config(), workers=1, progress=False)
    return raw, out


def test_cuts_within_two_frames(multishot):
    raw, out = multishot
    gt = json.loads((raw / "raw_multishot_shared.groundtruth.json").read_text())
    work = json.loads(next((out / ".work").glob("*.json")).read_text())
    cuts = work["stats"]["notes"]["cuts"]
    precision, recall = cut_precision_recall(cuts, gt["cut_frames"], tolerance=2)
    print(f"cuts {cuts} vs {gt['cut_frames']}: precision {precision:.2f} recall {recall:.2f}")
    assert precision == 1.0 and recall == 1.0


def test_shot_decisions(multishot):
    raw, out = multishot
    table = shot_decisions(out, raw).set_index("shot")
    print(table.drop(columns=["video"]).to_string())
    assert (table.loc["s1", "stage"], table.loc["s1", "reason"]) == ("faces", "no face")
    assert (table.loc["s3", "stage"], table.loc["s3", "reason"]) == ("faces", "face too small")
    # every talking shot passes probing, cutting and face tracking (one face, found all along)
    talk = table[table.kind.isin(TALK_KINDS)]
    assert len(talk) == 6
    assert not set(talk.stage) & {"probe", "cut", "faces", "runner"}, talk.to_string()


def test_every_decision_matches_the_truth_or_says_why(multishot):
    """Each shot's decision is its ground truth's, or (a talking shot without a speaking-face
    measurement it can trust) a "sync ambiguous" reject, with the measurement in the rejects
    table; s7 (audio 10 frames late) is never kept with its audio as it is."""
    raw, out = multishot
    table = shot_decisions(out, raw).set_index("shot")
    rejects = read_rejects(out)
    for shot, row in table.iterrows():
        if row.got == row.expected:
            continue
        assert (row.expected, row.got, row.stage, row.reason) == ("keep", "reject", "sync", "sync ambiguous"), \
            table.to_string()
        detail = rejects[(rejects.reason == "sync ambiguous")].detail
        assert detail.str.contains("offline: offset").all() and len(detail)
    assert table.loc["s7", "got"] == "reject" and table.loc["s7", "stage"] == "sync"
    assert table.loc["s0", "got"] == "keep"


def _remeasure(out, row):
    """Sync of the exported clip itself: the mp4's audio against its labels' landmarks."""
    from emo.media.audio import load_audio
    from emo.media.lipsync import measure_offset, mouth_features
    lm = load_labels(out, row)["landmarks"] * row["size"]
    return measure_offset(mouth_features(lm), load_audio(out / row.clip_path), 16000, row.fps)


@pytest.fixture(scope="module")
def multishot_lenient(multishot, tmp_path_factory):
    """The same video with ambiguous clips kept (flagged) and offsets up to 10 frames correctable:
    the most the sync stage could ever do to the exported files."""
    from dataclasses import replace

    from dataprep.runner import run
    raw, _ = multishot
    cfg = load_config()
    cfg = replace(cfg, sync=replace(cfg.sync, max_correctable=10, untrusted="keep"))
    out = tmp_path_factory.mktemp("multishot_lenient")
    run(raw, out, cfg, workers=1, progress=False)
    return raw, out


@pytest.mark.parametrize("which", ["default", "lenient"])
def test_exported_clips_no_in_sync_shot_shifted(which, multishot, multishot_lenient):
    """On the exported files (the mp4 the trainer reads): no clip of an in-sync shot had its audio
    shifted; each trusted clip re-measures as the manifest says; a corrected clip (only ever s7)
    re-measures within one frame of zero."""
    raw, out = multishot if which == "default" else multishot_lenient
    gt = json.loads((raw / "raw_multishot_shared.groundtruth.json").read_text())
    manifest = read_manifest(out)
    print(manifest[["clip_id", "source_start", "sync_offset", "sync_confidence", "sync_corrected",
                    "sync_trusted", "sync_reason", "sync_backend"]].to_string())
    assert len(manifest) >= 1 and (manifest.sync_backend == "offline").all()
    if which == "lenient":
        assert len(manifest) >= 5                     # every talking shot with a big face is there
    for _, row in manifest.iterrows():
        shot = next(s for s in gt["shots"] if s["start_s"] - 0.1 <= row.source_start < s["end_s"])
        r = _remeasure(out, row)
        print(f"{row.clip_id} ({shot['id']}, truth {shot['expected_audio_offset_frames']:+d}): exported "
              f"{r.offset:+d}, manifest {row.sync_offset:+d}, corrected {row.sync_corrected}, trusted {row.sync_trusted}")
        if shot["expected_audio_offset_frames"] == 0:
            assert not row.sync_corrected
        if row.sync_corrected:
            assert row.sync_trusted and abs(r.offset) <= 1
        elif row.sync_trusted:
            assert abs(r.offset - row.sync_offset) <= 1


def test_kept_clips_are_square_crops_with_audio_and_labels(multishot):
    _, out = multishot
    manifest = read_manifest(out)
    assert len(manifest) >= 1
    for _, row in manifest.iterrows():
        with av.open(str(out / row.clip_path)) as c:
            v = c.streams.video[0]
            assert (v.codec_context.width, v.codec_context.height) == (512, 512)
            a = c.streams.audio[0]
            assert a.rate == 16000 and a.channels == 1
        labels = load_labels(out, row)
        boxes = labels["boxes"]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        # the crop follows the face: its box stays near the centre and about 1/1.8 of the side
        assert np.abs(centre - 0.5).max() < 0.15
        assert 0.4 < np.median(boxes[:, 3] - boxes[:, 1]) < 0.65
        assert (labels["face_box"] >= 0).all() and (labels["face_box"] <= 1).all()
        assert row.face_frac > 0.3 and row.sharpness > 0


def test_viewer_on_the_real_dataset(multishot, tmp_path):
    """The viewer page of the real run: every kept clip and every reject present, the sync
    backend named as stats.json records it; rendered in Chromium when it is installed."""
    import re
    import shutil
    import subprocess

    from dataprep.viewer import build_dataset_report
    _, out = multishot
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sync_backends"] == {"offline": 1}
    page = build_dataset_report(out, tmp_path / "view" / "report.html")
    html = page.read_text()
    manifest, rejects = read_manifest(out), read_rejects(out)
    assert sorted(re.findall(r'data-clip-id="([^"]+)"', html)) == sorted(manifest.clip_id)
    assert html.count('<tr class="reject"') == len(rejects)
    assert "<b>offline</b>" in html
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI: headless Chromium is required")
        return
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000",
                          "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert re.search(r'data-broken-images="(\d+)"', body).group(1) == "0"
    assert re.search(r'data-videos-ready="(\d+)"', body).group(1) == str(len(manifest))
    # every reject has a thumbnail from the source (the raw file is readable)
    assert dom.count('alt="source frame"') == len(rejects)
