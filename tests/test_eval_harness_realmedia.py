"""The harness with the real MediaPipe-based metrics on a real talking-face clip (../shared):
the audio-shifted baseline must move the signed landmark sync offset by exactly +shift (audio
late), the ground truth must have zero landmark distance, and MediaPipe must run once for frames
shared by baselines (counted, not timed)."""
import numpy as np
import pandas as pd
import pytest

from emo.manifest import LABEL_KEYS, save_labels, write_manifest
from emo.media import load_audio, read_frames, write_video

pytestmark = [pytest.mark.slow, pytest.mark.realmedia]


@pytest.fixture(scope="module")
def real_dataset(shared_data, mediapipe_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("realds")
    src = shared_data / "clips" / "talk_vox_741400163.mp4"   # 25 fps, 224x224, own speech
    frames, audio = read_frames(src, end=4.0), load_audio(src, end=4.0)
    cid = "vox741400163_0"
    write_video(root / "clips" / f"{cid}.mp4", frames, 25.0, audio=audio)
    t = len(frames)
    save_labels(root / "clips" / f"{cid}.npz",
                {k: np.zeros(tuple(t if d == "T" else d for d in s), np.float32) for k, s in LABEL_KEYS.items()})
    row = dict(clip_id=cid, clip_path=f"clips/{cid}.mp4", labels_path=f"clips/{cid}.npz", source_video="v.mp4",
               source_start=0.0, source_end=t / 25, fps=25.0, n_frames=t, size=224, split="test", group="g",
               speaker="A", speech_ratio=1.0, sync_offset=0, sync_confidence=1.0, sync_corrected=False,
               face_size=120.0, face_frac=0.5, yaw_range=5.0, yaw_abs_max=3.0, mean_speed=0.2, sharpness=100.0,
               face_box=np.array([0.2, 0.2, 0.8, 0.8], np.float32))
    write_manifest(pd.DataFrame([row]), root)
    return root


def test_real_landmark_metrics_see_the_baselines(real_dataset, tmp_path, monkeypatch):
    import eval.metrics.base as base
    from eval.baselines import shift_audio
    from eval.harness import ScoreConfig, load_heldout, score
    from eval.metrics import LMD, LandmarkSync
    from eval.metrics.base import ClipSample
    from eval.results import read_results
    from eval.scoring import BootstrapConfig

    analysed = []
    real_analyse = base.analyse_frames

    def counting(frames, fps, model_dir=None):
        analysed.append(len(frames))
        return real_analyse(frames, fps, model_dir)
    monkeypatch.setattr(base, "analyse_frames", counting)
    written = score(real_dataset, [], tmp_path, metrics=[LandmarkSync(), LMD()],
                    cfg=ScoreConfig(shift_frames=5, write_baseline_videos=False,
                                    bootstrap=BootstrapConfig(n_bootstrap=50)))
    docs = {p.stem: read_results(p) for p in written}
    gt = docs["baseline_ground_truth"]["metrics"]
    shifted = docs["baseline_audio_shifted_+5"]["metrics"]
    still = docs["baseline_reference_repeated"]["metrics"]
    assert gt["lmd"]["value"] == 0.0 and still["lmd"]["value"] > 0.005
    assert gt["lm_sync_confidence"]["value"] > still["lm_sync_confidence"]["value"]
    # MediaPipe ran once for the ground-truth frames (shared by the ground-truth and shifted
    # baselines) and once for the still frames: frame analyses are shared, not repeated.
    assert len(analysed) == 2

    # The sign: the shifted baseline delays the audio (late), so the signed offset moves by +5.
    clip = load_heldout(real_dataset)[0]
    frames, audio = read_frames(clip.video), load_audio(clip.video)
    metric = LandmarkSync()
    sample = ClipSample(clip.clip_id, clip.fps, frames, frames, frames[0], audio)
    in_sync = metric.measure(sample)
    sample.audio = shift_audio(audio, 16000, clip.fps, 5)
    late = metric.measure(sample)
    assert late.offset - in_sync.offset == 5
    assert shifted["lm_sync_offset_abs"]["value"] == abs(late.offset)
    assert gt["lm_sync_offset_abs"]["value"] == abs(in_sync.offset)
