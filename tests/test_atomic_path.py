"""emo.fileio.atomic_path: a writer that fails leaves the old file and no temporary behind."""
import numpy as np
import pytest

from emo.fileio import atomic_path, atomic_write
from emo.manifest import save_labels, LABEL_KEYS


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "table.parquet"
    atomic_write(target, "old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".parquet" and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.parquet"]


def test_labels_writer_keeps_the_npz_name(tmp_path):
    path = save_labels(tmp_path / "c.npz", {k: np.zeros(3) for k in LABEL_KEYS})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"] and path.exists()
