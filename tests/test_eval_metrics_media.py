"""Landmark metrics and the SyncNet/ArcFace face pipelines on a real talking clip (skipped without
../shared). Networks here are random-initialised: only geometry and plumbing are checked."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.realmedia

CLIP = "clips/talk_vox_00086.mp4"     # VoxCeleb2, 25 fps, 224x224, 5.2 s, own speech, in sync


@pytest.fixture(scope="module")
def talking(shared_data, mediapipe_dir):
    from emo.media.audio import load_audio
    from emo.media.video import probe_video, read_frames
    from eval.metrics.base import ClipSample, sample_landmarks

    path = shared_data / CLIP
    frames, fps = read_frames(path), probe_video(path).fps
    sample = ClipSample("talk", fps, frames, frames, frames[0], load_audio(path), 16000)
    track = sample_landmarks(sample, "generated")
    sample.cache[("face_track", "ground_truth")] = track       # same frames: analyse once
    return sample, track


def _shift_audio(audio, frames, fps, rate=16000):
    """Audio late by `frames` video frames (> 0) or early (< 0), same length."""
    hop = int(round(rate / fps * abs(frames)))
    pad = np.zeros(hop, np.float32)
    return np.concatenate([pad, audio])[:len(audio)] if frames > 0 else np.concatenate([audio[hop:], pad])


def test_landmark_sync_recovers_a_known_audio_shift(talking):
    from eval.metrics.lm_sync import LandmarkSync

    sample, _ = talking
    metric = LandmarkSync()
    base = metric.measure(sample)
    assert abs(base.offset) <= 1 and base.confidence > 0.2          # the clip is in sync
    original = sample.audio
    try:
        for late in (4, -5):
            sample.audio = _shift_audio(original, late, sample.fps)
            shifted = metric.measure(sample)
            assert shifted.offset - base.offset == late
            assert metric.score_clip(sample)["lm_sync_offset_abs"] == abs(shifted.offset)
    finally:
        sample.audio = original


def test_landmark_figures_measure_known_differences(talking):
    """The generated video differs from the ground truth in known ways, each measured with its own
    MediaPipe analysis: a still frame (no head motion, no blinks) must score the ground truth's own
    head-pose range, head speed and blink rate as its errors; a 3-frame lag must move the mouth."""
    from eval.metrics import LMD, BlinkRate, HeadPose
    from eval.metrics.base import ClipSample, FaceTrack, finite_mean, sample_landmarks
    from eval.metrics.blink import blink_rate
    from eval.metrics.head_pose import head_speeds, pose_range

    sample, track = talking
    assert track.found.mean() > 0.95
    still = ClipSample("still", sample.fps, np.repeat(sample.ground_truth[:1], sample.n_frames, 0),
                       sample.ground_truth, sample.reference, sample.audio)
    still.cache[("face_track", "ground_truth")] = track
    still_track = sample_landmarks(still, "generated")            # MediaPipe on the still frames
    assert still_track.found.all()
    assert np.nanmax(np.ptp(still_track.pose, axis=0)) < 1.0     # the still video does not move (degrees)
    pose = HeadPose().score_clip(still)
    assert pose["head_pose_range_error"] == pytest.approx(finite_mean(pose_range(track.pose)), abs=1.0)
    assert pose["head_pose_range_error"] > 2.0                     # the clip's head does move
    assert pose["head_speed_w1"] == pytest.approx(float(np.mean(head_speeds(track.rotations))), abs=0.1)
    gt_blinks = blink_rate(track.blendshapes, sample.fps)
    assert BlinkRate().score_clip(still) == pytest.approx(gt_blinks)
    assert LMD().score_clip(still) > 0.01
    # A generated video that lags the ground truth by 3 frames has wrong mouth shapes per frame.
    lag = 3
    gen = np.concatenate([np.repeat(sample.ground_truth[:1], lag, 0), sample.ground_truth[:-lag]])
    lagged = ClipSample("lag", sample.fps, gen, sample.ground_truth, sample.reference, sample.audio)
    lagged.cache[("face_track", "ground_truth")] = track
    shifted = {k: np.concatenate([np.repeat(getattr(track, k)[:1], lag, 0), getattr(track, k)[:-lag]])
               for k in ("landmarks", "blendshapes", "pose", "rotations", "boxes")}
    lagged.cache[("face_track", "generated")] = FaceTrack(**shifted)
    assert LMD().score_clip(lagged) > 0.005
    assert HeadPose().score_clip(lagged)["head_pose_range_error"] < 1.0    # same poses, only later


def test_syncnet_face_crops_hold_the_face_and_windows_fit_the_audio(talking):
    from emo.media.face import FaceAnalyser
    from emo.media.syncnet import face_crops, mfcc_16k, resample_indices, syncnet_embeddings, sync_scores
    from eval.networks import SyncNet

    sample, track = talking
    idx = resample_indices(40, sample.fps)
    crops = face_crops(sample.generated[idx], track.boxes[idx])
    assert crops.shape == (len(idx), 224, 224, 3)
    with FaceAnalyser(max_faces=1, video=False) as analyser:
        faces = analyser.analyse(np.ascontiguousarray(crops[10][..., ::-1]).astype(np.uint8))  # BGR -> RGB
    assert faces, "no face in the SyncNet crop"
    cx = (faces[0].box[0] + faces[0].box[2]) / 2
    assert 70 < cx < 154                                     # horizontally centred in the 224 crop
    audio = sample.audio[:16000 * 40 // 25 + 640]                      # 41 frames of audio
    mfcc = mfcc_16k(audio, 16000)
    assert mfcc.shape[0] == 13 and abs(mfcc.shape[1] - 4 * 41) <= 2     # 100 MFCC frames per second
    torch.manual_seed(0)
    v, a = syncnet_embeddings(SyncNet(), crops, mfcc, len(audio))
    assert v.shape == a.shape == (min(len(idx), 41) - 5, 1024)          # syncnet_python's window count
    scores = sync_scores(v, a)
    assert -15 <= scores.offset <= 15 and np.isfinite(scores.min_dist)


def test_arcface_alignment_puts_the_face_on_the_template(talking):
    from emo.media.face import FaceAnalyser
    from eval.metrics.fsim import ARCFACE_TEMPLATE, align_face, five_points

    sample, track = talking
    face = align_face(sample.generated[0], track.landmarks[0])
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    big = np.kron(face, np.ones((3, 3, 1), np.uint8))               # MediaPipe prefers larger faces
    with FaceAnalyser(max_faces=1, video=False) as analyser:
        faces = analyser.analyse(big)
    assert faces
    points = five_points(faces[0].landmarks) / 3.0
    # A least-squares similarity cannot undo head yaw (the nose sits off-centre), so a few pixels
    # of residual remain; a flipped or mis-scaled alignment would be off by tens of pixels.
    err = np.abs(points - ARCFACE_TEMPLATE)
    assert err.mean() < 3.5 and err.max() < 10.0
