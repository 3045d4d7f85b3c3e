"""Downloads of third-party model files are checked BEFORE they are moved into place: a corrupt
download (served here by a monkeypatched urllib.request.urlopen) never appears at its target,
not even for a moment, and leaves no temporary file. Covers the weights registry (emo.weights,
used by eval and dataprep) and MediaPipe's model files (emo.media.face)."""
import dataclasses
import hashlib
import io
import os

import pytest

import emo.fileio
import emo.weights as registry
from emo.media import face


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(monkeypatch, payload: bytes):
    urls = []

    def urlopen(url, timeout=None):
        urls.append(url)
        return _Response(payload)
    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    return urls


def _watch_target_during_check(monkeypatch, module, target):
    """Record whether `target` exists whenever `module` hashes a file (i.e. while checking)."""
    seen = []
    real = emo.fileio.sha256_file

    def sha256_file(path, *a, **k):
        seen.append(target.exists())
        return real(path, *a, **k)
    monkeypatch.setattr(module, "sha256_file", sha256_file)
    return seen


def test_registry_refuses_a_corrupt_download_before_it_lands(tmp_path, monkeypatch):
    good = b"the official bytes"
    spec = dataclasses.replace(registry.REGISTRY["syncnet"], sha256=hashlib.sha256(good).hexdigest())
    monkeypatch.setitem(registry.REGISTRY, "syncnet", spec)
    target = tmp_path / "syncnet_v2.model"
    seen = _watch_target_during_check(monkeypatch, registry, target)

    urls = _serve(monkeypatch, b"corrupt bytes")
    result = registry.fetch(["syncnet"], tmp_path, log=lambda *_: None)
    assert urls == [spec.url]
    assert result["syncnet"].startswith("failed: ChecksumMismatch") and "expected" in result["syncnet"]
    assert seen == [False]                       # checked while the target did not exist
    assert os.listdir(tmp_path) == []            # nothing landed, no temporary file left

    _serve(monkeypatch, good)
    assert registry.fetch(["syncnet"], tmp_path, log=lambda *_: None) == {"syncnet": "fetched"}
    assert target.read_bytes() == good and seen == [False, False]
    assert os.listdir(tmp_path) == ["syncnet_v2.model"]


def test_registry_entries_for_the_new_routes():
    assert registry.REGISTRY["s3fd"].files == ("sfd_face.pth",) and registry.REGISTRY["s3fd"].url
    d3d = registry.REGISTRY["deep3dfacerecon"]
    assert d3d.url is None and "drive.google.com" in d3d.source    # manual download, instructions given
    assert "epoch_20.pth" in registry.how_to_get("deep3dfacerecon", "/nowhere")
    assert len(registry.REGISTRY["lm3d_std"].sha256) == 64


def test_weights_hashes_names_every_requested_entry(tmp_path):
    (tmp_path / "syncnet_v2.model").write_bytes(b"x")
    hashes = registry.weights_hashes(["syncnet", "s3fd", "not_registered"], tmp_path)
    assert hashes == {"syncnet": hashlib.sha256(b"x").hexdigest(), "s3fd": None, "not_registered": None}


def test_mediapipe_fetch_refuses_a_file_whose_hash_does_not_match(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_MEDIAPIPE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(face.Path, "home", staticmethod(lambda: tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    dest = tmp_path / "mp"
    target = dest / face.MEDIAPIPE_MODELS["face_landmarker"]["files"][0]
    seen = _watch_target_during_check(monkeypatch, face, target)
    _serve(monkeypatch, b"not the landmarker")
    with pytest.raises(face.ModelChecksumMismatch, match="refused, nothing written"):
        face.fetch_mediapipe_models(dest)
    assert seen == [False]
    assert not dest.exists() or os.listdir(dest) == []
