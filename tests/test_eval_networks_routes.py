"""The networks of the published routes: S3FD (syncnet_python's face boxes for Sync-C/D) and
Deep3DFaceRecon's regressor (E-FID as EMO defines it), with their official key names, loaded
through the registry from random weights saved under those names; S3FD's post-processing and
Deep3DFaceRecon's alignment checked on inputs with known answers; the metrics built on them."""
import dataclasses

import numpy as np
import pytest
import torch

from eval import weights as registry
from eval.metrics.base import ClipSample
from eval.networks import ReconNet, S3FDNet, load_network
from eval.networks.deep3d import COEFF_SPLITS, MEDIAPIPE_FIVE, align_face, align_transform, pos_fit, standard_five_3d
from eval.networks.s3fd import decode, nms, prior_boxes, select_detections

S3FD_KEYS = {   # joonson/syncnet_python detectors/s3fd/nets.py
    "vgg.0.weight": (64, 3, 3, 3), "vgg.14.weight": (256, 256, 3, 3), "vgg.17.weight": (512, 256, 3, 3),
    "vgg.31.weight": (1024, 512, 3, 3), "vgg.33.weight": (1024, 1024, 1, 1), "L2Norm3_3.weight": (256,),
    "L2Norm4_3.weight": (512,), "L2Norm5_3.weight": (512,), "extras.1.weight": (512, 256, 3, 3),
    "extras.3.weight": (256, 128, 3, 3), "loc.0.weight": (4, 256, 3, 3), "loc.3.weight": (4, 1024, 3, 3),
    "conf.0.weight": (4, 256, 3, 3), "conf.5.weight": (2, 256, 3, 3)}
RECON_KEYS = {  # Deep3DFaceRecon_pytorch models/networks.py ReconNetWrapper('resnet50')
    "backbone.conv1.weight": (64, 3, 7, 7), "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "backbone.layer2.3.conv2.weight": (128, 128, 3, 3), "backbone.layer3.5.bn3.running_var": (1024,),
    "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1), "final_layers.0.weight": (80, 2048, 1, 1),
    "final_layers.1.bias": (64,), "final_layers.4.weight": (27, 2048, 1, 1), "final_layers.6.weight": (1, 2048, 1, 1)}


@pytest.mark.parametrize("factory, keys", [(S3FDNet, S3FD_KEYS), (ReconNet, RECON_KEYS)])
def test_official_key_names_and_shapes(factory, keys):
    state = factory().state_dict()
    for key, shape in keys.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("fc.") or ".fc." in k for k in state)      # no classifier in either


@pytest.fixture
def no_checksums(monkeypatch):
    for name, spec in list(registry.REGISTRY.items()):
        monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(spec, sha256=None, sha256_prefix=None))
    load_network.cache_clear()
    yield
    load_network.cache_clear()


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.2 + 0.9 if t.ndim <= 1 else torch.randn(t.shape, generator=g) * 0.05)
    return module.eval()


def test_s3fd_and_recon_round_trip_through_the_registry(tmp_path, no_checksums):
    s3fd = _randomise(S3FDNet())
    torch.save(s3fd.state_dict(), tmp_path / "sfd_face.pth")
    recon = _randomise(ReconNet())
    # epoch_20.pth: the regressor under "net_recon", beside the optimizer state and the epoch
    torch.save({"net_recon": recon.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 20},
               tmp_path / "epoch_20.pth")
    got_s3fd, got_recon = load_network("s3fd", str(tmp_path)), load_network("deep3dfacerecon", str(tmp_path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(s3fd(x)[1], got_s3fd(x)[1])
        y = torch.rand(2, 3, 224, 224)
        coeffs = got_recon(y)
        assert coeffs.shape == (2, sum(COEFF_SPLITS.values())) == (2, 257)
        assert torch.allclose(coeffs[:, 80:144], got_recon.expression(y), atol=1e-5)
        assert torch.allclose(recon(y), coeffs, atol=1e-5)


def test_prior_boxes_follow_strides_and_sizes():
    priors = prior_boxes((64, 128), [(16, 32), (8, 16)])
    assert priors.shape == (16 * 32 + 8 * 16, 4)
    # first map, cell (row 1, col 2): centre ((2 + .5) * 4 / 128, (1 + .5) * 4 / 64), size 16 px
    assert np.allclose(priors[1 * 32 + 2], [2.5 * 4 / 128, 1.5 * 4 / 64, 16 / 128, 16 / 64])
    # second map, first cell: stride 8, size 32
    assert np.allclose(priors[16 * 32], [0.5 * 8 / 128, 0.5 * 8 / 64, 32 / 128, 32 / 64])


def test_decode_recovers_an_encoded_box():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]])
    box = np.array([0.42, 0.35, 0.66, 0.71])                 # x0 y0 x1 y1
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    loc = np.array([[(cx - 0.5) / (0.1 * 0.2), (cy - 0.5) / (0.1 * 0.4), np.log(w / 0.2) / 0.2, np.log(h / 0.4) / 0.2]])
    assert np.allclose(decode(loc, prior), box[None])
    assert np.allclose(decode(np.zeros((1, 4)), prior), [[0.4, 0.3, 0.6, 0.7]])


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    # IoU(0, 1) = 81 / 119 = 0.68, IoU(1, 3) = 72 / 118 = 0.61, IoU(0, 3) = 0.9: all suppressed by box 1
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.65).tolist() == [1, 2, 3]     # 0.61 < 0.65 keeps box 3, 0.68 drops box 0
    assert nms(boxes, scores, 0.3, top_k=2).tolist() == [1]   # only the two best are considered


def test_detection_selection_thresholds_and_scales_to_the_frame():
    priors = np.array([[0.25, 0.25, 0.2, 0.2], [0.26, 0.25, 0.2, 0.2], [0.75, 0.75, 0.3, 0.3], [0.5, 0.5, 0.1, 0.1]])
    loc = np.zeros((4, 4))
    prob = np.array([0.95, 0.93, 0.97, 0.5])
    dets = select_detections(loc, prob, priors, frame_wh=(200, 100), conf_th=0.9)
    # prior 1 overlaps prior 0 (suppressed), prior 3 is under the threshold
    assert dets.shape == (2, 5) and np.allclose(dets[:, 4], [0.97, 0.95])
    assert np.allclose(dets[0, :4], [0.6 * 200, 0.6 * 100, 0.9 * 200, 0.9 * 100])
    assert select_detections(loc, prob * 0.5, priors, (200, 100)).shape == (0, 5)


def test_track_filters_of_the_syncnet_python_route():
    from eval.metrics.sync import face_tracks
    box = np.array([[10, 10, 130, 130, 0.99]])
    dets = [box + [i, 0, i, 0, 0] for i in range(120)]
    dets[50] = np.zeros((0, 5))                       # one missed detection: interpolated
    (start, boxes), = face_tracks(dets, min_track=100, min_face_size=100)
    assert start == 0 and len(boxes) == 120 and boxes[50, 0] == pytest.approx(60)
    assert face_tracks(dets[:90], min_track=100, min_face_size=100) == []          # too short
    small = [d * [1, 1, 0.5, 0.5, 1] for d in dets]                                # 55-65 px boxes
    assert face_tracks(small, min_track=100, min_face_size=100) == []
    jump = dets[:60] + [d + [300, 0, 300, 0, 0] for d in dets[60:]]                # a second face: new track
    assert [len(b) for _, b in face_tracks(jump, min_track=50, min_face_size=100)] == [60, 60]


def _rotation(yaw, pitch, roll):
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


LM3D_FIVE = np.array([[-0.31, 0.29, 0.0], [0.31, 0.29, 0.0], [0.0, 0.0, 0.42], [-0.25, -0.35, 0.1], [0.25, -0.35, 0.1]])


def test_pos_fit_recovers_a_known_projection_and_matches_a_closed_form():
    # exact case: a scaled orthographic projection of the 3D points
    r = _rotation(0.2, -0.1, 0.05)
    s, t = 180.0, np.array([130.0, 95.0])
    pts = s * (LM3D_FIVE @ r.T)[:, :2] + t
    got_t, got_s = pos_fit(pts, LM3D_FIVE)
    assert np.allclose(got_t, t) and got_s == pytest.approx(s, rel=1e-6)
    # noisy case: the same least squares solved another way (normal equations on centred data)
    rng = np.random.default_rng(0)
    noisy = pts + rng.normal(0, 3.0, pts.shape)
    xc, yc = LM3D_FIVE - LM3D_FIVE.mean(0), noisy - noisy.mean(0)
    a = np.linalg.solve(xc.T @ xc, xc.T @ yc).T               # 2 x 3
    b = noisy.mean(0) - a @ LM3D_FIVE.mean(0)
    want_s = (np.linalg.norm(a[0]) + np.linalg.norm(a[1])) / 2
    got_t, got_s = pos_fit(noisy, LM3D_FIVE)
    assert np.allclose(got_t, b, atol=1e-8) and got_s == pytest.approx(want_s, rel=1e-9)


def test_alignment_puts_the_face_where_deep3dfacerecon_expects_it():
    """A frame with the five landmarks drawn as bright dots: after alignment each dot must sit where
    the standard 3D landmark projects in the 224 x 224 input (scale 102, centred, y down)."""
    h, w = 300, 260
    r = _rotation(0.0, 0.0, 0.0)
    s, t_up = 150.0, np.array([120.0, 160.0])                    # projection in y-up coordinates
    pts_up = s * (LM3D_FIVE @ r.T)[:, :2] + t_up
    pts = np.stack([pts_up[:, 0], h - 1 - pts_up[:, 1]], 1)        # image coordinates (y down)
    frame = np.zeros((h, w, 3), np.uint8)
    for x, y in pts:
        frame[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 255
    scale, tx, ty = align_transform(pts, h, LM3D_FIVE)
    assert scale == pytest.approx(102.0 / s) and (tx, ty) == pytest.approx(tuple(t_up))
    out = align_face(frame, pts, LM3D_FIVE)
    assert out.shape == (224, 224, 3)
    want = np.stack([112 + 102 * LM3D_FIVE[:, 0], 112 - 102 * LM3D_FIVE[:, 1]], 1)   # centred, y down
    from scipy import ndimage
    for (wx, wy) in want:
        y0, x0 = int(round(wy)), int(round(wx))
        patch = out[y0 - 6:y0 + 7, x0 - 6:x0 + 7, 0].astype(float)
        cy, cx = ndimage.center_of_mass(patch)
        # within 2 px: align_img truncates the resized size and the crop origin to integers (<= 1 px each)
        assert patch.max() > 100 and abs(cy - 6) < 2.0 and abs(cx - 6) < 2.0


def test_five_points_from_mediapipe_and_from_the_standard_68():
    from eval.networks.deep3d import five_points
    lm = np.zeros((478, 3))
    for k, idx in enumerate(MEDIAPIPE_FIVE):
        for j, i in enumerate(idx):
            lm[i, :2] = (10 * k + 2 * j, 5 * k)
    got = five_points(lm)
    assert np.allclose(got[0], [1, 0]) and np.allclose(got[1], [11, 5]) and np.allclose(got[2], [20, 10])
    lm68 = np.arange(68 * 3, dtype=float).reshape(68, 3)
    five = standard_five_3d(lm68)
    assert np.allclose(five[0], lm68[[36, 39]].mean(0)) and np.allclose(five[2], lm68[30])
    assert np.allclose(five[4], lm68[54])


def test_e_fid_3dmm_with_random_weights(tmp_path, no_checksums, monkeypatch):
    """The metric end to end on a sample (stand-in face tracks), with random regressor weights: it
    must compare the 64 expression coefficients of the frames with a face, per side."""
    from scipy.io import savemat
    import eval.metrics.base as base
    from eval.metrics import EFID3DMM
    from eval_harness_helpers import fake_face_track
    monkeypatch.setattr(base, "mediapipe_problem", lambda: "")

    def track(frames, fps, model_dir=None):
        tr = fake_face_track(frames, fps)
        for i in np.flatnonzero(tr.found):        # put the five points on a plausible face
            for k, idx in enumerate(MEDIAPIPE_FIVE):
                tr.landmarks[i, list(idx), :2] = [[20 + 8 * (k % 2) + 4 * (k // 3), 20 + 6 * (k // 2)]]
        return tr
    monkeypatch.setattr(base, "analyse_frames", track)
    torch.save({"net_recon": _randomise(ReconNet(), seed=1).state_dict()}, tmp_path / "epoch_20.pth")
    lm68 = np.random.default_rng(0).normal(0, 0.3, (68, 3))
    savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": lm68})
    metric = EFID3DMM(weights_dir=str(tmp_path), frame_stride=2)
    assert metric.status() == "ok"
    rng = np.random.default_rng(0)
    gt = rng.integers(40, 255, (6, 48, 48, 3), dtype=np.uint8)
    gen = gt.copy()
    gen[3:] = 0                                   # no face in the last three frames
    sample = ClipSample("c", 25.0, gen, gt, gt[0], np.zeros(100, np.float32))
    g, r = metric.features(sample)
    assert g.shape == (2, 64) and r.shape == (3, 64)   # stride 2 over frames with a face: 0, 2 | 0, 2, 4
    assert np.allclose(g, r[:2])                  # same frames, same coefficients
    assert EFID3DMM(weights_dir=str(tmp_path / "none")).status().startswith("unavailable: epoch_20.pth missing")


def test_fvd_routes_sample_clips_as_published():
    from eval.metrics.fvd import FVD, stylegan_v_clip
    frames = np.arange(40)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    gen_clip = stylegan_v_clip(frames, None)
    assert gen_clip.shape == (1, 16, 2, 2, 3) and gen_clip[0, :, 0, 0, 0].tolist() == list(range(16))
    real = stylegan_v_clip(frames, "clip07")
    start = int(real[0, 0, 0, 0, 0])
    assert real[0, :, 0, 0, 0].tolist() == list(range(start, start + 16)) and 0 <= start <= 24
    assert np.array_equal(stylegan_v_clip(frames, "clip07"), real)                       # reproducible
    assert stylegan_v_clip(frames[:15], "x").shape[0] == 0                              # short: discarded
    sample = ClipSample("clip07", 25.0, frames, frames, frames[0], np.zeros(10, np.float32))
    g, r = FVD(route="stylegan_v").clips(sample)
    assert len(g) == len(r) == 1
    g, r = FVD(route="all_segments").clips(sample)
    assert len(g) == len(r) == 2
    with pytest.raises(ValueError, match="route"):
        FVD(route="other")
