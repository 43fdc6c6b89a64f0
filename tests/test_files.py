"""Files are written whole or not at all (data.common.write_atomic / atomic_path, used for every file medim writes)."""
import os

import pytest

from data.common import atomic_path, write_atomic


def test_write_atomic_replaces_the_file_in_one_step_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, lambda f: f.write(b"old"))
    with pytest.raises(ZeroDivisionError):
        write_atomic(path, lambda f: (f.write(b"half a new file"), 1 / 0))
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["metrics.json"]   # no temporary file left
    write_atomic(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["metrics.json"]


def test_atomic_path_names_a_temporary_file_beside_the_target_and_renames_it_on_success(tmp_path):
    path = tmp_path / "images.npy"
    with atomic_path(path) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp != str(path)
        open(tmp, "wb").write(b"x")
        assert not path.exists()                                           # nothing visible until it is complete
    assert path.read_bytes() == b"x" and os.listdir(tmp_path) == ["images.npy"]
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "other.npy") as tmp:
        open(tmp, "wb").write(b"y")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["images.npy"]
