"""The whole pipeline against the synthetic corpus's exact ground truth: cuts, keep/reject per
shot, face boxes and head pose of the kept clips, sync offsets."""
import json

import numpy as np
import pytest

from dataprep.config import CONFIG_DIR, load_config
from dataprep.groundtruth import cut_precision_recall, shot_decisions
from emo.manifest import load_labels, read_manifest, read_rejects

pytestmark = pytest.mark.slow

# Two of the corpus's videos cover every shot kind but "silent" and "noface_music": talk,
# small_face, audio_shifted (+8 frames), two_faces, noface_speech.
VIDEOS = ("synth_v1", "synth_v2")


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory, mediapipe_dir):
    from dataprep.runner import run
    from dataprep.synth import generate_corpus
    from dataprep.synth import load_config as load_corpus_config

    corpus = load_corpus_config()
    corpus["videos"] = [v for v in corpus["videos"] if v["id"] in VIDEOS]
    raw = tmp_path_factory.mktemp("synth_raw")
    generate_corpus(raw, seed=0, config=corpus)
    out = tmp_path_factory.mktemp("synth_out")
    stats = run(raw, out, load_config(CONFIG_DIR / "sample.yaml"), workers=1, progress=False)
    return raw, out, stats


def _iou(a, b):
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_cuts_match_ground_truth(synth_run):
    raw, out, _ = synth_run
    for name in VIDEOS:
        gt = json.loads((raw / f"{name}.groundtruth.json").read_text())
        work = [json.loads(p.read_text()) for p in (out / ".work").glob("*.json")]
        cuts = next(w for w in work if w["source_video"] == f"{name}.mp4")["stats"]["notes"]["cuts"]
        precision, recall = cut_precision_recall(cuts, gt["cut_frames"], tolerance=1)
        print(f"{name}: cuts {cuts} vs {gt['cut_frames']}: precision {precision:.2f} recall {recall:.2f}")
        assert precision == 1.0 and recall == 1.0


def test_every_shot_decided_as_expected(synth_run):
    raw, out, _ = synth_run
    table = shot_decisions(out, raw)
    print(table.drop(columns=["video"]).to_string())
    assert len(table) == 10 and "missing" not in set(table.got)
    assert (table.got == table.expected).all()
    rejected = table[table.expected == "reject"]
    assert (rejected.stage == rejected.expected_stage).all()
    assert (rejected.reason == rejected.expected_reason).all()


def test_kept_clips_boxes_pose_and_sync(synth_run):
    raw, out, _ = synth_run
    manifest = read_manifest(out)
    assert set(manifest.split) <= {"train", "val", "test"} and manifest.group.nunique() == 2
    ious, pose_err = [], []
    for _, row in manifest.iterrows():
        stem = row.source_video.rsplit(".", 1)[0]
        gt = np.load(raw / f"{stem}.groundtruth.npz")
        labels = load_labels(out, row)
        with np.load(out / row.labels_path) as z:
            squares = z["crop_squares"]
        f0 = int(round(row.source_start * row.fps))
        frames = np.arange(f0, f0 + row.n_frames)
        side = squares[:, 2:3]
        corner = np.concatenate([squares[:, :2] - side / 2] * 2, axis=1)
        boxes_src = labels["boxes"] * side + corner
        ious.append(_iou(boxes_src, gt["boxes"][frames]))
        pose_err.append(np.abs(labels["pose"] - gt["pose"][frames]))
        assert np.isfinite(labels["landmarks"]).all() and labels["landmarks"].shape == (row.n_frames, 478, 3)
    iou = np.concatenate(ious)
    err = np.concatenate(pose_err).mean(0)
    print(f"face-box IoU mean {iou.mean():.3f} min {iou.min():.3f}; pose MAE yaw/pitch/roll {np.round(err, 2)}")
    assert iou.mean() > 0.7 and np.percentile(iou, 5) > 0.5
    assert err[0] < 6 and err[2] < 6          # yaw, roll within a few degrees
    shifted = manifest[manifest.sync_corrected]
    print(manifest[["clip_id", "sync_offset", "sync_confidence", "sync_trusted", "sync_reason"]].to_string())
    assert len(shifted) >= 1 and (shifted.sync_offset.abs() >= 6).all() and shifted.sync_trusted.all()
    # a clip left uncorrected either measured in sync or was not trusted (never acted on)
    rest = manifest[~manifest.sync_corrected]
    assert ((rest.sync_offset.abs() <= 2) | ~rest.sync_trusted).all()
    # Re-measured on the exported files (the mp4 the trainer reads, its labels' landmarks):
    # every kept clip is now within one frame of zero, corrected ones included.
    from emo.media.audio import load_audio
    from emo.media.lipsync import measure_offset, mouth_features
    for _, row in manifest.iterrows():
        lm = load_labels(out, row)["landmarks"] * row["size"]
        r = measure_offset(mouth_features(lm), load_audio(out / row.clip_path), 16000, row.fps)
        print(f"{row.clip_id}: exported clip measures {r.offset:+d} (manifest {row.sync_offset:+d}, corrected {row.sync_corrected})")
        if row.sync_trusted:
            assert abs(r.offset) <= 1


def test_every_candidate_clip_decided_as_its_shot_expects(synth_run):
    """Per clip, not per shot: every candidate clip of a shot expected to be kept is in the
    manifest (none of them rejected), and every one of a rejected shot is rejected for the
    expected stage and reason."""
    raw, out, _ = synth_run
    manifest, rejects = read_manifest(out), read_rejects(out)
    for name in VIDEOS:
        gt = json.loads((raw / f"{name}.groundtruth.json").read_text())
        for shot in gt["shots"]:
            inside = lambda df: df[(df.source_video == f"{name}.mp4") & (df.source_start >= shot["start_s"] - 0.1)
                                   & (df.source_end <= shot["end_s"] + 0.1)]
            kept, rej = inside(manifest), inside(rejects)
            if shot["expected_decision"] == "keep":
                assert len(kept) >= 1 and len(rej) == 0, (name, shot["id"], rej.to_dict("records"))
                covered = (kept.source_end - kept.source_start).sum()
                assert covered >= (shot["end_s"] - shot["start_s"]) - 0.2, (name, shot["id"])
            else:
                assert len(kept) == 0, (name, shot["id"], list(kept.clip_id))
                assert len(rej) >= 1
                assert set(zip(rej.stage, rej.reason)) == {(shot["expected_stage"], shot["expected_reason"])}, \
                    (name, shot["id"], rej[["stage", "reason"]].to_dict("records"))
