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
import subprocess
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


# ---- the order of a boundary rename's writes, against a power loss --------------

# An LD_PRELOAD library that logs, in the order the mount makes them, the
# calls a power loss cares about: fsync/fdatasync (by path), renameat and
# unlinkat (by the names given). No strace needed; SQLite's WAL syncs go
# through fdatasync too.
SYNC_LOG_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void say(const char *op, int fd, const char *a, const char *b)
{
	char line[8192], self[64], path[4096] = "?";
	const char *log = getenv("SYNC_LOG");
	ssize_t n;
	int lfd;

	if (!log)
		return;
	if (fd >= 0) {
		snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
		n = readlink(self, path, sizeof(path) - 1);
		path[n < 0 ? 1 : n] = 0;
		a = path;
	}
	n = snprintf(line, sizeof(line), "%s\t%s\t%s\n", op, a, b ? b : "");
	lfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (lfd >= 0) {
		if (write(lfd, line, n) < 0)
			;
		close(lfd);
	}
}

#define NEXT(T, f) ((T)dlsym(RTLD_NEXT, f))

int fsync(int fd)
{
	say("sync", fd, NULL, NULL);
	return NEXT(int (*)(int), "fsync")(fd);
}

int fdatasync(int fd)
{
	say("sync", fd, NULL, NULL);
	return NEXT(int (*)(int), "fdatasync")(fd);
}

int renameat(int od, const char *o, int nd, const char *n)
{
	say("rename", -1, o, n);
	return NEXT(int (*)(int, const char *, int, const char *),
		    "renameat")(od, o, nd, n);
}

int unlinkat(int d, const char *p, int f)
{
	say("unlink", -1, p, NULL);
	return NEXT(int (*)(int, const char *, int), "unlinkat")(d, p, f);
}
"""


@pytest.fixture
def sync_logged(mounts, tmp_path):
    """A mount whose fsyncs, renames and unlinks are logged; returns
    (mount, read_log) where read_log() gives [(op, a, b)] so far."""
    src = tmp_path / "synclog.c"
    lib = tmp_path / "synclog.so"
    log = tmp_path / "sync.log"
    src.write_text(SYNC_LOG_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"],
                   check=True)
    env = {"LD_PRELOAD": str(lib), "SYNC_LOG": str(log)}
    # Under the sanitizer build (make sanitize) ASan wants its runtime
    # first in the library list; ours goes first, which it allows with:
    env["ASAN_OPTIONS"] = ":".join(filter(None, [
        os.environ.get("ASAN_OPTIONS", ""), "verify_asan_link_order=0"]))
    m = mounts(env=env).start()

    def read_log():
        if not log.exists():
            return []
        return [tuple(line.split("\t")) for line in log.read_text().splitlines()]
    return m, read_log


def first(log, pred, after=-1):
    for i, e in enumerate(log):
        if i > after and pred(e):
            return i
    raise AssertionError("not in the log after entry %d:\n%s" % (
        after, "\n".join("\t".join(e) for e in log[after + 1:])))


def is_wal_sync(e):
    return e[0] == "sync" and e[1].endswith("/meta.db-wal")


def test_an_export_is_on_disk_before_its_drive_copy_goes(sync_logged):
    """mv runs/d/model.pt model.pt after a power loss: the renamed file must
    not be empty or torn while the Drive copy is gone. So the temp file is
    fsynced, the note naming it is a durable commit (the WAL synced) before
    the local rename, and the directory is fsynced after it, before the
    Drive copy is removed."""
    m, read_log = sync_logged
    os.makedirs(m.p("runs/d"))
    with open(m.p("runs/d/model.pt"), "wb") as f:
        f.write(b"weights" * 1000)
    sync_ok(m)
    start = len(read_log()) - 1
    os.rename(m.p("runs/d/model.pt"), m.p("model.pt"))
    log = read_log()
    tmp = first(log, lambda e: e[0] == "sync" and ".model.pt.vectur-" in e[1], start)
    note = first(log, is_wal_sync, tmp)
    ren = first(log, lambda e: e[0] == "rename" and e[2] == "model.pt", start)
    assert ren > note, log[start + 1:]
    first(log, lambda e: e[0] == "sync" and e[1] == m.mnt, ren)
    assert open(m.p("model.pt"), "rb").read() == b"weights" * 1000
    wait_for(lambda: not live_on_drive(m, "runs/d/model.pt"), 30,
             "runs/d/model.pt to leave Drive")


def test_an_import_is_on_disk_before_its_local_file_goes(sync_logged):
    """os.replace(experiments/tmp, experiments/work_graph.json): the
    imported version and the note are one commit, which is synced before
    the local file is unlinked; else a power loss that kept the unlink
    could roll the commit back and leave the graph nowhere."""
    m, read_log = sync_logged
    os.makedirs(m.p("experiments"))
    with open(m.p("experiments/tmp"), "w") as f:
        f.write('{"stages": 3}')
    start = len(read_log()) - 1
    os.replace(m.p("experiments/tmp"), m.p("experiments/work_graph.json"))
    log = read_log()
    gone = first(log, lambda e: e[0] == "unlink" and e[1] == "experiments/tmp", start)
    content = first(log, lambda e: e[0] == "sync" and "/data/" in e[1], start)
    note = first(log, is_wal_sync, content)
    assert note < gone, log[start + 1:]
    assert open(m.p("experiments/work_graph.json")).read() == '{"stages": 3}'
