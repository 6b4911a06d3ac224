"""test_mount_rename_notes.py — the note of a rename across the
local/persisted boundary (fs/ops.c: move_note, vfs_finish_move) acts at the
next mount only on the very files the rename was moving.

A note outlives its rename when the mount is killed between the two halves
(the case it exists for), but also when clearing it fails (a full or
failing cache disk: cache_move_note("") returns an error and the mount goes
on). Between that and the next mount the files it names may have changed:
the user rewrote the local source in place while the mount was down, or made
a new file at the exported path, which is then on Drive. The next mount must
not delete those: a note whose files are no longer the ones it names is
dropped, leaving at worst both names, never a lost file.

Each test puts the note the mount would have left into the cache's meta
table (meta.db, key 'move') while the mount is down, with the same fields
fs/ops.c writes, then remounts. Runs as root against the Drive emulator
(tests/conftest.py)."""

import contextlib
import json
import os
import sqlite3
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mountlib import DriveView, can_run, mount_factory, wait_for  # noqa: E402

_ok, _why = can_run()
pytestmark = pytest.mark.skipif(not _ok, reason=_why)


@pytest.fixture
def mounts(emulator, tmp_path):
    with mount_factory(emulator, tmp_path) as make:
        yield make


def sync_ok(m):
    r = m.sync(timeout=120)
    assert r.returncode == 0, "--sync exited %d:\n%s\n%s" % (r.returncode, r.stderr, m.diag())


def db(m):
    return sqlite3.connect(os.path.join(m.cache, "meta.db"))


def set_note(m, note):
    with contextlib.closing(db(m)) as c, c:
        c.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('move', ?)",
                  (json.dumps(note, separators=(",", ":")),))


def get_note(m):
    """The note; only while the mount is down (it holds meta.db locked)."""
    with contextlib.closing(db(m)) as c:
        row = c.execute("SELECT v FROM meta WHERE k = 'move'").fetchone()
    return row[0] if row else ""


def node_ino(path):
    """The cache's node number of a persisted file seen through the mount
    (fs/ops.c shows it with bit 62 set, apart from local inode numbers)."""
    return os.stat(path).st_ino & ~(1 << 62)


def live_on_drive(m, rel):
    return DriveView(m.emu, m.folder).live_files().get(rel, [])


def test_an_export_note_left_behind_does_not_delete_a_new_file_at_its_path(mounts):
    """mv runs/a/train.log train.log; the note of that export outlives it
    (its clear failed); the training script then writes runs/a/train.log
    anew. The next mount must keep the new file on Drive: it is not the one
    the export moved out."""
    m = mounts().start()
    os.makedirs(m.p("runs/a"))
    with open(m.p("runs/a/train.log"), "w") as f:
        f.write("epoch 1\n")
    sync_ok(m)
    old_node = node_ino(m.p("runs/a/train.log"))
    os.rename(m.p("runs/a/train.log"), m.p("train.log"))
    st = os.stat(m.p("train.log"))
    with open(m.p("runs/a/train.log"), "w") as f:
        f.write("epoch 2 (a new run)\n")
    sync_ok(m)
    m.stop()
    # What rename_export noted just before its local rename.
    set_note(m, {"op": "export", "from": "runs/a/train.log",
                 "tmp": ".train.log.vectur-0badc0de", "to": "train.log",
                 "node": old_node, "dev": st.st_dev, "ino": st.st_ino})
    m.start()
    assert open(m.p("runs/a/train.log")).read() == "epoch 2 (a new run)\n"
    assert open(m.p("train.log")).read() == "epoch 1\n"
    sync_ok(m)
    assert len(live_on_drive(m, "runs/a/train.log")) == 1, m.diag()
    m.stop()
    assert get_note(m) == ""


def test_an_export_note_whose_target_is_gone_keeps_the_drive_file(mounts):
    """Killed after the export's note and before its local rename; while
    the mount was down the user removed the local directory the file was
    going to (and the temp file with it). No copy exists but the one on
    Drive: the next mount must not delete it."""
    m = mounts().start()
    os.makedirs(m.p("runs/b"))
    os.makedirs(m.p("out"))
    with open(m.p("runs/b/best.pt"), "wb") as f:
        f.write(b"weights" * 100)
    sync_ok(m)
    node = node_ino(m.p("runs/b/best.pt"))
    m.stop()
    tmp = os.path.join(m.mnt, "out", ".best.pt.vectur-12345678")
    with open(tmp, "wb") as f:
        f.write(b"weights" * 100)
    st = os.stat(tmp)
    set_note(m, {"op": "export", "from": "runs/b/best.pt",
                 "tmp": "out/.best.pt.vectur-12345678", "to": "out/best.pt",
                 "node": node, "dev": st.st_dev, "ino": st.st_ino})
    os.unlink(tmp)
    os.rmdir(os.path.join(m.mnt, "out"))
    m.start()
    assert open(m.p("runs/b/best.pt"), "rb").read() == b"weights" * 100
    sync_ok(m)
    assert len(live_on_drive(m, "runs/b/best.pt")) == 1, m.diag()
    m.stop()
    assert get_note(m) == ""


def import_cut_before_the_local_unlink(mounts):
    """A mount, stopped, as an os.replace(experiments/tmp,
    experiments/work_graph.json) killed after the import's commit and
    before the local unlink leaves it: the content is in the cache
    (work_graph.json has a version closed since seq 0), the local file is
    still there, and the note names it. Returns (mount, local path)."""
    m = mounts().start()
    os.makedirs(m.p("experiments"))
    with open(m.p("experiments/tmp"), "w") as f:
        f.write('{"stages": 1}')
    os.replace(m.p("experiments/tmp"), m.p("experiments/work_graph.json"))
    sync_ok(m)
    m.stop()
    local = os.path.join(m.mnt, "experiments", "tmp")
    with open(local, "w") as f:
        f.write('{"stages": 1}')
    st = os.stat(local)
    set_note(m, {"op": "import", "from": "experiments/tmp",
                 "to": "experiments/work_graph.json", "seq": 0,
                 "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
                 "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns})
    return m, local


def test_an_import_note_does_not_delete_a_local_file_rewritten_since(mounts):
    """os.replace(experiments/tmp, experiments/work_graph.json) killed after
    the import's commit and before the local unlink; while the mount was
    down the script ran again without it and rewrote experiments/tmp in
    place (same inode). The next mount must keep that content."""
    m, local = import_cut_before_the_local_unlink(mounts)
    st = os.stat(local)
    time.sleep(0.05)
    with open(local, "r+") as f:  # rewritten in place: same dev/ino
        f.truncate()
        f.write('{"stages": 2, "rerun": true}')
    assert os.stat(local).st_ino == st.st_ino
    m.start()
    assert open(m.p("experiments/tmp")).read() == '{"stages": 2, "rerun": true}'
    m.stop()
    assert get_note(m) == ""


def test_an_import_note_still_removes_the_local_file_it_names(mounts):
    """The case the note exists for: killed after the import's commit and
    before the local unlink, nothing changed since. The next mount removes
    the local file (one name left)."""
    m, local = import_cut_before_the_local_unlink(mounts)
    m.start()
    assert not os.path.exists(m.p("experiments/tmp"))
    assert not os.path.exists(local)
    assert open(m.p("experiments/work_graph.json")).read() == '{"stages": 1}'


def test_an_export_note_still_finishes_the_export_it_names(mounts):
    """Killed after the export's local rename and before the Drive side
    went: the next mount removes it from Drive (one name left)."""
    m = mounts().start()
    os.makedirs(m.p("runs/c"))
    with open(m.p("runs/c/log.txt"), "w") as f:
        f.write("hello\n")
    sync_ok(m)
    node = node_ino(m.p("runs/c/log.txt"))
    m.stop()
    dst = os.path.join(m.mnt, "log.txt")
    with open(dst, "w") as f:  # the temp file, renamed into place
        f.write("hello\n")
    st = os.stat(dst)
    set_note(m, {"op": "export", "from": "runs/c/log.txt",
                 "tmp": ".log.txt.vectur-0000abcd", "to": "log.txt",
                 "node": node, "dev": st.st_dev, "ino": st.st_ino})
    m.start()
    assert not os.path.exists(m.p("runs/c/log.txt"))
    assert open(m.p("log.txt")).read() == "hello\n"
    sync_ok(m)
    wait_for(lambda: not live_on_drive(m, "runs/c/log.txt"), 30,
             "runs/c/log.txt to leave Drive")
