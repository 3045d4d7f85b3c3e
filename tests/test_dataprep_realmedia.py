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
from emo.manifest import load_labels, read_manifest

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


def test_talking_shots_kept(multishot):
    raw, out = multishot
    table = shot_decisions(out, raw).set_index("shot")
    assert (table.loc[["s0", "s2", "s4", "s5", "s6"], "got"] == "keep").all()
    # s7's audio is 10 frames late (beyond max_correctable 8): rejected "out of sync".
    assert (table.loc["s7", "got"], table.loc["s7", "stage"], table.loc["s7", "reason"]) == \
        ("reject", "sync", "out of sync")
    # every decision matches the ground truth
    assert (table.got == table.expected).all(), table.to_string()


def _remeasure(out, row):
    """Sync of the exported clip itself: the mp4's audio against its labels' landmarks."""
    from emo.media.audio import load_audio
    from emo.media.lipsync import measure_offset, mouth_features
    lm = load_labels(out, row)["landmarks"] * row["size"]
    return measure_offset(mouth_features(lm), load_audio(out / row.clip_path), 16000, row.fps)


def test_no_in_sync_shot_is_shifted(multishot):
    """The exported files: no clip of an in-sync shot had its audio shifted, and each exported
    mp4 measures what the manifest says (its audio is the source's, on the video's clock)."""
    _, out = multishot
    manifest = read_manifest(out)
    print(manifest[["clip_id", "source_start", "sync_offset", "sync_confidence", "sync_trusted",
                    "sync_reason", "sync_backend"]].to_string())
    assert not manifest.sync_corrected.any()
    for _, row in manifest.iterrows():
        r = _remeasure(out, row)
        print(f"{row.clip_id}: exported {r.offset:+d}, manifest {row.sync_offset:+d}")
        if row.sync_trusted:
            assert abs(r.offset - row.sync_offset) <= 1


@pytest.fixture(scope="module")
def multishot_corrected(multishot, tmp_path_factory):
    """The same video with max_correctable 10: s7 (+10 frames) is corrected instead of rejected."""
    from dataclasses import replace

    from dataprep.runner import run
    raw, _ = multishot
    cfg = load_config()
    cfg = replace(cfg, sync=replace(cfg.sync, max_correctable=10))
    out = tmp_path_factory.mktemp("multishot_corrected")
    run(raw, out, cfg, workers=1, progress=False)
    return raw, out


def test_shifted_shot_once_corrected_measures_in_sync(multishot_corrected):
    raw, out = multishot_corrected
    manifest = read_manifest(out)
    s7 = manifest[manifest.source_start >= 42.0]
    assert len(s7) == 1 and s7.sync_corrected.all() and s7.sync_trusted.all()
    row = s7.iloc[0]
    r = _remeasure(out, row)
    print(f"s7: measured {row.sync_offset:+d} in the source, exported clip {r.offset:+d}")
    assert abs(row.sync_offset - 10) <= 1 and abs(r.offset) <= 1
    assert manifest.sync_corrected.sum() == 1           # nothing else shifted


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
