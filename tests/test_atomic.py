"""The atomic writer: all or nothing for readers, and files with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from xvalkit import atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_written_files_and_folders_get_the_mode_open_and_mkdir_give(tmp_path, umask):
    """tempfile makes files 0600 and folders 0700: in a lab sharing a results folder nobody but the
    owner could open the workbook. Each kind of atomic write is compared with a plain open()/mkdir()."""
    old = os.umask(umask)
    try:
        assert atomic.current_umask() == umask
        with open(tmp_path / "plain.bin", "wb"):
            pass
        (tmp_path / "plain_dir").mkdir()
        atomic.write_bytes(tmp_path / "bytes.bin", b"x")
        atomic.write_text(tmp_path / "text.txt", "x", durable=False)
        atomic.write_pickle(tmp_path / "obj.pkl", {"a": 1})
        with atomic.atomic_path(tmp_path / "book.xlsx", suffix=".xlsx") as tmp:
            tmp.write_bytes(b"y")
        with atomic.atomic_path(tmp_path / "remade.hdf5", suffix=".hdf5") as tmp:
            tmp.unlink()  # a writer that creates its file anew (under the process's umask)
            tmp.write_bytes(b"z")
        with atomic.atomic_dir(tmp_path / "folder") as folder:
            (folder / "inside").write_bytes(b"")
    finally:
        os.umask(old)
    file_mode, dir_mode = mode(tmp_path / "plain.bin"), mode(tmp_path / "plain_dir")
    assert file_mode == 0o666 & ~umask and dir_mode == 0o777 & ~umask
    for name in ("bytes.bin", "text.txt", "obj.pkl", "book.xlsx", "remade.hdf5"):
        assert oct(mode(tmp_path / name)) == oct(file_mode), name
    assert oct(mode(tmp_path / "folder")) == oct(dir_mode)
