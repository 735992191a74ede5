"""The atomic writer: all or nothing for readers, and files with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
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
        assert atomic._umask_from_proc() == atomic._umask_by_setting() == umask  # Linux, and elsewhere
        assert os.umask(umask) == umask  # reading it left it as it was
    finally:
        os.umask(old)
    file_mode, dir_mode = mode(tmp_path / "plain.bin"), mode(tmp_path / "plain_dir")
    assert file_mode == 0o666 & ~umask and dir_mode == 0o777 & ~umask
    for name in ("bytes.bin", "text.txt", "obj.pkl", "book.xlsx", "remade.hdf5"):
        assert oct(mode(tmp_path / name)) == oct(file_mode), name
    assert oct(mode(tmp_path / "folder")) == oct(dir_mode)


class Boom(Exception):
    pass


def test_each_writer_writes_what_it_is_given(tmp_path):
    import pickle

    record = {"test_acc": 0.75, "history": {"loss": [1.0, 0.5]}, "items": ("spk1", "spk2")}
    atomic.write_pickle(tmp_path / "r.pkl", record)
    assert pickle.loads((tmp_path / "r.pkl").read_bytes()) == record
    atomic.write_text(tmp_path / "t.txt", "R² ± 0.1\n")
    assert (tmp_path / "t.txt").read_bytes() == "R² ± 0.1\n".encode()


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """A writer stopped half-way (Ctrl-C, a full disk, a crash in pickle) leaves the old file whole."""
    target = tmp_path / "results" / "fold.pkl"
    atomic.write_bytes(target, b"old complete record")

    def half(handle):
        handle.write(b"new but on")
        handle.flush()
        raise Boom

    with pytest.raises(Boom):
        atomic.write_with(target, half)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target, suffix=".pkl") as tmp:
            tmp.write_bytes(b"new but on")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old complete record"
    assert sorted(p.name for p in target.parent.iterdir()) == ["fold.pkl"]


@pytest.fixture
def syscalls(monkeypatch):
    """The fsync and rename calls made, in order, as ('fsync', path) and ('replace', src, dst):
    the real calls are made, only observed."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        calls.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def check_durable(calls: list, target: Path) -> None:
    """The data reaches the disk before the rename publishes it, and the rename itself after."""
    (rename,) = [i for i, call in enumerate(calls) if call[0] == "replace" and call[2] == str(target)]
    temporary = calls[rename][1]
    assert ("fsync", temporary) in calls[:rename], calls
    assert ("fsync", str(target.parent)) in calls[rename + 1:], calls


def test_durable_writes_fsync_the_file_then_the_folder_after_the_rename(tmp_path, syscalls):
    target = tmp_path / "a.bin"
    atomic.write_bytes(target, b"x")
    check_durable(syscalls, target)
    syscalls.clear()
    with atomic.atomic_path(tmp_path / "m.hdf5", suffix=".hdf5") as tmp:
        tmp.write_bytes(b"model")
    check_durable(syscalls, tmp_path / "m.hdf5")
    syscalls.clear()
    atomic.write_text(tmp_path / "notes.txt", "x")  # durable unless asked otherwise
    check_durable(syscalls, tmp_path / "notes.txt")
    syscalls.clear()
    atomic.write_text(tmp_path / "marker.json", "{}", durable=False)  # ephemeral: no fsync at all
    assert [call[0] for call in syscalls] == ["replace"]


def test_a_fold_record_is_durable_before_it_counts_as_done(tmp_path, syscalls):
    """The fold file is the completion record: after save_fold returns, a power cut must not lose it
    (or resume would skip a fold whose record is gone, or keep a truncated one)."""
    from xvalkit.store import ExperimentStore

    store = ExperimentStore(tmp_path / "exp", "demo", 1)
    store.save_fold(1, 2, {"lr": 0.1}, "classification", 3, {"test_acc": 0.5})
    check_durable(syscalls, store.fold_path(1, 2))
    syscalls.clear()
    store.save_instance(1, {"folds": {}})
    check_durable(syscalls, store.results_path(1))


WRITER = """
import sys, time
from xvalkit import atomic
def slow(handle):
    handle.write(b"half")
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)
if sys.argv[1] == "file":
    atomic.write_with(sys.argv[2], slow)
else:
    with atomic.atomic_dir(sys.argv[2]) as tmp:
        (tmp / "part").write_bytes(b"half")
        print("writing", flush=True)
        time.sleep(60)
"""


def killed_mid_write(kind: str, target: Path) -> None:
    """A real writer killed by SIGKILL between its temporary's creation and its rename."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n"
    finally:
        proc.kill()
        proc.wait()


def test_temporaries_of_a_killed_writer_are_removed_and_a_live_writers_kept(tmp_path):
    folder = tmp_path / "experiment_1"
    killed_mid_write("file", folder / "results" / "results_demo_exp1_run1.pkl")
    killed_mid_write("dir", folder / "models" / "saved")
    left = sorted(p.relative_to(folder).parent.as_posix() for p in folder.rglob(".*.tmp*"))
    assert left == ["models", "results"], "the kill left the two temporaries behind"
    other = folder / "results" / ".fold.pkl.0123abcd-1-x.tmp"  # another host's: cannot tell if it is done
    other.write_bytes(b"?")
    with atomic.atomic_path(folder / "results" / "live.pkl") as live:  # this process: alive
        live.write_bytes(b"in progress")
        removed = atomic.remove_left_behind(folder)
        assert live.exists()
    assert sorted(p.parent.name for p in removed) == ["models", "results"]
    assert sorted(p.name for p in folder.rglob(".*.tmp*")) == [other.name]
    assert not (folder / "models" / "saved").exists() and not (folder / "results" / "results_demo_exp1_run1.pkl").exists()
